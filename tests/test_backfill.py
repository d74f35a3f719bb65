"""Backfill from a landing folder: the same history whatever the landing format."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.tools.backfill import backfill
from jobs.tools.generate import main as generate
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
