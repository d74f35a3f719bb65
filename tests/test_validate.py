"""Validating landed days: good data passes in both namings; each class of bad data fails and writes nothing."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from jobs.adapters import lake
from jobs.adapters.expectations import read_latest_report
from jobs.adapters.landing import data_files, fingerprint, write_day
from jobs.definitions import TABLES
from jobs.errors import DataValidationError, LakeStateError
from jobs.steps.ingest import ingest_day
from jobs.steps.validate import validate_day
from jobs.tools.split import land_days, read_export

DAY = date(2011, 3, 1)  # a Tuesday
NAMINGS = {
    "online_retail": ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"],
    "online_retail_ii": ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"],
}  # fmt: skip
CANONICAL = ["invoice", "stock_code", "description", "quantity", "invoice_date", "price", "customer_id", "country"]
# Ten valid rows of DAY: every configured timestamp format, a cancellation, a charge, a zero price,
# a float-looking customer id, quotes and commas, the first and the last second of the day, 20 % without customer.
GOOD_ROWS = [
    ["540001", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "6", "2011-03-01 08:26:00", "2.55", "17850", "United Kingdom"],
    ["540001", "71053", "WHITE METAL LANTERN", "6", "2011-03-01 08:26:00", "3.39", "17850", "United Kingdom"],
    ["540002", "22423", "REGENCY CAKESTAND 3 TIER", "2", "2011-03-01 09:00", "12.75", "13085.0", "United Kingdom"],
    ["C540003", "22423", "REGENCY CAKESTAND 3 TIER", "-1", "3/1/2011 10:15", "12.75", "13085", "United Kingdom"],
    ["540004", "POST", "POSTAGE", "1", "2011-03-01 11:00:00", "18", "12662", "Germany"],
    ["540005", "21730", 'GLASS STAR FROSTED, T-LIGHT "HOLDER"', "12", "2011-03-01 12:30:00", "4.25", "", "United Kingdom"],
    ["540006", "84879", "", "8", "2011-03-01 13:45:00", "0.00", "", "United Kingdom"],
    ["540007", "22745", "POPPY'S PLAYHOUSE BEDROOM", "24", "2011-03-01 15:00:00", "2.1", "14911", "EIRE"],
    ["540008", "21754", "HOME BUILDING BLOCK WORD", "3", "2011-03-01 23:59:59", "5.95", "15311", "United Kingdom"],
    ["540009", "M", "Manual", "1", "2011-03-01 00:00:00", "1.001", "15311", "United Kingdom"],
]  # fmt: skip
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
        assert lake.current_version(spark, settings.table_path(name)) is None, name
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


BROKEN_ROWS = [
    # (case, mutation, expectation(column), broken rows)
    ("quantity-unparseable", set_values("quantity", {0: "abc"}), "expect_column_values_to_match_regex(quantity_raw)", 1),
    ("price-unparseable", set_values("price", {0: "abc", 1: "1.2345"}), "expect_column_values_to_match_regex(price_raw)", 2),
    ("date-unparseable", set_values("invoice_date", {2: "2011-13-45 25:00", 5: "yesterday"}),
     "expect_column_values_to_not_be_null(invoice_date)", 2),
    ("invoice-empty", set_values("invoice", {3: ""}), "expect_column_values_to_not_be_null(invoice)", 1),
    ("stock-code-empty", set_values("stock_code", {1: " ", 6: ""}), "expect_column_values_to_not_be_null(stock_code)", 2),
    ("date-outside-day", set_values("invoice_date", {0: "2011-03-02 00:00:00", 8: "2011-02-28 23:59:59"}),
     "expect_column_values_to_be_between(invoice_date)", 2),
    ("quantity-zero", set_values("quantity", {4: "0"}), "expect_column_values_to_not_be_in_set(quantity)", 1),
    ("negative-price", negative_prices, "expect_column_values_to_be_between(price)", 3),
    ("customer-id-not-integer", set_values("customer_id", {0: "N/A", 1: "17850x"}),
     "expect_column_values_to_match_regex(customer_id_raw)", 2),
]  # fmt: skip


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
