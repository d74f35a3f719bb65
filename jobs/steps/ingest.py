"""Step 2 — ingest the validated day into bronze, then compute the RFM snapshot into silver.

Extract: the landed day (only once its latest validation passed on these very bytes).
Transform: rows the validation quarantined are split off; ``typed_rows`` (bronze, lossless);
the day's ``contributions`` merged into the customer state (``merge_day``) and the snapshot
derived from it (``snapshot_from_state``), or ``compute_rfm`` over bronze on the repair path
(``--full``).
Load: ``replaceWhere`` on the run date for the quarantine, bronze, silver and the run audit; one
MERGE into ``silver/customer_state``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.adapters.audit import require_continuity, write_audit
from jobs.adapters.customer_state import load_snapshot
from jobs.adapters.daily_tables import write_daily_tables
from jobs.adapters.expectations import ValidationReport, read_latest_report
from jobs.adapters.landing import day_inventory
from jobs.adapters.quarantine import quarantine_keys, split_quarantined, write_quarantine
from jobs.adapters.spark import get_spark
from jobs.adapters.transactions import parse_transactions, read_landed_day, typed_rows
from jobs.config import Settings, load_settings
from jobs.core.rfm import exclusion_counts
from jobs.definitions import BRONZE_ROWS, DUPLICATES_DROPPED, LANDED_RECORDS, QUARANTINED, SOURCE_FILE, SOURCE_ROW
from jobs.errors import DataValidationError, LakeStateError, LandingChangedError


def require_validated(settings: Settings, run_date: date) -> ValidationReport:
    """The latest validation report of ``run_date``; refused when it failed, is missing, or saw other bytes."""
    report = read_latest_report(settings, run_date)
    if report is None or not report.success:
        raise LakeStateError(
            f"{run_date} has no passing validation: run `python -m jobs validate --run-date {run_date}` first"
        )
    require_unchanged(settings, run_date, report)
    return report


def require_unchanged(settings: Settings, run_date: date, report: ValidationReport) -> None:
    """Refuse when the landed files are not the bytes the report validated (the inventory is taken
    again: an entry added since, a symlink or a bound crossed, fails here too)."""
    if report.landing_fingerprint != day_inventory(settings, run_date).fingerprint:
        raise LandingChangedError(f"the landed files of {run_date} changed after validation: validate them again")


def extract_day(
    spark: SparkSession, settings: Settings, run_date: date, report: ValidationReport
) -> tuple[DataFrame, DataFrame]:
    """(the day's typed rows to load, its quarantine records), read once and pinned.

    The parsed rows are checkpointed (so never read again), then the files are hashed again:
    what is loaded is exactly what was validated.
    """
    parsed = parse_transactions(read_landed_day(spark, settings, run_date), settings).localCheckpoint()
    require_unchanged(settings, run_date, report)
    keys = quarantine_keys(spark, report.quarantined)
    kept, held = split_quarantined(parsed, keys, F.lit(run_date), report.landing_fingerprint)
    require_accounted(run_date, report, kept, held)
    return typed_rows(kept), held


def require_accounted(run_date: date, report: ValidationReport, kept: DataFrame, held: DataFrame) -> None:
    """Per file: the strict reader's records (kept in the report) = rows to load + rows quarantined
    (+ exact duplicates dropped: none, bronze keeps them). Else ``DataValidationError`` naming the
    file and the first record number missing or extra."""
    if not report.records:
        return  # a report from before the inventory: validate again to account for the day
    rows = kept.select(SOURCE_FILE, SOURCE_ROW).unionByName(held.select(SOURCE_FILE, SOURCE_ROW))
    counted = {
        r[SOURCE_FILE]: (int(r["n"]), int(r["lo"]), int(r["hi"]))
        for r in rows.groupBy(SOURCE_FILE)
        .agg(F.count("*").alias("n"), F.min(SOURCE_ROW).alias("lo"), F.max(SOURCE_ROW).alias("hi"))
        .collect()
    }
    for name in sorted(set(report.records) | set(counted)):
        expected = report.records.get(name, 0)
        n, lo, hi = counted.get(name, (0, 1, 0))
        if (n, lo, hi) == (expected, 1, expected) or (n == expected == 0):
            continue
        numbers = {r[0] for r in rows.filter(F.col(SOURCE_FILE) == name).select(SOURCE_ROW).collect()}
        missing = next((i for i in range(1, expected + 1) if i not in numbers), None)
        where = (
            f"record {missing} is missing"
            if missing
            else f"record {min(numbers - set(range(1, expected + 1)))} is extra"
        )
        raise DataValidationError(
            f"{run_date}: {name!r}: the strict reader counted {expected} records, bronze + quarantine hold {n}; {where}"
        )


def ingest_day(
    run_date: date, settings: Settings | None = None, spark: SparkSession | None = None, full: bool = False
) -> dict[str, Any]:
    """Bronze partition of ``run_date``, its RFM snapshot and audit record; returns versions.

    ``full``: recompute the snapshot and the customer state from bronze (the repair path).
    """
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    report = require_validated(settings, run_date)
    require_continuity(spark, settings, run_date)
    day_rows, held = extract_day(spark, settings, run_date, report)
    day_rows, held = day_rows.cache(), held.cache()
    rows_in, quarantined = day_rows.count(), held.count()
    if quarantined != report.quarantined_rows:
        raise LakeStateError(f"{run_date}: {quarantined} rows matched the {report.quarantined_rows} quarantined")
    excluded = {**exclusion_counts(day_rows, settings.rfm), QUARANTINED: quarantined}
    quarantine_version = write_quarantine(held, settings, run_date)
    lake.replace_slice(
        day_rows,
        settings.table_path("bronze_transactions"),
        f"transaction_date = {lake.date_literal(run_date)}",
        "transaction_date",
    )
    held.unpersist()
    day_rows.unpersist()
    versions = {**load_snapshot(spark, settings, run_date, full), "quarantine_transactions": quarantine_version}
    versions.update(write_daily_tables(spark, settings, run_date, run_date))
    customers = lake.read(spark, settings.table_path("silver_customer_rfm"), versions["silver_customer_rfm"])
    customers = customers.filter(F.col("snapshot_date") == F.lit(run_date)).count()
    accounting = {
        LANDED_RECORDS: sum(report.records.values()),
        BRONZE_ROWS: rows_in,
        DUPLICATES_DROPPED: 0,  # bronze keeps exact duplicates (RFM leaves them out: ``excluded``)
    }
    write_audit(
        spark,
        settings,
        run_date,
        "ingest",
        rows_in + quarantined,
        {**excluded, **accounting},
        versions,
        report.landing_fingerprint,
    )
    return {
        "run_date": run_date.isoformat(),
        "rows_in": rows_in + quarantined,
        "quarantined": quarantined,
        "customers": customers,
        "excluded": excluded,
        "accounting": accounting,
        **versions,
    }
