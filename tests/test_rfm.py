"""RFM: hand-computed snapshots, exclusion counts, an independent DuckDB recomputation on the real
file, and the lake guarantees of the ingest step (idempotent, refuses unvalidated input, atomic)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from jobs.adapters import lake
from jobs.adapters.landing import write_day
from jobs.adapters.transactions import (
    parse_transactions,
    read_export_text,
    to_canonical_names,
    typed_rows,
)
from jobs.core.rfm import (
    compute_rfm,
    considered_lines,
    contributions,
    exclusion_counts,
    is_purchase,
    snapshot_from_state,
    state_from_contributions,
)
from jobs.definitions import CANONICAL_COLUMNS, TABLES
from jobs.errors import LakeStateError
from jobs.steps.ingest import ingest_day
from jobs.steps.validate import validate_day
from tests.helpers import UK, frame_of, line

pytestmark = pytest.mark.spark

SNAPSHOT = date(2011, 3, 10)


# --- compute_rfm on hand-made transactions ---------------------------------------------------------

DUPLICATE = line("1001", "22000", 1, date(2011, 3, 1), "10.00", "100", description="LANTERN")
TRANSACTIONS = [
    # customer 100
    line("1001", "21000", 3, date(2011, 3, 1), "2.50", "100"),  # two product lines on one invoice ...
    DUPLICATE,
    DUPLICATE,  # ... an exact duplicate of the second: counted once
    line("1001", "POST", 1, date(2011, 3, 1), "18.00", "100"),  # postage: not a product
    line("C1002", "21000", -1, date(2011, 3, 3), "2.50", "100"),  # partial return of one line of 1001
    line("1005", "21001", 1, date(2011, 3, 5), "0.00", "100"),  # price 0: not a purchase, 1005 not counted
    line("1003", "21002", 2, date(2011, 3, 10), "1.25", "100", "France", hour=23),  # ON the snapshot date
    line("1004", "21000", 5, date(2011, 3, 11), "2.50", "100"),  # after the snapshot: ignored
    # customer 200: most lines in the UK, most revenue in Germany
    line("2001", "23000", 1, date(2011, 2, 1), "100.00", "200", "Germany"),
    line("2002", "23001", 4, date(2011, 2, 20), "5.00", "200"),
    line("2003", "23002", 10, date(2011, 2, 25), "3.333", "200"),
    line("C2004", "23002", -10, date(2011, 3, 1), "3.333", "200"),  # the whole of 2003 cancelled
    # customer 300: only cancellations -> no snapshot row
    line("C3001", "24000", -2, date(2011, 3, 2), "4.00", "300"),
    # customer 400: returns more than bought here -> monetary floored at 0, gross kept
    line("4001", "25000", 1, date(2011, 3, 2), "5.00", "400"),
    line("C4002", "25000", -3, date(2011, 3, 4), "5.00", "400"),
    # no customer id: ignored (must not feed anybody, nor a null customer)
    line("5001", "21000", 20, date(2011, 3, 5), "2.50", None),
    # customer 500: only non-product lines (charges, manual, dotcom postage)
    line("5002", "POST", 1, date(2011, 3, 5), "18.00", "500"),
    line("5002", "M", 1, date(2011, 3, 5), "50.00", "500"),
    line("5003", "DOT", 1, date(2011, 3, 6), "120.00", "500"),
    # customer 600: only after the snapshot
    line("6001", "21000", 1, date(2011, 3, 12), "2.50", "600"),
    # customer 700: only a price-0 line and an A (adjustment) invoice
    line("7001", "21000", 1, date(2011, 3, 7), "0.00", "700"),
    line("A7002", "21000", 1, date(2011, 3, 7), "20.00", "700"),
]
COLUMNS = [
    "snapshot_date",
    "customer_id",
    "recency_days",
    "frequency",
    "monetary",
    "monetary_gross",
    "monetary_cancelled",
    "first_purchase_date",
    "last_purchase_date",
    "tenure_days",
    "country",
]
EXPECTED_NET = {
    # 100: gross 3*2.50 + 1*10.00 + 2*1.25 = 20.00; cancelled -1*2.50 = -2.50; net 17.50
    #      purchase invoices {1001, 1003}; last 2011-03-10 (recency 0), first 2011-03-01 (tenure 9)
    #      revenue UK 17.50 > France 2.50
    "100": (
        SNAPSHOT,
        "100",
        0,
        2,
        Decimal("17.500"),
        Decimal("20.000"),
        Decimal("-2.500"),
        date(2011, 3, 1),
        date(2011, 3, 10),
        9,
        UK,
    ),
    # 200: gross 1*100.00 + 4*5.00 + 10*3.333 = 153.33; cancelled -10*3.333 = -33.33; net 120.00
    #      invoices {2001, 2002, 2003}; last 2011-02-25 -> 13 days; first 2011-02-01 -> 27 + 10 = 37 days
    #      revenue Germany 100.00 > UK 53.33
    "200": (
        SNAPSHOT,
        "200",
        13,
        3,
        Decimal("120.000"),
        Decimal("153.330"),
        Decimal("-33.330"),
        date(2011, 2, 1),
        date(2011, 2, 25),
        37,
        "Germany",
    ),
    # 400: gross 1*5.00 = 5.00; cancelled -3*5.00 = -15.00; net max(-10.00, 0) = 0
    "400": (
        SNAPSHOT,
        "400",
        8,
        1,
        Decimal("0.000"),
        Decimal("5.000"),
        Decimal("-15.000"),
        date(2011, 3, 2),
        date(2011, 3, 2),
        8,
        UK,
    ),
}


def snapshot_rows(frame: DataFrame) -> dict[str, tuple]:
    return {row["customer_id"]: tuple(row) for row in frame.collect()}


def test_bronze_schema_is_what_typed_rows_produces(spark, settings) -> None:
    empty = spark.createDataFrame([], ", ".join(f"{c} string" for c in CANONICAL_COLUMNS))
    assert typed_rows(parse_transactions(empty, settings)).schema == frame_of(spark, []).schema


def test_compute_rfm_matches_hand_computed_values(spark, settings) -> None:
    result = compute_rfm(frame_of(spark, TRANSACTIONS), SNAPSHOT, settings.rfm)
    assert result.columns == COLUMNS
    assert {f.name: f.dataType.simpleString() for f in result.schema.fields if f.name.startswith("monetary")} == {
        "monetary": "decimal(20,3)",
        "monetary_gross": "decimal(20,3)",
        "monetary_cancelled": "decimal(20,3)",
    }
    rows = snapshot_rows(result)
    assert rows == EXPECTED_NET
    # Decimal equality ignores the exponent: check the digits too (exact, 3 decimals, no float).
    assert [str(rows[c][4]) for c in ("100", "200", "400")] == ["17.500", "120.000", "0.000"]


def test_compute_rfm_gross_when_not_net_of_cancellations(spark, settings) -> None:
    gross_rules = settings.rfm.model_copy(update={"net_of_cancellations": False})
    rows = snapshot_rows(compute_rfm(frame_of(spark, TRANSACTIONS), SNAPSHOT, gross_rules))
    monetary = {c: r[4] for c, r in rows.items()}
    cancelled = {c: r[6] for c, r in rows.items()}
    assert monetary == {"100": Decimal("20.00"), "200": Decimal("153.33"), "400": Decimal("5.00")}  # = gross
    assert cancelled == {"100": Decimal("-2.50"), "200": Decimal("-33.33"), "400": Decimal("-15.00")}  # still reported


def test_compute_rfm_snapshot_date_moves_recency_and_cut_off(spark, settings) -> None:
    # As of 2011-03-12, customer 100's 1004 (2011-03-11: 5*2.50 = 12.50) and customer 600 count.
    rows = snapshot_rows(compute_rfm(frame_of(spark, TRANSACTIONS), date(2011, 3, 12), settings.rfm))
    assert set(rows) == {"100", "200", "400", "600"}
    assert rows["100"][2:5] == (1, 3, Decimal("30.00"))  # 17.50 + 12.50
    assert rows["200"][2] == 15


# Every line fits the money type (the gate checks quantity x price per line); their sum does not.
HUGE_SPENDER = [line(f"77{n:02d}", "21000", 99_999_999, date(2011, 3, 1), "99999999.999", "700") for n in range(20)]


def test_a_monetary_sum_beyond_the_money_type_fails_loudly(spark, settings) -> None:
    """With ANSI off the cast would give null and ``greatest(null, 0)`` a monetary of 0 (issue 12, item 2)."""
    rows = frame_of(spark, [*HUGE_SPENDER, line("7800", "21000", 1, date(2011, 3, 1), "1.00", "701")])
    with pytest.raises(Exception, match="monetary_gross does not fit decimal"):
        compute_rfm(rows, SNAPSHOT, settings.rfm).collect()
    state = state_from_contributions(contributions(rows, settings.rfm), settings.rfm)
    with pytest.raises(Exception, match="does not fit decimal"):
        snapshot_from_state(state, SNAPSHOT, settings.rfm).collect()


# --- exclusion counts -------------------------------------------------------------------------------

DAY = date(2011, 3, 1)
PURCHASE = line("9001", "21000", 2, DAY, "2.50", "900")
CANCELLED = line("C9002", "21000", -1, DAY, "2.50", "900")
EXCLUSION_DAY = [
    line("9003", "POST", 1, DAY, "18.00", None),  # missing_customer_id (before non_product)
    line("9004", "21000", 1, DAY, "2.50", None),  # missing_customer_id
    line("C9005", "POST", -1, DAY, "18.00", "900"),  # non_product (before cancellation)
    PURCHASE,  # a purchase ...
    PURCHASE,  # ... and its exact duplicate
    CANCELLED,  # cancellation ...
    CANCELLED,  # ... duplicate (before cancellation)
    line("C9006", "21001", -2, DAY, "1.00", "901"),  # cancellation
    line("A9007", "21000", 1, DAY, "20.00", "901"),  # other_non_purchase
    line("9008", "21002", -2, DAY, "1.00", "901"),  # non_positive_quantity
    line("9009", "21003", 3, DAY, "0.00", "901"),  # non_positive_price
    line("9010", "21004", 1, DAY, "4.00", "901"),  # a purchase
]


def test_exclusion_counts_one_reason_per_row_by_priority(spark, settings) -> None:
    frame = frame_of(spark, EXCLUSION_DAY)
    counts = exclusion_counts(frame, settings.rfm)
    assert counts == {
        "missing_customer_id": 2,
        "non_product": 1,
        "duplicate": 2,
        "cancellation": 2,
        "other_non_purchase": 1,
        "non_positive_quantity": 1,
        "non_positive_price": 1,
    }
    purchases = considered_lines(frame, settings.rfm).filter(is_purchase(settings.rfm)).count()
    assert purchases == 2 and len(EXCLUSION_DAY) - sum(counts.values()) == purchases


def test_exclusion_counts_of_an_empty_day_are_zero(spark, settings) -> None:
    assert set(exclusion_counts(frame_of(spark, []), settings.rfm).values()) == {0}


# --- real data: every customer against an independent DuckDB computation ----------------------------

REAL_SNAPSHOT = date(2011, 12, 9)
DUCKDB_RFM = """
with raw as (
    select * from read_csv('{path}', header = true, all_varchar = true)
), distinct_lines as (              -- exact duplicates counted once
    select distinct * from raw
), lines as (
    select
        InvoiceNo as invoice,
        cast(Quantity as integer) as quantity,
        cast(UnitPrice as decimal(18, 3)) as price,
        cast(Quantity as decimal(18, 0)) * cast(UnitPrice as decimal(18, 3)) as amount,
        trim(CustomerID) as customer_id,
        cast(substr(InvoiceDate, 1, 10) as date) as day
    from distinct_lines
    where nullif(trim(CustomerID), '') is not null
      and not list_contains($non_product, StockCode)
      and cast(substr(InvoiceDate, 1, 10) as date) <= $snapshot
), flagged as (
    select *,
        not list_contains($non_purchase, substr(invoice, 1, 1)) and quantity > 0 and price > 0 as purchase,
        starts_with(invoice, $cancellation) and quantity < 0 as cancellation
    from lines
)
select
    customer_id,
    date_diff('day', max(day) filter (where purchase), $snapshot) as recency_days,
    count(distinct invoice) filter (where purchase) as frequency,
    greatest(
        coalesce(sum(amount) filter (where purchase), 0) + coalesce(sum(amount) filter (where cancellation), 0),
        0
    )::decimal(20, 3) as monetary
from flagged
group by customer_id
having count(*) filter (where purchase) > 0
"""


def duckdb_rfm(path: Path, settings, snapshot: date) -> dict[str, tuple]:
    rules = settings.rfm
    assert all(len(p) == 1 for p in rules.non_purchase_prefixes)  # the SQL compares the first character
    with duckdb.connect() as con:
        rows = con.execute(
            DUCKDB_RFM.format(path=str(path).replace("'", "''")),
            {
                "non_product": rules.non_product_stock_codes,
                "non_purchase": rules.non_purchase_prefixes,
                "cancellation": rules.cancellation_prefix,
                "snapshot": snapshot,
            },
        ).fetchall()
    return {customer: (recency, frequency, monetary) for customer, recency, frequency, monetary in rows}


@pytest.mark.realdata
def test_real_data_rfm_matches_independent_duckdb_computation(spark, settings, real_data_path: Path) -> None:
    raw = read_export_text(spark, [str(real_data_path)])
    transactions = typed_rows(parse_transactions(to_canonical_names(raw, settings), settings))
    snapshot = compute_rfm(transactions, REAL_SNAPSHOT, settings.rfm).select(
        "customer_id", "recency_days", "frequency", "monetary"
    )
    actual = {r["customer_id"]: (r["recency_days"], r["frequency"], r["monetary"]) for r in snapshot.collect()}
    expected = duckdb_rfm(real_data_path, settings, REAL_SNAPSHOT)

    assert 4300 <= len(expected) <= 4372, len(expected)  # 4,372 customer ids, a few without any purchase
    assert set(actual) == set(expected), (
        f"only Spark: {sorted(set(actual) - set(expected))[:10]}, only DuckDB: {sorted(set(expected) - set(actual))[:10]}"
    )
    mismatches = [(c, actual[c], expected[c]) for c in sorted(expected) if actual[c] != expected[c]]
    assert not mismatches, f"{len(mismatches)} customers differ (customer, spark, duckdb): {mismatches[:10]}"
    assert sum(v[2] for v in expected.values()) > Decimal("8000000")  # not a trivially empty/zero computation
    # 12346 bought 74,215 mugs on 2011-01-18 and cancelled them the same day: floored at 0, not negative
    assert actual["12346"] == (325, 1, Decimal("0.000"))


# --- lake: idempotent ingest, refused input, atomic writes -------------------------------------------

LAKE_DAY = date(2011, 3, 1)  # a Tuesday
UCI_COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
LANDED = [
    ["540001", "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", "6", "2011-03-01 08:26:00", "2.55", "17850", UK],
    ["540001", "71053", "WHITE METAL LANTERN", "6", "2011-03-01 08:26:00", "3.39", "17850", UK],
    ["540002", "22423", "REGENCY CAKESTAND 3 TIER", "2", "2011-03-01 09:00:00", "12.75", "13085", UK],
    ["C540003", "22423", "REGENCY CAKESTAND 3 TIER", "-1", "2011-03-01 10:15:00", "12.75", "13085", UK],
    ["540004", "POST", "POSTAGE", "1", "2011-03-01 11:00:00", "18", "12662", "Germany"],
    ["540005", "21730", "GLASS STAR FROSTED, T-LIGHT HOLDER", "12", "2011-03-01 12:30:00", "4.25", "", UK],
]


def land(settings, day: date = LAKE_DAY, rows: list[list[str]] = LANDED) -> Path:
    frame = pd.DataFrame(rows, columns=UCI_COLUMNS)
    return write_day(settings.path("landing_dir"), day, frame, settings.landing.marker, settings.landing.format)


def table_rows(spark, settings, name: str) -> list[tuple]:
    frame = lake.read(spark, settings.table_path(name))
    return [tuple(r) for r in frame.orderBy(*frame.columns).collect()]


def test_ingest_twice_leaves_identical_bronze_and_silver(spark, settings) -> None:
    land(settings)
    validate_day(LAKE_DAY, settings, spark)
    first = ingest_day(LAKE_DAY, settings, spark)
    bronze = table_rows(spark, settings, "bronze_transactions")
    silver = table_rows(spark, settings, "silver_customer_rfm")
    second = ingest_day(LAKE_DAY, settings, spark)

    assert table_rows(spark, settings, "bronze_transactions") == bronze
    assert table_rows(spark, settings, "silver_customer_rfm") == silver
    assert len(bronze) == len(LANDED)
    # 17850: 6*2.55 + 6*3.39 = 35.64; 13085: 2*12.75 - 1*12.75 = 12.75; 12662 only postage
    assert {r[1]: r[4] for r in silver} == {"17850": Decimal("35.64"), "13085": Decimal("12.75")}
    for summary in (first, second):
        assert (summary["rows_in"], summary["customers"]) == (len(LANDED), 2)
        assert summary["excluded"]["missing_customer_id"] == 1 and summary["excluded"]["non_product"] == 1
    assert second["bronze_transactions"] > first["bronze_transactions"]  # a new commit replaced the slice


def test_ingest_refuses_changed_or_unvalidated_input(spark, settings) -> None:
    landed = land(settings)
    validate_day(LAKE_DAY, settings, spark)
    landed.write_text(landed.read_text().replace("2.55", "2.65"))  # edited after validation
    with pytest.raises(LakeStateError, match="changed after validation"):
        ingest_day(LAKE_DAY, settings, spark)
    next_day = date(2011, 3, 2)
    land(settings, next_day, [[c.replace("2011-03-01", "2011-03-02") for c in row] for row in LANDED])
    with pytest.raises(LakeStateError, match="no passing validation"):
        ingest_day(next_day, settings, spark)
    for name in TABLES:
        assert lake.current_version(settings.table_path(name)) is None, name


def test_crash_mid_write_leaves_previous_version_intact(spark, settings) -> None:
    land(settings)
    validate_day(LAKE_DAY, settings, spark)
    ingest_day(LAKE_DAY, settings, spark)
    path = settings.table_path("bronze_transactions")
    version, before = lake.current_version(path), table_rows(spark, settings, "bronze_transactions")

    def crash_on_lantern(description):  # local: shipped to the Python worker by value
        if description == "WHITE METAL LANTERN":
            raise RuntimeError("simulated crash mid-write")
        return description

    current = lake.read(spark, path)
    # Other values than the table holds, in two write tasks: one can finish before the other raises.
    replacement = (
        spark.createDataFrame(current.collect(), current.schema)
        .repartition(2)
        .withColumn("quantity", F.col("quantity") * 10)
        .withColumn("description", F.udf(crash_on_lantern, StringType())("description"))
    )
    with pytest.raises(Exception, match="simulated crash mid-write"):
        lake.replace_slice(replacement, path, f"transaction_date = {lake.date_literal(LAKE_DAY)}", "transaction_date")

    assert lake.current_version(path) == version
    assert table_rows(spark, settings, "bronze_transactions") == before
