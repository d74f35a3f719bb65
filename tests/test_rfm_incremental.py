"""Incremental RFM: night by night, the snapshot derived from the merged customer state equals
``compute_rfm`` over bronze for every customer on every date, and again after re-runs."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from harness.check_incremental import check_nights, differences, typed_source, value_differences
from jobs.adapters import lake
from jobs.adapters.customer_state import holds_through, load_snapshot, snapshot_mode, state_of, state_through
from jobs.core.rfm import DEDUP_KEY_HOLDS_TIMESTAMP, value_summary
from tests.helpers import frame_of, line

pytestmark = pytest.mark.spark

DUPLICATE = line("1001", "22000", 1, date(2011, 3, 1), "10.00", "100")
LINES = [
    line("1001", "21000", 3, date(2011, 3, 1), "2.50", "100"),
    DUPLICATE,
    DUPLICATE,  # an exact duplicate: counted once
    line("1001", "POST", 1, date(2011, 3, 1), "18.00", "100"),  # postage: not a product
    line("C1002", "21000", -1, date(2011, 3, 3), "2.50", "100"),  # a return
    line("1005", "21001", 1, date(2011, 3, 5), "0.00", "100"),  # price 0: no purchase
    line("1003", "21002", 2, date(2011, 3, 5), "1.25", "100", "France", hour=23),
    line("2001", "23000", 1, date(2011, 2, 25), "100.00", "200", "Germany"),  # history before the nights
    line("2003", "23002", 10, date(2011, 2, 27), "3.333", "200"),
    line("C2004", "23002", -10, date(2011, 3, 1), "3.333", "200"),
    line("C3001", "24000", -2, date(2011, 3, 2), "4.00", "300"),  # only a cancellation: no row
    line("4001", "25000", 1, date(2011, 3, 2), "5.00", "400"),
    line("C4002", "25000", -3, date(2011, 3, 4), "5.00", "400"),  # returns more than bought
    line("5001", "21000", 20, date(2011, 3, 5), "2.50", None),  # no customer id
    line("A7002", "21000", 1, date(2011, 3, 3), "20.00", "700"),  # an adjustment
    # an invoice that spans two days (never in the real data): counted once
    line("1001", "21003", 1, date(2011, 3, 2), "4.00", "100"),
    # customer 800: equal revenue in two countries -> the first by name; then Spain pulls ahead
    line("8001", "21000", 2, date(2011, 3, 1), "5.00", "800", "Spain"),
    line("8002", "21000", 1, date(2011, 3, 1), "10.00", "800", "Belgium"),
    line("8003", "21000", 1, date(2011, 3, 4), "0.50", "800", "Spain"),
    # customer 900: a line without a country, and a cancellation in a country it never bought in
    line("9001", "21000", 1, date(2011, 3, 2), "7.00", "900", None),
    line("C9002", "21000", -1, date(2011, 3, 5), "1.00", "900", "France"),
]


def test_dedup_key_holds_the_timestamp() -> None:
    # exact duplicates share their timestamp, so per-day dedup adds up to whole-history dedup
    assert DEDUP_KEY_HOLDS_TIMESTAMP


def test_hand_made_nights_match_compute_rfm_with_reruns(spark, settings) -> None:
    rows = frame_of(spark, LINES)
    records = check_nights(spark, settings, rows, date(2011, 2, 28), date(2011, 3, 6), rerun_every=3)
    assert [r for r in records if r["differences"] or r["value_differences"]] == []
    assert sum(r["run"] == 2 for r in records) == 2  # re-runs happened
    silver = lake.read(spark, settings.table_path("silver_customer_rfm"))
    on = {r["customer_id"]: r for r in silver.filter(F.col("snapshot_date") == date(2011, 3, 5)).collect()}
    assert on["100"]["frequency"] == 2  # 1001 (two days) and 1003
    assert on["800"]["country"] == "Spain" and on["900"]["country"] is None
    first = silver.filter(F.col("snapshot_date") == date(2011, 3, 1)).filter("customer_id = '800'").first()
    assert first["country"] == "Belgium"  # tie 10.00 / 10.00: by name
    # the clv step's summary from the state, merged up to 03-05; 03-06 has no rows: the state holds it too
    bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    assert state_through(settings) == date(2011, 3, 5)
    assert holds_through(settings, bronze, date(2011, 3, 6))
    assert not holds_through(settings, bronze, date(2011, 3, 4)), "the state moved past 03-04"
    state, read = state_of(spark, settings, date(2011, 3, 6))
    assert list(read) == ["silver_customer_state"]
    value = {r["customer_id"]: r.asDict() for r in value_summary(state, date(2011, 3, 6)).collect()}
    # 800: Spain and Belgium on 03-01 are one purchase day (gross 20.00), then 0.50 on 03-04
    assert value["800"] == {"customer_id": "800", "frequency": 1.0, "recency": 3.0, "T": 5.0, "monetary_value": 0.5}
    # 100: 17.50 on 03-01, 4.00 on 03-02 (the invoice spanning days), 2.50 in France on 03-05
    assert value["100"] == {"customer_id": "100", "frequency": 2.0, "recency": 4.0, "T": 5.0, "monetary_value": 3.25}


def test_rerun_with_changed_day_and_older_rerun_converge(spark, settings) -> None:
    rows = frame_of(spark, LINES)
    bronze = settings.table_path("bronze_transactions")
    check_nights(spark, settings, rows, date(2011, 3, 1), date(2011, 3, 4))
    # 2011-03-04 lands again with other rows: 400's return gone, a new customer 950
    day = date(2011, 3, 4)
    changed = frame_of(spark, [line("9501", "21000", 3, day, "2.00", "950", "EIRE")])
    lake.replace_slice(changed, bronze, f"transaction_date = {lake.date_literal(day)}", "transaction_date")
    assert snapshot_mode(spark, settings, lake.read(spark, bronze), day) == "incremental"
    load_snapshot(spark, settings, day)
    assert differences(spark, settings, day) == 0 and value_differences(spark, settings, day) == 0
    # a re-run of an older date than the state's: the repair path, then nights go on incrementally
    assert snapshot_mode(spark, settings, lake.read(spark, bronze), date(2011, 3, 2)) == "full"
    load_snapshot(spark, settings, date(2011, 3, 2))
    assert differences(spark, settings, date(2011, 3, 2)) == 0
    assert value_differences(spark, settings, date(2011, 3, 2)) == 0, "the state moved past 03-02: from bronze"
    assert state_through(settings) == day
    nxt = day + timedelta(days=1)
    lake.replace_slice(
        rows.filter(F.col("transaction_date") == nxt),
        bronze,
        f"transaction_date = {lake.date_literal(nxt)}",
        "transaction_date",
    )
    assert snapshot_mode(spark, settings, lake.read(spark, bronze), nxt) == "incremental"
    load_snapshot(spark, settings, nxt)
    assert differences(spark, settings, nxt) == 0 and value_differences(spark, settings, nxt) == 0


def test_skipped_day_with_rows_takes_the_repair_path(spark, settings) -> None:
    rows = frame_of(spark, LINES)
    bronze = settings.table_path("bronze_transactions")
    check_nights(spark, settings, rows, date(2011, 3, 1), date(2011, 3, 1))
    # 03-02 is in bronze but was never merged: 03-03 cannot just add its own day
    for day in (date(2011, 3, 2), date(2011, 3, 3)):
        predicate = f"transaction_date = {lake.date_literal(day)}"
        lake.replace_slice(rows.filter(predicate), bronze, predicate, "transaction_date")
    assert snapshot_mode(spark, settings, lake.read(spark, bronze), date(2011, 3, 3)) == "full"
    load_snapshot(spark, settings, date(2011, 3, 3))
    assert differences(spark, settings, date(2011, 3, 3)) == 0


@pytest.mark.realdata
@pytest.mark.heavy
def test_real_month_nights_match_compute_rfm(spark, settings, real_data_path: Path) -> None:
    rows = typed_source(spark, settings, real_data_path)
    records = check_nights(spark, settings, rows, date(2011, 11, 1), date(2011, 11, 30), rerun_every=7)
    assert len(records) == 30 + 4
    assert [r for r in records if r["differences"] or r["value_differences"]] == []
