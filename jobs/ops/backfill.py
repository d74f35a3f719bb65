"""History in one pass: validate every day up to a date and load them into bronze at once.

``python -m jobs.ops.backfill --source PATH --until YYYY-MM-DD [--from YYYY-MM-DD]``

The source is an export file (CSV, CSV.gz, Parquet) or a landing folder of ``date=…/``
days. One Spark session reads and parses it once into a staging Parquet copy partitioned by
day (under the data dir, removed afterwards); the suite then checks each calendar day apart
(a result per day, like the nightly run), collecting one chunk of days at a time
(``--chunk-rows``), so the driver never holds the history. Only when every day passed are
the bronze partitions written, in one Delta commit, with one audit record per day; then the
daily sales tables and the customer state are built from bronze. A failed day leaves the
lake untouched; a crash after the bronze commit is repaired by running the backfill again.

Backfill follows the lake's continuity rule (``jobs.adapters.audit``): it never overwrites a
day the nightly run ingested, never leaves a gap, and re-loads history that later days were
computed from only when the rows are unchanged (so a second ``make run`` works).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import storage
from jobs.adapters import lake
from jobs.adapters.audit import AuditRecord, audit_frame, gap_problem, loaded_days, rerun_from, stale_problem
from jobs.adapters.customer_state import rebuild_state
from jobs.adapters.daily_tables import write_daily_tables
from jobs.adapters.expectations import (
    SuiteRunner,
    check_day,
    raise_if_failed,
    validation_frame,
)
from jobs.adapters.inventory import list_folder
from jobs.adapters.landing import data_files, fingerprint
from jobs.adapters.quarantine import quarantine_keys, split_quarantined, write_quarantine
from jobs.adapters.spark import get_spark
from jobs.adapters.transactions import read_files, typed_rows
from jobs.cli import EXIT_PERMANENT_FAILURE, configure_logging
from jobs.config import Settings, load_settings
from jobs.core.rfm import EXCLUSION_REASONS, exclusion_reason
from jobs.definitions import QUARANTINED, days_between
from jobs.errors import DataValidationError, LakeStateError, PermanentError
from jobs.storage import Location

log = logging.getLogger(__name__)


def read_source(
    spark: SparkSession, source: Location, landing_format: str = "csv", settings: Settings | None = None
) -> DataFrame:
    """Every row of an export file, or of all days of a landing folder (``landing_format``), as text.

    Each file is mapped to canonical names by its own header (``read_files``); rows carry their
    file (``date=…/name`` in a landing folder) and row number, the key of a quarantined row.
    """
    settings = settings or load_settings()
    if source.is_dir():
        files = source_files(source, landing_format)
        labels = [f"{p.parent.name}/{p.name}" for p in files]
        return read_files(spark, settings, files, landing_format, labels)
    return read_files(spark, settings, [source], "parquet" if source.suffix == ".parquet" else "csv")


def source_files(source: Location, landing_format: str = "csv") -> list[Location]:
    """The export file, or every data file of a landing folder's days (one listing of the folder
    or prefix, then one of each day's)."""
    if not source.is_dir():
        return [source]
    days = [
        name
        for name, entry in list_folder(source).items()
        if entry.kind.startswith("a folder") and name.startswith("date=")
    ]
    return [p for name in days for p in data_files(source, date.fromisoformat(name[5:]), landing_format)]


def source_fingerprint(source: Location, landing_format: str = "csv") -> str:
    """Identity of the source recorded in each day's validation report; checks every file is readable."""
    return f"backfill:{fingerprint(source_files(source, landing_format))}"


class Progress:
    """Days done out of days to do, rows per second and the time left, logged about every 5 %."""

    def __init__(self, days: int, verb: str) -> None:
        self.days, self.verb, self.done, self.rows = days, verb, 0, 0
        self.started = time.monotonic()
        self.every = max(days // 20, 1)

    def advance(self, rows: int, day: date) -> None:
        """One more day done, with its rows."""
        self.done, self.rows = self.done + 1, self.rows + rows
        if self.done % self.every and self.done != self.days:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        left = elapsed / self.done * (self.days - self.done)
        log.info(
            "%s %d/%d days (up to %s), %d rows, %.0f rows/s, ETA %.0f s",
            self.verb,
            self.done,
            self.days,
            day,
            self.rows,
            self.rows / elapsed,
            left,
        )


def first_day(parsed: DataFrame) -> date | None:
    """The earliest invoice date of a parsed source (None when it has no dated row)."""
    return parsed.filter(F.col("invoice_date").isNotNull()).agg(F.min(F.to_date("invoice_date"))).first()[0]


DAY_COLUMN = "_day"
DEFAULT_CHUNK_ROWS = 500_000


def split_by_day(frame: pd.DataFrame, first: date, until: date) -> dict[date, pd.DataFrame]:
    """The validation frame's rows per calendar day in [first, until] (days without rows: empty)."""
    days = frame["invoice_date"].dt.date
    return {day: frame[days == day] for day in days_between(first, until)}


def plan_chunks(rows_per_day: dict[date, int], days: list[date], max_rows: int) -> list[list[date]]:
    """Consecutive days grouped so a chunk holds at most ``max_rows`` rows (a larger day stands alone)."""
    chunks: list[list[date]] = []
    current: list[date] = []
    held = 0
    for day in days:
        rows = rows_per_day.get(day, 0)
        if current and held + rows > max_rows:
            chunks.append(current)
            current, held = [], 0
        current.append(day)
        held += rows
    if current:
        chunks.append(current)
    return chunks


def stage_by_day(parsed: DataFrame, first: date, until: date, staging: Location) -> DataFrame:
    """The source's rows in [first, until] written once as Parquet partitioned by day, read back."""
    in_range = F.col(DAY_COLUMN).between(F.lit(first), F.lit(until))
    dated = parsed.withColumn(DAY_COLUMN, F.to_date("invoice_date")).filter(in_range)
    dated.write.mode("overwrite").partitionBy(DAY_COLUMN).parquet(storage.spark_uri(staging))
    return parsed.sparkSession.read.parquet(storage.spark_uri(staging))


def collect_chunk(staged: DataFrame, days: list[date]) -> pd.DataFrame:
    """One chunk of days to the driver (partition pruning reads only their files)."""
    return staged.filter(F.col(DAY_COLUMN).isin(days)).drop(DAY_COLUMN).toPandas()


def validate_history(
    staged: DataFrame,
    settings: Settings,
    first: date,
    until: date,
    fingerprint: str,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> tuple[int, list[dict[str, Any]]]:
    """Validate each day under the nightly policies, one chunk of days in memory at a time; raise
    naming every failed day.

    Returns the number of days checked and the rows held back (the reports' ``quarantined``). A day larger than ``validation.max_rows_per_day`` is
    refused before anything is collected.
    """
    counts = {r[DAY_COLUMN]: r["count"] for r in staged.groupBy(DAY_COLUMN).count().collect()}
    limit = settings.validation.max_rows_per_day
    too_large = {day: rows for day, rows in counts.items() if rows > limit}
    if too_large:
        raise DataValidationError(
            f"days with more rows than validation.max_rows_per_day={limit}: {too_large}; nothing was written"
        )
    days = days_between(first, until)
    progress = Progress(len(days), "validated")
    reports = []
    with SuiteRunner(settings) as runner:  # on a bucket: its temporary GX project is published, then removed
        for chunk in plan_chunks(counts, days, chunk_rows):
            frame = collect_chunk(staged, chunk)
            for day, rows in split_by_day(frame, chunk[0], chunk[-1]).items():
                reports.append(check_day(runner, rows, day, fingerprint))
                progress.advance(len(rows), day)
            del frame
        runner.build_data_docs()
    raise_if_failed(reports)
    return len(reports), [entry for report in reports for entry in report.quarantined]


def require_backfill_allowed(
    spark: SparkSession, settings: Settings, rows: DataFrame, first: date, until: date
) -> None:
    """The continuity rule for a backfill of ``first``..``until`` (see the module docstring)."""
    loaded = loaded_days(spark, settings)
    nightly = [day for day in days_between(first, until) if loaded.get(day) == "ingest"]
    if nightly:
        raise LakeStateError(
            f"{len(nightly)} day(s) of {first}..{until} were ingested by the nightly run ({nightly[0]} .. "
            f"{nightly[-1]}): backfill loads history before them only; re-run nightly days with "
            f"`make rerun FROM={nightly[0]}`"
        )
    problem = gap_problem(set(loaded), first, until)
    if problem is None:
        stale = stale_problem(set(loaded), first, until, rerun_from(settings))
        problem = stale if stale and not bronze_unchanged(spark, settings, rows, first, until) else None
    if problem:
        raise LakeStateError(f"backfill of {first}..{until} refused: {problem}")


def bronze_unchanged(spark: SparkSession, settings: Settings, rows: DataFrame, first: date, until: date) -> bool:
    """Whether bronze already holds exactly ``rows`` for ``first``..``until`` (as a multiset)."""
    path = settings.table_path("bronze_transactions")
    if not lake.exists(path):
        return rows.isEmpty()
    current = lake.read(spark, path).filter(F.col("transaction_date").between(F.lit(first), F.lit(until)))
    current = current.select(*rows.columns) if set(rows.columns) <= set(current.columns) else None
    return current is not None and rows.exceptAll(current).isEmpty() and current.exceptAll(rows).isEmpty()


def load_history(
    spark: SparkSession,
    settings: Settings,
    parsed: DataFrame,
    first: date,
    until: date,
    quarantined: list[dict[str, Any]] | None = None,
    fingerprint: str = "",
) -> dict[str, Any]:
    """Bronze partitions [first, until] in one commit, then one audit record per day.

    With ``quarantined`` (validation's held-back rows) those rows go to the quarantine's slices
    of [first, until] instead of bronze.
    """
    window = F.col("transaction_date").between(F.lit(first), F.lit(until))
    held_per_day: dict[date, int] = {}
    if quarantined is not None:
        keys = quarantine_keys(spark, quarantined)
        parsed, held = split_quarantined(parsed, keys, F.to_date("invoice_date"), fingerprint)
        write_quarantine(held, settings, first, until)
        held_per_day = {r["run_date"]: r["count"] for r in held.groupBy("run_date").count().collect()}
    rows = typed_rows(parsed).filter(window).cache()
    require_backfill_allowed(spark, settings, rows, first, until)
    predicate = lake.date_range_predicate("transaction_date", first, until)
    bronze_version = lake.replace_slice(rows, settings.table_path("bronze_transactions"), predicate, "transaction_date")
    reasons = rows.withColumn("reason", exclusion_reason(settings.rfm))
    per_day = reasons.groupBy("transaction_date", "reason").count().collect()
    counts: dict[date, dict[str, int]] = {
        day: dict.fromkeys(EXCLUSION_REASONS, 0) for day in days_between(first, until)
    }
    totals = dict.fromkeys(counts, 0)
    for row in per_day:
        totals[row["transaction_date"]] += row["count"]
        if row["reason"] is not None:
            counts[row["transaction_date"]][row["reason"]] = row["count"]
    records = []
    for day, excluded in counts.items():
        if quarantined is not None:
            excluded[QUARANTINED] = held_per_day.get(day, 0)
            totals[day] += held_per_day.get(day, 0)
        records.append(AuditRecord(day, "backfill", totals[day], excluded, {"bronze_transactions": bronze_version}))
    audit_predicate = f"{lake.date_range_predicate('run_date', first, until)} AND step = 'backfill'"
    audit_version = lake.replace_slice(
        audit_frame(spark, records), settings.table_path("run_audit"), audit_predicate, "run_date"
    )
    rows.unpersist()
    return {"bronze_transactions": bronze_version, "run_audit": audit_version, "rows": sum(totals.values())}


def backfill(
    source: Location,
    until: date,
    first: date | None = None,
    settings: Settings | None = None,
    spark: SparkSession | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, Any]:
    """Validate and load the source's days up to ``until`` (from its first day, or ``first``),
    then build the daily sales tables and the customer state of the history."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    pinned = source_fingerprint(source, settings.landing.format)  # before Spark reads: unreadable files fail here
    parsed = validation_frame(read_source(spark, source, settings.landing.format, settings), settings)
    unparsed = parsed.filter(F.col("invoice_date").isNull()).count()
    if unparsed:
        raise DataValidationError(f"{unparsed} rows have a missing or unparseable InvoiceDate; nothing was written")
    first = first or first_day(parsed)
    if first is None or first > until:
        raise DataValidationError(f"{source} has no rows on or before {until}")
    with storage.scratch(settings.path("data_dir"), "backfill-") as staging:
        staged = stage_by_day(parsed, first, until, staging / "rows")
        days_checked, quarantined = validate_history(staged, settings, first, until, pinned, chunk_rows)
        written = load_history(spark, settings, staged.drop(DAY_COLUMN), first, until, quarantined, pinned)
    written.update(write_daily_tables(spark, settings, first, until))
    bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    written["silver_customer_state"] = rebuild_state(spark, settings, bronze)
    return {
        "source": str(source),
        "from": first.isoformat(),
        "until": until.isoformat(),
        "days": days_checked,
        "quarantined": len(quarantined),
        **written,
    }


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = argparse.ArgumentParser(description="Validate and load history up to a date in one pass.")
    parser.add_argument("--source", required=True, help="export file or landing folder (a path or s3://…)")
    parser.add_argument("--until", required=True, type=date.fromisoformat, help="last day to load, YYYY-MM-DD")
    parser.add_argument("--from", dest="first", type=date.fromisoformat, help="first day (default: the source's)")
    parser.add_argument(
        "--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows validated in memory at a time (whole days)"
    )
    args = parser.parse_args(argv)
    try:
        source = storage.location(args.source, load_settings().storage)
        summary = backfill(source, args.until, args.first, chunk_rows=args.chunk_rows)
    except PermanentError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return EXIT_PERMANENT_FAILURE
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
