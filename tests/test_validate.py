"""Validating landed days: good data passes in both namings; each class of bad data fails and writes nothing."""

from __future__ import annotations

import gzip
import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from jobs.adapters import lake
from jobs.adapters.audit import audited_dates
from jobs.adapters.expectations import data_docs_site, day_page, read_latest_report
from jobs.adapters.landing import data_files, fingerprint, write_day
from jobs.config import Policy
from jobs.definitions import TABLES
from jobs.errors import DataValidationError, LakeStateError, LandingChangedError, PermanentError, UnreadableFileError
from jobs.ops.split import land_days, read_export
from jobs.steps.ingest import ingest_day
from jobs.steps.validate import validate_day
from tests.conftest import settings_for

DAY = date(2011, 3, 1)  # a Tuesday
NAMINGS = {
    "online_retail": [
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ],
    "online_retail_ii": [
        "Invoice",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "Price",
        "Customer ID",
        "Country",
    ],
}
CANONICAL = ["invoice", "stock_code", "description", "quantity", "invoice_date", "price", "customer_id", "country"]
# Ten valid rows of DAY: every configured timestamp format, a cancellation, a charge, a zero price,
# a float-looking customer id, quotes and commas, the first and the last second of the day, 20 % without customer.
GOOD_ROWS = [
    [
        "540001",
        "85123A",
        "WHITE HANGING HEART T-LIGHT HOLDER",
        "6",
        "2011-03-01 08:26:00",
        "2.55",
        "17850",
        "United Kingdom",
    ],
    ["540001", "71053", "WHITE METAL LANTERN", "6", "2011-03-01 08:26:00", "3.39", "17850", "United Kingdom"],
    ["540002", "22423", "REGENCY CAKESTAND 3 TIER", "2", "2011-03-01 09:00", "12.75", "13085.0", "United Kingdom"],
    ["C540003", "22423", "REGENCY CAKESTAND 3 TIER", "-1", "3/1/2011 10:15", "12.75", "13085", "United Kingdom"],
    ["540004", "POST", "POSTAGE", "1", "2011-03-01 11:00:00", "18", "12662", "Germany"],
    [
        "540005",
        "21730",
        'GLASS STAR FROSTED, T-LIGHT "HOLDER"',
        "12",
        "2011-03-01 12:30:00",
        "4.25",
        "",
        "United Kingdom",
    ],
    ["540006", "84879", "", "8", "2011-03-01 13:45:00", "0.00", "", "United Kingdom"],
    ["540007", "22745", "POPPY'S PLAYHOUSE BEDROOM", "24", "2011-03-01 15:00:00", "2.1", "14911", "EIRE"],
    ["540008", "21754", "HOME BUILDING BLOCK WORD", "3", "2011-03-01 23:59:59", "5.95", "15311", "United Kingdom"],
    ["540009", "M", "Manual", "1", "2011-03-01 00:00:00", "1.001", "15311", "United Kingdom"],
]
ADJUSTMENT = ["A563186", "B", "Adjust bad debt", "1", "2011-03-01 14:51:00", "-11062.06", "", "United Kingdom"]


def good_rows() -> pd.DataFrame:
    return pd.DataFrame(GOOD_ROWS, columns=CANONICAL)


def named(rows: pd.DataFrame, naming: str = "online_retail") -> pd.DataFrame:
    return rows.rename(columns=dict(zip(CANONICAL, NAMINGS[naming], strict=True)))


def land(settings, rows: pd.DataFrame, day: date = DAY) -> Path:
    return write_day(settings.path("landing_dir"), day, rows, settings.landing.marker, settings.landing.format)


def assert_nothing_downstream(spark, settings, day: date = DAY) -> None:
    """No Delta table, no MLflow run, and the ingest step refuses the day."""
    for name in TABLES:
        assert lake.current_version(settings.table_path(name)) is None, name
    db = settings.path("mlflow_dir") / "mlflow.db"
    if db.exists():
        from mlflow.tracking import MlflowClient

        client = MlflowClient(settings.tracking_uri)
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    with pytest.raises(LakeStateError, match="no passing validation"):
        ingest_day(day, settings, spark)


# --- good days ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("naming", "extra"),
    [("online_retail", []), ("online_retail_ii", []), ("online_retail_ii", [ADJUSTMENT])],
    ids=["online-retail", "online-retail-ii", "bad-debt-adjustment"],
)
def test_good_day_passes(spark, settings, naming: str, extra: list[list[str]]) -> None:
    rows = pd.concat([good_rows(), pd.DataFrame(extra, columns=CANONICAL)], ignore_index=True)
    land(settings, named(rows, naming))
    summary = validate_day(DAY, settings, spark)
    assert summary["success"] is True
    assert summary["run_date"] == DAY.isoformat()
    assert summary["row_count"] == len(rows)
    assert summary["missing_customer_share"] == pytest.approx((rows["customer_id"] == "").mean())
    assert summary["warnings"] == []
    report = read_latest_report(settings, DAY)
    assert report.success and report.failures == []
    files = data_files(settings.path("landing_dir"), DAY, settings.landing.format)
    assert report.landing_fingerprint == fingerprint(files)
    assert json.loads(Path(report.result_file).read_text())["great_expectations"]["success"] is True


def test_a_night_renders_its_own_data_docs_page_and_the_index_only(spark, settings) -> None:
    """Re-rendering every kept result each night would grow with the history."""
    land(settings, named(good_rows()))
    validate_day(DAY, settings, spark)
    first_page = day_page(settings, DAY)
    rendered = first_page.stat().st_mtime_ns
    next_day = date(2011, 3, 2)
    next_rows = good_rows().assign(invoice_date=lambda f: f["invoice_date"].str.replace("2011-03-01", "2011-03-02"))
    next_rows["invoice_date"] = next_rows["invoice_date"].str.replace("3/1/2011", "3/2/2011")
    land(settings, named(next_rows), next_day)
    validate_day(next_day, settings, spark)
    assert day_page(settings, next_day) is not None
    assert first_page.stat().st_mtime_ns == rendered, "the earlier day's page was rendered again"
    index = (data_docs_site(settings) / "index.html").read_text()
    assert DAY.isoformat() in index and next_day.isoformat() in index


def test_day_without_rows_passes(spark, settings) -> None:
    landed = land(settings, named(good_rows().iloc[0:0]))
    header_only = read_export(landed)
    assert header_only.empty and list(header_only.columns) == NAMINGS["online_retail"]
    summary = validate_day(DAY, settings, spark)
    assert summary["success"] is True
    assert summary["row_count"] == 0
    assert summary["missing_customer_share"] is None
    assert summary["warnings"] == []


def test_day_without_marker_has_not_arrived(spark, settings) -> None:
    land(settings, named(good_rows()))
    (settings.path("landing_dir") / f"date={DAY.isoformat()}" / settings.landing.marker).unlink()
    with pytest.raises(LakeStateError, match="not landed"):
        validate_day(DAY, settings, spark)
    assert read_latest_report(settings, DAY) is None


def rows_missing_customer(total: int, missing: int) -> pd.DataFrame:
    rows = pd.concat([good_rows()] * (total // len(GOOD_ROWS) + 1), ignore_index=True).iloc[:total].copy()
    rows["customer_id"] = ["17850"] * (total - missing) + [""] * missing
    return rows


def test_missing_customer_share_between_warning_and_failure_warns(spark, settings) -> None:
    land(settings, named(rows_missing_customer(10, 6)))
    summary = validate_day(DAY, settings, spark)
    assert summary["success"] is True
    assert summary["missing_customer_share"] == pytest.approx(0.6)
    assert len(summary["warnings"]) == 1 and "60.0% of rows have no customer id" in summary["warnings"][0]
    assert read_latest_report(settings, DAY).warnings == summary["warnings"]


# --- bad days: one case per class -----------------------------------------------------------------


def set_values(column: str, values: dict[int, str]):
    def mutate(rows: pd.DataFrame) -> pd.DataFrame:
        for index, value in values.items():
            rows.loc[index, column] = value
        return rows

    return mutate


def negative_prices(rows: pd.DataFrame) -> pd.DataFrame:
    rows.loc[0, "price"] = "-2.55"  # an ordinary invoice
    rows.loc[4, ["stock_code", "price"]] = ["B", "-18"]  # stock code B, but not an A invoice
    rows.loc[7, ["invoice", "price"]] = ["A540007", "-2.1"]  # an A invoice, but not stock code B
    return rows


def overflowing_amount(rows: pd.DataFrame) -> pd.DataFrame:
    """Quantity and price each fit their types; their product does not fit the money type."""
    rows.loc[0, ["quantity", "price"]] = ["99999999", "999999999.999"]
    return rows


BROKEN_ROWS = [
    # (case, mutation, expectation(column), broken rows)
    (
        "quantity-unparseable",
        set_values("quantity", {0: "abc"}),
        "expect_column_values_to_match_regex(quantity_raw)",
        1,
    ),
    (
        "price-unparseable",
        set_values("price", {0: "abc", 1: "1.2345"}),
        "expect_column_values_to_match_regex(price_raw)",
        2,
    ),
    (
        "date-unparseable",
        set_values("invoice_date", {2: "2011-13-45 25:00", 5: "yesterday"}),
        "expect_column_values_to_not_be_null(invoice_date)",
        2,
    ),
    ("invoice-empty", set_values("invoice", {3: ""}), "expect_column_values_to_not_be_null(invoice)", 1),
    (
        "stock-code-empty",
        set_values("stock_code", {1: " ", 6: ""}),
        "expect_column_values_to_not_be_null(stock_code)",
        2,
    ),
    (
        "date-outside-day",
        set_values("invoice_date", {0: "2011-03-02 00:00:00", 8: "2011-02-28 23:59:59"}),
        "expect_column_values_to_be_between(invoice_date)",
        2,
    ),
    ("quantity-zero", set_values("quantity", {4: "0"}), "expect_column_values_to_not_be_in_set(quantity)", 1),
    ("negative-price", negative_prices, "expect_column_values_to_be_between(price)", 3),
    (
        "customer-id-not-integer",
        set_values("customer_id", {0: "N/A", 1: "17850x"}),
        "expect_column_values_to_match_regex(customer_id_raw)",
        2,
    ),
    # required fields that do not parse to a value: blank, too large for the type, non-ASCII digits
    ("quantity-blank", set_values("quantity", {0: "", 1: " "}), "expect_column_values_to_not_be_null(quantity)", 2),
    ("price-blank", set_values("price", {2: ""}), "expect_column_values_to_not_be_null(price)", 1),
    (
        "price-integer-part-too-large",
        set_values("price", {3: "12345678901234567.5"}),
        "expect_column_values_to_not_be_null(price)",
        1,
    ),
    (
        "price-integer-part-too-large-format",
        set_values("price", {3: "12345678901234567.5"}),
        "expect_column_values_to_match_regex(price_raw)",
        1,
    ),
    (
        "quantity-full-width",
        set_values("quantity", {0: "\uff16"}),
        "expect_column_values_to_match_regex(quantity_raw)",
        1,
    ),
    (
        "quantity-arabic-indic",
        set_values("quantity", {1: "\u0666"}),
        "expect_column_values_to_not_be_null(quantity)",
        1,
    ),
    (
        "price-full-width",
        set_values("price", {0: "\uff12.\uff15\uff15"}),
        "expect_column_values_to_match_regex(price_raw)",
        1,
    ),
    (
        "customer-id-full-width",
        set_values("customer_id", {0: "\uff11\uff17\uff18\uff15\uff10"}),
        "expect_column_values_to_match_regex(customer_id_raw)",
        1,
    ),
    ("amount-beyond-money-type", overflowing_amount, "expect_column_values_to_be_null(amount_overflow)", 1),
]


def assert_failed(spark, settings, raised: pytest.ExceptionInfo, pattern: str) -> None:
    message = str(raised.value)
    assert re.search(pattern, message), message
    assert "nothing was written" in message
    report = read_latest_report(settings, DAY)
    assert report is not None and report.success is False
    assert any(re.search(pattern, failure) for failure in report.failures), report.failures
    assert json.loads(Path(report.result_file).read_text())["great_expectations"]["success"] is False
    assert_nothing_downstream(spark, settings)


@pytest.mark.parametrize(("mutate", "what", "broken"), [c[1:] for c in BROKEN_ROWS], ids=[c[0] for c in BROKEN_ROWS])
def test_bad_rows_fail_and_write_nothing(spark, settings, mutate, what: str, broken: int) -> None:
    land(settings, named(mutate(good_rows())))
    with pytest.raises(DataValidationError) as raised:
        validate_day(DAY, settings, spark)
    assert_failed(spark, settings, raised, rf"{re.escape(what)}: {broken} of {len(GOOD_ROWS)} rows broke it")


@pytest.mark.parametrize(("naming", "price"), [("online_retail", "UnitPrice"), ("online_retail_ii", "Price")])
def test_missing_required_column_fails_and_writes_nothing(spark, settings, naming: str, price: str) -> None:
    land(settings, named(good_rows(), naming).drop(columns=[price]))
    with pytest.raises(DataValidationError) as raised:
        validate_day(DAY, settings, spark)
    assert_failed(
        spark,
        settings,
        raised,
        re.escape("expect_column_to_exist(price): required column missing (accepted source names: UnitPrice, Price)"),
    )


def test_customer_ids_mostly_missing_fails_and_writes_nothing(spark, settings) -> None:
    land(settings, named(rows_missing_customer(20, 19)))  # 95 % without customer id
    with pytest.raises(DataValidationError) as raised:
        validate_day(DAY, settings, spark)
    what = re.escape("expect_column_proportion_of_non_null_values_to_be_between(customer_id)")
    assert_failed(spark, settings, raised, what + r": 19 of 20 rows have no customer id \(95\.0%")
    assert read_latest_report(settings, DAY).missing_customer_share == pytest.approx(0.95)


def test_customer_ids_missing_at_the_failure_level_fails(spark, settings) -> None:
    """The failure level is inclusive: exactly 90 % without a customer id fails."""
    land(settings, named(rows_missing_customer(10, 9)))
    with pytest.raises(DataValidationError, match="9 of 10 rows have no customer id"):
        validate_day(DAY, settings, spark)


# --- real trap days -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_export(real_data_path: Path) -> pd.DataFrame:
    return read_export(real_data_path)


@pytest.fixture(scope="module")
def real_expected(real_data_path: Path) -> pd.DataFrame:
    """Per-day figures computed straight from the file with pandas (typed parsing, not the pipeline's)."""
    frame = pd.read_csv(real_data_path, parse_dates=["InvoiceDate"], dtype={"CustomerID": "float"})
    frame["day"] = frame["InvoiceDate"].dt.date
    return frame


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("day", "warns"),
    [(date(2011, 8, 12), False), (date(2011, 8, 30), True), (date(2011, 8, 13), False)],
    ids=["bad-debt-adjustments", "87pct-without-customer", "saturday-no-rows"],
)
def test_real_trap_days_pass(spark, settings, real_export, real_expected, day: date, warns: bool) -> None:
    rows = real_expected[real_expected["day"] == day]
    if day == date(2011, 8, 12):
        adjustments = rows[rows["UnitPrice"] < 0]
        assert adjustments["UnitPrice"].tolist() == [-11062.06, -11062.06]
        assert adjustments["InvoiceNo"].str.startswith("A").all() and (adjustments["StockCode"] == "B").all()
    if day == date(2011, 8, 13):
        assert day.weekday() == 5 and rows.empty
    land_days(real_export, settings.path("landing_dir"), day, day, settings.landing.marker, settings.landing.format)
    summary = validate_day(day, settings, spark)
    assert summary["success"] is True
    assert summary["row_count"] == len(rows)
    if rows.empty:
        assert summary["missing_customer_share"] is None
    else:
        assert summary["missing_customer_share"] == pytest.approx(rows["CustomerID"].isna().mean())
    assert bool(summary["warnings"]) is warns
    if warns:
        assert summary["missing_customer_share"] == pytest.approx(0.87, abs=0.005)


# --- unreadable files, several files, no file -----------------------------------------------------


def day_folder(settings, day: date = DAY) -> Path:
    return settings.path("landing_dir") / f"date={day.isoformat()}"


def test_a_truncated_gzip_fails_permanently_in_one_line(spark, settings) -> None:
    landed = land(settings, named(good_rows()))
    truncated = day_folder(settings) / "transactions.csv.gz"
    truncated.write_bytes(gzip.compress(landed.read_bytes())[:-40])
    landed.unlink()
    with pytest.raises(UnreadableFileError) as raised:
        validate_day(DAY, settings, spark)
    message = str(raised.value)
    assert isinstance(raised.value, PermanentError)
    assert str(truncated.parent) in message and repr(truncated.name) in message  # the folder and the file
    assert "truncated" in message and "\n" not in message
    assert_nothing_downstream(spark, settings)


def write_csv(path: Path, rows: pd.DataFrame) -> None:
    rows.to_csv(path, index=False)


def test_a_day_split_into_files_of_either_naming_and_order_loads_every_row(spark, settings) -> None:
    """The second file under Online Retail II names with its columns reversed: mapped by its own header."""
    rows = pd.concat([good_rows(), pd.DataFrame([ADJUSTMENT], columns=CANONICAL)], ignore_index=True)
    land(settings, named(rows.iloc[:0]))  # the marker (and a header-only first file)
    folder = day_folder(settings)
    write_csv(folder / "transactions.csv", named(rows.iloc[:6]))
    second = named(rows.iloc[6:], "online_retail_ii")
    write_csv(folder / "transactions-2.csv", second[list(reversed(second.columns))])
    summary = validate_day(DAY, settings, spark)
    assert summary["success"] is True and summary["row_count"] == len(rows)
    ingested = ingest_day(DAY, settings, spark)
    assert ingested["rows_in"] == len(rows) and ingested["quarantined"] == 0
    bronze = lake.read(spark, settings.table_path("bronze_transactions")).orderBy("invoice", "stock_code").toPandas()
    assert sorted(bronze["invoice"]) == sorted(rows["invoice"])
    assert sorted(bronze["stock_code"]) == sorted(rows["stock_code"])
    assert sorted(bronze["quantity"]) == sorted(int(q) for q in rows["quantity"])


def test_files_that_disagree_on_their_columns_fail_naming_both(spark, settings) -> None:
    land(settings, named(good_rows().iloc[:5]))
    write_csv(day_folder(settings) / "transactions-2.csv", named(good_rows().iloc[5:]).drop(columns=["Country"]))
    with pytest.raises(DataValidationError) as raised:
        validate_day(DAY, settings, spark)
    message = str(raised.value)
    assert (
        "transactions-2.csv and transactions.csv disagree on their columns: only transactions.csv has country"
        in message
    )


def test_a_file_with_two_names_for_one_column_fails_as_ambiguous(spark, settings) -> None:
    rows = named(good_rows())
    rows["Invoice"] = rows["InvoiceNo"]
    land(settings, rows)
    with pytest.raises(DataValidationError, match=r"transactions.csv'?: columns InvoiceNo, Invoice all map to invoice"):
        validate_day(DAY, settings, spark)


def test_a_marker_without_data_file_is_a_day_without_trading(spark, settings) -> None:
    folder = day_folder(settings)
    folder.mkdir(parents=True)
    (folder / settings.landing.marker).touch()
    summary = validate_day(DAY, settings, spark)
    assert summary["success"] is True and summary["row_count"] == 0
    ingested = ingest_day(DAY, settings, spark)
    assert ingested["rows_in"] == 0 and ingested["customers"] == 0
    assert DAY in audited_dates(spark, settings)


# --- policies: quarantine under the threshold, fail above it -------------------------------------


def busy_day(copies: int = 20) -> pd.DataFrame:
    """GOOD_ROWS repeated (200 rows by default): one bad row is 0.5 %, under the default 1 %."""
    return pd.concat([good_rows()] * copies, ignore_index=True)


def test_rows_under_the_threshold_are_quarantined_not_lost(spark, settings) -> None:
    rows = busy_day()
    rows.loc[3, "quantity"] = "\uff16"  # full-width six: breaks two quantity rules
    rows.loc[16, "price"] = ""
    land(settings, named(rows))
    summary = validate_day(DAY, settings, spark)
    assert summary["success"] is True and summary["quarantined_rows"] == 2
    assert any("expect_column_values_to_not_be_null(price): 1 of 200" in n for n in summary["quarantine_notes"])

    ingested = ingest_day(DAY, settings, spark)
    assert ingested["quarantined"] == 2 and ingested["rows_in"] == 200
    bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    assert bronze.count() == 198
    assert bronze.filter("quantity IS NULL OR price IS NULL").count() == 0
    held = lake.read(spark, settings.table_path("quarantine_transactions")).orderBy("source_row").collect()
    assert [(r["run_date"], r["source_file"], r["source_row"]) for r in held] == [
        (DAY, "transactions.csv", 4),
        (DAY, "transactions.csv", 17),
    ]
    assert json.loads(held[0]["raw_record"])["Quantity"] == "\uff16"
    assert json.loads(held[0]["raw_record"])["InvoiceNo"] == rows.loc[3, "invoice"]
    assert sorted(held[0]["expectations"]) == [
        "quantity_format: expect_column_values_to_match_regex(quantity_raw)",
        "quantity_parses: expect_column_values_to_not_be_null(quantity)",
    ]
    assert held[1]["expectations"] == ["price_parses: expect_column_values_to_not_be_null(price)"]
    (audit,) = lake.read(spark, settings.table_path("run_audit")).filter("step = 'ingest'").collect()
    assert audit["excluded_rows"]["quarantined"] == 2 and audit["rows_in"] == 200
    assert audit["input_fingerprint"] == summary["landing_fingerprint"]

    # a corrected re-delivery replaces the day's quarantine slice, like every other table
    land(settings, named(busy_day()))
    assert validate_day(DAY, settings, spark)["quarantined_rows"] == 0
    assert ingest_day(DAY, settings, spark)["quarantined"] == 0
    assert lake.read(spark, settings.table_path("quarantine_transactions")).count() == 0
    assert lake.read(spark, settings.table_path("bronze_transactions")).count() == 200


def test_rows_above_the_threshold_fail_the_day(spark, settings) -> None:
    rows = busy_day()
    rows.loc[[1, 2, 3], "quantity"] = "0"  # 1.5 % of the day
    land(settings, named(rows))
    with pytest.raises(DataValidationError) as raised:
        validate_day(DAY, settings, spark)
    assert_failed(
        spark, settings, raised, re.escape("expect_column_values_to_not_be_in_set(quantity): 3 of 200 rows broke it")
    )
    assert "1.50% of the day's rows, above the 1.00% limit" in str(raised.value)


def test_the_threshold_is_set_per_expectation_in_conf(spark, tmp_path) -> None:
    base = settings_for(tmp_path)
    policies = {**base.validation.policies, "quantity_nonzero": Policy(policy="quarantine", max_share=0.02)}
    settings = settings_for(tmp_path, validation={"policies": policies})
    rows = busy_day()
    rows.loc[[1, 2, 3], "quantity"] = "0"
    land(settings, named(rows))
    assert validate_day(DAY, settings, spark)["quarantined_rows"] == 3


def test_a_warn_policy_keeps_the_rows(spark, tmp_path) -> None:
    base = settings_for(tmp_path)
    settings = settings_for(
        tmp_path, validation={"policies": {**base.validation.policies, "quantity_nonzero": Policy(policy="warn")}}
    )
    rows = good_rows()
    rows.loc[4, "quantity"] = "0"
    land(settings, named(rows))
    summary = validate_day(DAY, settings, spark)
    assert summary["quarantined_rows"] == 0
    assert any("expect_column_values_to_not_be_in_set(quantity): 1 of 10" in w for w in summary["warnings"])


# --- the fingerprint pins the bytes validated ----------------------------------------------------


def rewrite_while_reading(monkeypatch, module, settings, times: int | None) -> list[pd.DataFrame]:
    """Make ``module.collect_day`` rewrite the landed file right after reading it (``times`` times, None: always)."""
    import jobs.steps.validate as validate_module

    original = validate_module.collect_day
    written: list[pd.DataFrame] = []

    def collect_then_rewrite(*args, **kwargs):
        collected = original(*args, **kwargs)
        if times is None or len(written) < times:
            rows = busy_day(2 + len(written))
            land(settings, named(rows))
            written.append(rows)
        return collected

    monkeypatch.setattr(module, "collect_day", collect_then_rewrite)
    return written


def test_a_file_rewritten_while_validating_is_validated_again(spark, settings, monkeypatch) -> None:
    import jobs.steps.validate as validate_module

    land(settings, named(good_rows()))
    written = rewrite_while_reading(monkeypatch, validate_module, settings, times=1)
    summary = validate_day(DAY, settings, spark)
    files = data_files(settings.path("landing_dir"), DAY, settings.landing.format)
    assert len(written) == 1
    assert summary["landing_fingerprint"] == fingerprint(files)  # the bytes now there ...
    assert summary["row_count"] == len(written[0])  # ... are the bytes validated


def test_a_file_that_keeps_changing_fails_permanently(spark, settings, monkeypatch) -> None:
    import jobs.steps.validate as validate_module

    land(settings, named(good_rows()))
    rewrite_while_reading(monkeypatch, validate_module, settings, times=None)
    with pytest.raises(LandingChangedError, match="kept changing while they were validated"):
        validate_day(DAY, settings, spark)
    assert read_latest_report(settings, DAY) is None


def test_a_file_rewritten_while_ingesting_is_not_loaded(spark, settings, monkeypatch) -> None:
    import jobs.steps.ingest as ingest_module

    land(settings, named(good_rows()))
    validate_day(DAY, settings, spark)
    original = ingest_module.read_landed_day

    def read_then_rewrite(*args, **kwargs):
        frame = original(*args, **kwargs)
        land(settings, named(busy_day()))  # lazily read: Spark will see these unvalidated bytes
        return frame

    monkeypatch.setattr(ingest_module, "read_landed_day", read_then_rewrite)
    with pytest.raises(LandingChangedError, match="changed after validation"):
        ingest_day(DAY, settings, spark)
    for name in TABLES:
        assert lake.current_version(settings.table_path(name)) is None, name


@pytest.mark.realdata
def test_the_busiest_real_day_split_into_two_namings_loads_every_row(
    spark, settings, real_export, real_expected
) -> None:
    """The issue's case: 5,331 rows, the second half under Online Retail II names in reverse column order."""
    day = real_expected["day"].value_counts().idxmax()
    expected = int((real_expected["day"] == day).sum())
    assert expected == 5331
    land_days(real_export, settings.path("landing_dir"), day, day, settings.landing.marker, settings.landing.format)
    landed = day_folder(settings, day) / "transactions.csv"
    rows = pd.read_csv(landed, dtype=str, keep_default_na=False)
    half = len(rows) // 2
    rows.iloc[:half].to_csv(landed, index=False)
    second = rows.iloc[half:].rename(
        columns=dict(zip(NAMINGS["online_retail"], NAMINGS["online_retail_ii"], strict=True))
    )
    second[list(reversed(second.columns))].to_csv(day_folder(settings, day) / "transactions-2.csv", index=False)
    summary = validate_day(day, settings, spark)
    assert summary["success"] is True and summary["row_count"] == expected and summary["quarantined_rows"] == 0
