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

import logging
from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.adapters.audit import require_continuity, write_audit
from jobs.adapters.customer_state import has_rows_between, state_through, watermark
from jobs.adapters.expectations import ValidationReport, read_latest_report
from jobs.adapters.landing import data_files, fingerprint
from jobs.adapters.quarantine import quarantine_keys, split_quarantined, write_quarantine
from jobs.adapters.spark import get_spark
from jobs.adapters.transactions import (
    parse_transactions,
    read_landed_day,
    typed_rows,
)
from jobs.config import Rfm, Settings, load_settings
from jobs.core.daily import DAILY_TABLES, DAY_ROWS, daily_sql
from jobs.core.rfm import (
    STATE_COLUMNS,
    STATE_KEY,
    compute_rfm,
    considered_lines,
    contributions,
    exclusion_counts,
    is_purchase,
    merge_day,
    money_type,
    snapshot_from_state,
    state_from_contributions,
    state_schema,
)
from jobs.definitions import QUARANTINED
from jobs.errors import LakeStateError, LandingChangedError

log = logging.getLogger(__name__)


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
    """Refuse when the landed files are not the bytes the report validated."""
    files = data_files(settings.path("landing_dir"), run_date, settings.landing.format)
    if report.landing_fingerprint != fingerprint(files):
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
    return typed_rows(kept), held


def load_snapshot(spark: SparkSession, settings: Settings, run_date: date, full: bool = False) -> dict[str, int]:
    """Silver RFM of ``run_date`` and the customer state; returns the versions read and written.

    Incremental (the day's bronze rows merged into ``silver/customer_state``, the snapshot
    derived from it) unless ``full``, ``rfm.incremental`` is off, or the state cannot take
    the day (see ``snapshot_mode``): then ``compute_rfm`` over bronze and a state rebuilt
    from bronze, the repair path.
    """
    bronze_path = settings.table_path("bronze_transactions")
    bronze_version = lake.current_version(bronze_path)
    bronze = lake.read(spark, bronze_path, bronze_version)
    mode = "full" if full or not settings.rfm.incremental else snapshot_mode(spark, settings, bronze, run_date)
    if mode == "full":
        snapshot = compute_rfm(bronze, run_date, settings.rfm)
        state_version = rebuild_state(spark, settings, bronze)
    else:
        state_version = merge_state(spark, settings, bronze, run_date)
        state = lake.read(spark, settings.table_path("silver_customer_state"), state_version)
        snapshot = snapshot_from_state(state, run_date, settings.rfm)
    silver_version = lake.replace_slice(
        snapshot,
        settings.table_path("silver_customer_rfm"),
        f"snapshot_date = {lake.date_literal(run_date)}",
        "snapshot_date",
    )
    log.info("silver snapshot of %s: %s path", run_date, mode)
    return {
        "bronze_transactions": bronze_version,
        "silver_customer_state": state_version,
        "silver_customer_rfm": silver_version,
    }


# ---------------------------------------------------------------- daily aggregates for the EDA report


def write_daily_tables(spark: SparkSession, settings: Settings, first: date, last: date) -> dict[str, int]:
    """The daily sales tables (``jobs.core.daily``) of bronze's days [first, last], each slice
    replaced by date; returns the versions written."""
    bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    rows = bronze.filter(F.col("transaction_date").between(F.lit(first), F.lit(last))).cache()  # read once, four tables
    rows.createOrReplaceTempView(DAY_ROWS)
    predicate = lake.date_range_predicate("transaction_date", first, last)
    versions = {}
    for name, sql in daily_sql(settings.rfm, money_type(settings.rfm)).items():
        table = DAILY_TABLES[name]
        versions[table] = lake.replace_slice(spark.sql(sql), settings.table_path(table), predicate, "transaction_date")
    spark.catalog.dropTempView(DAY_ROWS)
    rows.unpersist()
    return versions


# ---------------------------------------------------------------- incremental RFM: the customer state


def snapshot_mode(spark: SparkSession, settings: Settings, bronze: DataFrame, run_date: date) -> str:
    """``incremental`` when the state is through ``run_date - 1`` (or through ``run_date``: a
    re-run) with no bronze rows between its watermark and ``run_date``; ``full`` otherwise (no
    state yet, a state without today's columns, a re-run of a date older than the state, or skipped
    days with rows)."""
    through = state_through(settings)
    if through is not None:
        missing = set(STATE_COLUMNS) - set(lake.read(spark, settings.table_path("silver_customer_state")).columns)
        if missing:
            log.warning("the state lacks %s (an older version wrote it): rebuilding it from bronze", sorted(missing))
            return "full"
    if through is None or through > run_date:
        log.warning("state through %s cannot take %s incrementally: recomputing from bronze", through, run_date)
        return "full"
    if has_rows_between(bronze, through + timedelta(days=1), run_date - timedelta(days=1)):
        log.warning("bronze has rows after the state's %s and before %s: recomputing from bronze", through, run_date)
        return "full"
    return "incremental"


def counted_before(bronze: DataFrame, day_rows: DataFrame, run_date: date, rules: Rfm) -> DataFrame | None:
    """(customer_id, invoice) of the day's purchase invoices already counted on an earlier date.

    Invoices never span days in the real data; this finds the ones that do so they are not
    counted twice. The invoice range of the day bounds the scan (Delta file statistics skip
    the files of other ranges). None when the day has no purchase line.
    """
    day_invoices = considered_lines(day_rows, rules).filter(is_purchase(rules)).select("customer_id", "invoice")
    low, high = day_invoices.agg(F.min("invoice"), F.max("invoice")).first()
    if low is None:
        return None
    earlier = bronze.filter((F.col("transaction_date") < F.lit(run_date)) & F.col("invoice").between(low, high))
    earlier = considered_lines(earlier, rules).filter(is_purchase(rules)).select("customer_id", "invoice")
    return earlier.join(day_invoices.distinct(), ["customer_id", "invoice"], "left_semi")


def merge_state(spark: SparkSession, settings: Settings, bronze: DataFrame, run_date: date) -> int:
    """Merge the day's bronze rows into the customer state in one MERGE; returns the state version."""
    path = settings.table_path("silver_customer_state")
    day_rows = bronze.filter(F.col("transaction_date") == F.lit(run_date))
    day = contributions(day_rows, settings.rfm, counted_before(bronze, day_rows, run_date, settings.rfm))
    changes = merge_day(lake.read(spark, path), day, run_date, settings.rfm)
    return lake.merge_by_key(changes, path, STATE_KEY, "delete", watermark(run_date))


def rebuild_state(spark: SparkSession, settings: Settings, bronze: DataFrame) -> int:
    """The customer state from all of bronze, in one overwrite; watermark: bronze's latest date."""
    latest = bronze.agg(F.max("transaction_date")).first()[0]
    if latest is None:
        state = spark.createDataFrame([], state_schema(settings.rfm))
        latest = date.min
    else:
        state = state_from_contributions(contributions(bronze, settings.rfm), settings.rfm)
    return lake.overwrite(state.select(*STATE_COLUMNS), settings.table_path("silver_customer_state"), watermark(latest))


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
    write_audit(
        spark, settings, run_date, "ingest", rows_in + quarantined, excluded, versions, report.landing_fingerprint
    )
    return {
        "run_date": run_date.isoformat(),
        "rows_in": rows_in + quarantined,
        "quarantined": quarantined,
        "customers": customers,
        "excluded": excluded,
        **versions,
    }
