"""The run audit (``audit/run_audit``): one record per (run date, step) of what it read, left out and wrote."""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.config import Settings
from jobs.errors import LakeStateError


def audit_row(
    spark: SparkSession, run_date: date, step: str, rows_in: int, excluded: dict[str, int], versions: dict[str, int],
    input_fingerprint: str | None = None,
) -> DataFrame:  # fmt: skip
    """One run-audit record: what a step read (and the fingerprint of the landed bytes), left out and wrote."""
    schema = (
        "run_date date, step string, rows_in bigint, excluded_rows map<string,bigint>, "
        "table_versions map<string,bigint>, recorded_at timestamp, input_fingerprint string"
    )
    row = (run_date, step, rows_in, excluded, versions, None, input_fingerprint)
    return spark.createDataFrame([row], schema).withColumn("recorded_at", F.current_timestamp())


def write_audit(spark: SparkSession, settings: Settings, run_date: date, step: str, rows_in: int,
                excluded: dict[str, int], versions: dict[str, int], input_fingerprint: str | None = None) -> int:  # fmt: skip
    """Replace the audit record of (run date, step)."""
    predicate = f"run_date = {lake.date_literal(run_date)} AND step = '{step}'"
    record = audit_row(spark, run_date, step, rows_in, excluded, versions, input_fingerprint)
    return lake.replace_slice(record, settings.table_path("run_audit"), predicate, "run_date")


def audited_dates(spark: SparkSession, settings: Settings, step: str = "ingest") -> set[date]:
    """Run dates the given step has completed (from the run audit)."""
    path = settings.table_path("run_audit")
    if not lake.exists(spark, path):
        return set()
    rows = lake.read(spark, path).filter(F.col("step") == step).select("run_date").distinct().collect()
    return {row["run_date"] for row in rows}


def require_previous_day(spark: SparkSession, settings: Settings, run_date: date) -> None:
    """Refuse to build on a lake that misses the day before (unless nothing was ever loaded)."""
    loaded = audited_dates(spark, settings)
    if loaded and run_date - timedelta(days=1) not in loaded and min(loaded) < run_date:
        raise LakeStateError(
            f"the lake has no ingested {run_date - timedelta(days=1)}: run that day first "
            f"(latest ingested: {max(d for d in loaded if d < run_date)})"
        )
