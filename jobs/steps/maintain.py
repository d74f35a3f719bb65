"""Lake maintenance: compact small files (OPTIMIZE), then delete the files no kept version needs (VACUUM).

``python -m jobs maintain --run-date D`` · ``make maintain`` · the weekly ``lake_maintenance`` DAG.

Which versions are kept (``maintenance`` in ``conf/``):

- every table version a record of a recent run date still names: the run audit's
  ``table_versions``, the publish record's gold versions and the night's MLflow run
  (``input_version`` of silver RFM), for run dates within ``reproducible_days`` of the newest one,
  so a re-run of such a date reads exactly what it read before;
- a published snapshot older than that window is re-pinned to the oldest kept version of each gold
  table when no commit in between touched its date (so the dashboard still shows it); one that was
  touched keeps its version, which is then kept too;
- never less than ``min_retention_hours`` (Delta's own safety margin against deleting the files of
  a write still in flight).

VACUUM's retention is time-based: the retention of a table is the age of the commit of its oldest
kept version. OPTIMIZE rewrites no data (``dataChange = false``), so pinned readers are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs import storage
from jobs.adapters import lake
from jobs.adapters.spark import get_spark
from jobs.config import Settings, load_settings
from jobs.definitions import RUN_DATE_TAG, TABLE_VERSION_PARAMS, TABLES

PINNING_TABLES = ("run_audit", "gold_published")  # their rows name table versions: (run date, {table: version})
DELTA_LOG_DEFAULT_DAYS = 30  # delta.logRetentionDuration when a table does not set it
CLOCK_MARGIN = timedelta(minutes=5)  # commit timestamps and file times come from different clocks


@dataclass(frozen=True)
class FileCount:
    """The parquet files of a table on disk, and those its current version reads."""

    files: int
    bytes: int
    active_files: int


@dataclass(frozen=True)
class TableReport:
    table: str
    kept_from_version: int | None
    retention_hours: int
    before: FileCount
    after: FileCount


# ---------------------------------------------------------------- which versions are kept (pure)


def oldest_kept_versions(references: Iterable[tuple[date, str, int]], window_start: date | None) -> dict[str, int]:
    """Per table, the oldest version a reference of a run date on or after ``window_start`` names
    (every reference when ``window_start`` is None)."""
    kept: dict[str, int] = {}
    for run_date, table, version in references:
        if window_start is None or run_date >= window_start:
            kept[table] = min(version, kept.get(table, version))
    return kept


def retention_hours(oldest_kept_commit: datetime | None, now: datetime, minimum_hours: float) -> int:
    """The retention in whole hours (Delta truncates fractions): the age of the oldest kept version's
    commit plus ``minimum_hours``, rounded up. Delta 4 refuses to time travel to a version older
    than the retention (``vacuum.enforceTimeTravelWithinDeletedFileRetentionDuration``), files or
    not, so the kept versions must stay inside it until the next run (``minimum_hours`` ≥ the
    weekly schedule), not only today."""
    if oldest_kept_commit is None:
        return math.ceil(minimum_hours)
    age = (now - oldest_kept_commit + CLOCK_MARGIN).total_seconds() / 3600
    return math.ceil(age + minimum_hours)


def slice_untouched(commits: list[dict[str, Any]], day: date, after: int, through: int) -> bool:
    """Whether no commit in (after, through] may have changed the rows of ``day``: compactions change
    no data; a write is harmless only when its predicate names another date."""
    for commit in commits:
        if not after < commit["version"] <= through:
            continue
        if commit["operation"] == "OPTIMIZE":
            continue
        predicate = (commit.get("operationParameters") or {}).get("predicate") or ""
        if not predicate or day.isoformat() in predicate:
            return False
    return True


# ---------------------------------------------------------------- reading the lake and MLflow


def version_references(spark: SparkSession, settings: Settings) -> list[tuple[date, str, int]]:
    """(run date, table, version) named by the run audit, the publish records and the night runs in MLflow."""
    references: list[tuple[date, str, int]] = []
    for name in PINNING_TABLES:
        path = settings.table_path(name)
        if not lake.exists(path):
            continue
        date_column = "run_date" if name == "run_audit" else "snapshot_date"
        rows = lake.read(spark, path).select(F.col(date_column).alias("day"), F.explode("table_versions")).collect()
        references += [(row["day"], row["key"], int(row["value"])) for row in rows]
    return references + mlflow_references(settings)


def mlflow_references(settings: Settings) -> list[tuple[date, str, int]]:
    """(run date, table, version) from the params of the experiment's live runs."""
    from jobs.adapters import tracking

    runs = tracking.client(settings).search_runs([tracking.experiment_id(settings)], max_results=50_000)
    references = []
    for run in runs:
        run_date = run.data.tags.get(RUN_DATE_TAG)
        for table, param in TABLE_VERSION_PARAMS.items():
            if run_date and param in run.data.params:
                references.append((date.fromisoformat(run_date), table, int(run.data.params[param])))
    return references


def commits(spark: SparkSession, path: Path) -> list[dict[str, Any]]:
    """The table's commit history: version, timestamp (UTC), operation and its parameters."""
    history = spark.sql(f"DESCRIBE HISTORY {lake.sql_path(path)}")
    return [
        row.asDict() for row in history.select("version", "timestamp", "operation", "operationParameters").collect()
    ]


def file_count(spark: SparkSession, path: Path) -> FileCount:
    on_disk = storage.data_files(path, ".parquet")  # one listing, on disk or on the bucket
    active = spark.sql(f"DESCRIBE DETAIL {lake.sql_path(path)}").select("numFiles").first()[0]
    return FileCount(len(on_disk), sum(size for _, size in on_disk), int(active))


# ---------------------------------------------------------------- the run


def repin_expired_snapshots(
    spark: SparkSession, settings: Settings, kept: dict[str, int], window_start: date | None
) -> dict[str, int]:
    """Re-pin published snapshots older than the window to the oldest kept gold versions where their
    rows did not change; a snapshot that cannot move keeps its version (returned as kept)."""
    path = settings.table_path("gold_published")
    if window_start is None or not lake.exists(path):
        return kept
    kept = dict(kept)
    history = {name: commits(spark, settings.table_path(name)) for name in TABLES if name.startswith("gold_")}
    rows = [row.asDict() for row in lake.read(spark, path).filter(F.col("snapshot_date") < window_start).collect()]
    moved = []
    for row in rows:
        versions = dict(row["table_versions"])
        for table, pinned in versions.items():
            target = kept.get(table)
            if target is None or pinned >= target:
                continue
            if slice_untouched(history[table], row["snapshot_date"], pinned, target):
                versions[table] = target
            else:
                kept[table] = pinned
        if versions != dict(row["table_versions"]):
            moved.append((row["snapshot_date"], versions, row["published_at"]))
    if moved:
        frame = spark.createDataFrame(
            moved, "snapshot_date date, table_versions map<string,bigint>, published_at timestamp"
        )
        predicate = " OR ".join(f"snapshot_date = {lake.date_literal(day)}" for day, _, _ in moved)
        lake.replace_slice(frame, path, predicate, "snapshot_date")
    return kept


def maintain_table(
    spark: SparkSession, settings: Settings, name: str, kept_version: int | None, now: datetime | None = None
) -> TableReport:
    """OPTIMIZE then VACUUM one table, keeping ``kept_version`` and every later one."""
    path = settings.table_path(name)
    before = file_count(spark, path)
    history = {commit["version"]: commit["timestamp"] for commit in commits(spark, path)}
    kept_commit = history.get(kept_version) if kept_version is not None else None
    if kept_commit is not None:
        kept_commit = kept_commit.replace(tzinfo=UTC)
    hours = retention_hours(kept_commit, now or datetime.now(UTC), settings.maintenance.min_retention_hours)
    set_retention(spark, path, hours)
    spark.sql(f"OPTIMIZE {lake.sql_path(path)}")
    spark.sql(f"VACUUM {lake.sql_path(path)}")
    return TableReport(name, kept_version, hours, before, file_count(spark, path))


def retention_properties(hours: int) -> dict[str, str]:
    """The table properties VACUUM and time travel keep ``hours`` of history by.

    VACUUM takes its retention from ``delta.deletedFileRetentionDuration``: Delta 4 ignores a
    ``RETAIN`` argument other than 0 hours (``spark.databricks.delta.vacuum.retentionWindowIgnore.enabled``,
    on by default; it only logs a warning), which would fall back to 7 days. Time travel also needs
    the commit log: ``delta.logRetentionDuration`` is extended past the retention when needed.
    """
    properties = {"delta.deletedFileRetentionDuration": f"interval {hours} hours"}
    days = math.ceil(hours / 24) + 1
    if days > DELTA_LOG_DEFAULT_DAYS:
        properties["delta.logRetentionDuration"] = f"interval {days} days"
    return properties


def set_retention(spark: SparkSession, path: Path, hours: int) -> None:
    """Set ``retention_properties`` on the table (one metadata commit)."""
    assignments = ", ".join(f"'{key}' = '{value}'" for key, value in retention_properties(hours).items())
    spark.sql(f"ALTER TABLE {lake.sql_path(path)} SET TBLPROPERTIES ({assignments})")


def maintain(settings: Settings, spark: SparkSession, now: datetime | None = None) -> list[TableReport]:
    """Maintain every table of the lake; one report per table (``now``: fixed clock, for tests)."""
    references = version_references(spark, settings)
    newest = max((day for day, _, _ in references), default=None)
    days = settings.maintenance.reproducible_days
    window_start = newest - timedelta(days=days - 1) if newest is not None and days is not None else None
    kept = repin_expired_snapshots(spark, settings, oldest_kept_versions(references, window_start), window_start)
    spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")  # the rule above decides
    try:
        return [
            maintain_table(spark, settings, name, kept.get(name), now)
            for name in TABLES
            if lake.exists(settings.table_path(name))
        ]
    finally:
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "true")


def report_table(reports: list[TableReport]) -> str:
    """Markdown: files and bytes per table before and after."""
    lines = [
        "| table | kept from version | retention (h) | files before | files after | MB before | MB after "
        "| active files before | active files after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r.table} | {r.kept_from_version} | {r.retention_hours} | {r.before.files} | {r.after.files} "
            f"| {r.before.bytes / 1e6:.2f} | {r.after.bytes / 1e6:.2f} | {r.before.active_files} "
            f"| {r.after.active_files} |"
        )
    return "\n".join(lines)


def maintain_lake(
    run_date: date, settings: Settings | None = None, spark: SparkSession | None = None
) -> dict[str, Any]:
    """OPTIMIZE + VACUUM every table (``run_date`` only names the run); prints files and bytes per table."""
    settings = settings or load_settings()
    reports = maintain(settings, spark or get_spark(settings))
    print(report_table(reports))
    return {"run_date": run_date.isoformat(), "tables": [asdict(r) for r in reports]}
