"""Step 2 — ingest the validated day into bronze, then compute the RFM snapshot into silver.

Extract: the landed day (only once its latest validation passed on these very bytes).
Transform: ``typed_rows`` (bronze, lossless) and ``compute_rfm`` (silver, pure).
Load: ``replaceWhere`` on the run date for bronze, silver and the run audit.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.adapters.audit import require_continuity, write_audit
from jobs.adapters.expectations import read_latest_report
from jobs.adapters.landing import data_files, fingerprint
from jobs.adapters.spark import get_spark
from jobs.adapters.transactions import (
    parse_transactions,
    read_landed_day,
    to_canonical_names,
    typed_rows,
)
from jobs.config import Settings, load_settings
from jobs.core.rfm import compute_rfm, exclusion_counts
from jobs.errors import LakeStateError


def require_validated(settings: Settings, run_date: date) -> None:
    """Refuse input whose latest validation failed, is missing, or saw other bytes."""
    report = read_latest_report(settings, run_date)
    files = data_files(settings.path("landing_dir"), run_date, settings.landing.format)
    if report is None or not report.success:
        raise LakeStateError(
            f"{run_date} has no passing validation: run `python -m jobs validate --run-date {run_date}` first"
        )
    if report.landing_fingerprint != fingerprint(files):
        raise LakeStateError(f"the landed files of {run_date} changed after validation: validate them again")


def extract_day(spark: SparkSession, settings: Settings, run_date: date) -> DataFrame:
    """The day's landed rows, typed."""
    return typed_rows(
        parse_transactions(to_canonical_names(read_landed_day(spark, settings, run_date), settings), settings)
    )


def load_snapshot(spark: SparkSession, settings: Settings, run_date: date) -> dict[str, int]:
    """Recompute silver RFM for ``run_date`` from bronze; returns the versions read and written."""
    bronze_path = settings.table_path("bronze_transactions")
    bronze_version = lake.current_version(spark, bronze_path)
    bronze = lake.read(spark, bronze_path, bronze_version)
    snapshot = compute_rfm(bronze, run_date, settings.rfm)
    silver_version = lake.replace_slice(
        snapshot,
        settings.table_path("silver_customer_rfm"),
        f"snapshot_date = {lake.date_literal(run_date)}",
        "snapshot_date",
    )
    return {"bronze_transactions": bronze_version, "silver_customer_rfm": silver_version}


def ingest_day(run_date: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Bronze partition of ``run_date``, its RFM snapshot and audit record; returns versions."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    require_validated(settings, run_date)
    require_continuity(spark, settings, run_date)
    day_rows = extract_day(spark, settings, run_date).cache()
    rows_in = day_rows.count()
    excluded = exclusion_counts(day_rows, settings.rfm)
    lake.replace_slice(
        day_rows,
        settings.table_path("bronze_transactions"),
        f"transaction_date = {lake.date_literal(run_date)}",
        "transaction_date",
    )
    day_rows.unpersist()
    versions = load_snapshot(spark, settings, run_date)
    customers = lake.read(spark, settings.table_path("silver_customer_rfm"), versions["silver_customer_rfm"])
    customers = customers.filter(F.col("snapshot_date") == F.lit(run_date)).count()
    write_audit(spark, settings, run_date, "ingest", rows_in, excluded, versions)
    return {
        "run_date": run_date.isoformat(),
        "rows_in": rows_in,
        "customers": customers,
        "excluded": excluded,
        **versions,
    }
