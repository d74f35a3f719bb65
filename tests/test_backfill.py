"""Backfill from a landing folder: the same history whatever the landing format."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from pyspark.sql import functions as F

from harness.generate import main as generate
from jobs.adapters import lake
from jobs.adapters.customer_state import state_through
from jobs.core.rfm import compute_rfm, snapshot_from_state
from jobs.definitions import TABLES
from jobs.errors import PermanentError
from jobs.ops import backfill as backfill_tool
from jobs.ops.backfill import backfill
from tests.conftest import settings_for

END = date(2011, 12, 9)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_backfill_of_a_landing_folder_loads_every_row_of_either_format(spark, tmp_path, fmt: str) -> None:
    settings = settings_for(tmp_path, landing={"format": fmt})
    landing = settings.path("landing_dir")
    argv = ["--customers", "40", "--days", "6", "--seed", "3", "--end-date", END.isoformat()]
    assert generate([*argv, "--landing-dir", str(landing), "--format", fmt]) == 0
    landed = sum(1 for _ in landing.glob("date=*/*." + ("parquet" if fmt == "parquet" else "csv*")))
    assert landed == 6, f"the generator landed {landed} {fmt} files"

    summary = backfill(landing, END, settings=settings, spark=spark)

    bronze = spark.read.format("delta").load(str(settings.table_path("bronze_transactions")))
    assert summary["rows"] == bronze.count() > 0
    assert bronze.agg(F.max("transaction_date")).first()[0] <= END


def test_backfill_applies_the_nightly_policies_per_day(spark, tmp_path) -> None:
    """A row that does not parse is quarantined under the same rule as a night; bronze never sees it."""
    settings = settings_for(tmp_path, validation={"quarantine_max_share": 0.5})
    landing = settings.path("landing_dir")
    argv = ["--customers", "40", "--days", "3", "--seed", "3", "--end-date", END.isoformat()]
    assert generate([*argv, "--landing-dir", str(landing)]) == 0
    busiest = max(landing.glob("date=*/*.csv"), key=lambda p: p.stat().st_size)
    rows = pd.read_csv(busiest, dtype=str, keep_default_na=False)
    rows.loc[0, "Quantity"] = "\uff16"  # full-width six
    rows.to_csv(busiest, index=False)

    summary = backfill(landing, END, settings=settings, spark=spark)

    assert summary["quarantined"] == 1
    held = spark.read.format("delta").load(str(settings.table_path("quarantine_transactions"))).collect()
    assert [(r["source_file"], r["source_row"]) for r in held] == [(f"{busiest.parent.name}/{busiest.name}", 1)]
    assert str(held[0]["run_date"]) == busiest.parent.name.removeprefix("date=")
    bronze = spark.read.format("delta").load(str(settings.table_path("bronze_transactions")))
    assert bronze.filter(F.col("quantity").isNull()).count() == 0
    assert summary["rows"] == bronze.count() + 1


def bronze_rows(spark, settings) -> list:
    return sorted(spark.read.format("delta").load(str(settings.table_path("bronze_transactions"))).collect(), key=str)


def test_backfill_twice_over_the_same_range_leaves_the_same_tables(spark, tmp_path) -> None:
    """The second `make run` re-runs the backfill over an existing bronze table (issue 12, item 11)."""
    settings = settings_for(tmp_path)
    landing = settings.path("landing_dir")
    argv = ["--customers", "30", "--days", "5", "--seed", "4", "--end-date", END.isoformat()]
    assert generate([*argv, "--landing-dir", str(landing)]) == 0

    first = backfill(landing, END, settings=settings, spark=spark)
    rows, audit = bronze_rows(spark, settings), audit_days(spark, settings)
    second = backfill(landing, END, settings=settings, spark=spark)

    assert second["bronze_transactions"] > first["bronze_transactions"], "the second backfill wrote nothing"
    assert bronze_rows(spark, settings) == rows
    assert audit_days(spark, settings) == audit


def audit_days(spark, settings) -> list[tuple]:
    audit = spark.read.format("delta").load(str(settings.table_path("run_audit")))
    return sorted((r["run_date"], r["step"], r["rows_in"]) for r in audit.collect())


def test_backfill_validates_chunk_by_chunk_and_builds_state_and_daily_tables(spark, tmp_path, monkeypatch) -> None:
    settings = settings_for(tmp_path)
    landing = settings.path("landing_dir")
    argv = ["--customers", "40", "--days", "9", "--seed", "5", "--end-date", END.isoformat()]
    assert generate([*argv, "--landing-dir", str(landing)]) == 0
    collected: list[int] = []
    real_collect = backfill_tool.collect_chunk

    def spy(staged, days):
        frame = real_collect(staged, days)
        collected.append(len(frame))
        return frame

    monkeypatch.setattr(backfill_tool, "collect_chunk", spy)
    summary = backfill(landing, END, settings=settings, spark=spark, chunk_rows=60)

    bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    largest_day = bronze.groupBy("transaction_date").count().agg(F.max("count")).first()[0]
    assert sum(collected) == summary["rows"] == bronze.count()
    assert len(collected) > 2 and max(collected) <= max(60, largest_day), "the history was collected at once"
    assert summary["days"] == (END - date.fromisoformat(summary["from"])).days + 1 and not list(
        settings.path("data_dir").glob(".backfill-staging-*")
    )
    # the state and the daily tables of the history are there: the first night can merge into them
    assert state_through(settings) == END
    state = lake.read(spark, settings.table_path("silver_customer_state"))
    derived = snapshot_from_state(state, END, settings.rfm)
    reference = compute_rfm(bronze, END, settings.rfm)
    assert derived.count() > 10 and derived.exceptAll(reference).count() == reference.exceptAll(derived).count() == 0
    sales = lake.read(spark, settings.table_path("silver_daily_sales"))
    assert sales.agg(F.sum("bronze_rows")).first()[0] == bronze.count()


def test_backfill_with_a_bad_day_writes_nothing(spark, tmp_path) -> None:
    settings = settings_for(tmp_path)
    landing = settings.path("landing_dir")
    argv = ["--customers", "30", "--days", "5", "--seed", "5", "--end-date", END.isoformat()]
    assert generate([*argv, "--landing-dir", str(landing)]) == 0
    last = sorted(landing.glob("date=*"))[-1]
    data = next(last.glob("*.csv"))
    frame = pd.read_csv(data, dtype=str, keep_default_na=False)
    frame.loc[0, "Quantity"] = "lots"  # the last day (the last chunk) does not parse
    frame.to_csv(data, index=False)
    with pytest.raises(PermanentError, match=last.name[5:]):
        backfill(landing, END, settings=settings, spark=spark, chunk_rows=100)
    for name in TABLES:
        assert lake.current_version(settings.table_path(name)) is None, name
