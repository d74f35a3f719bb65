"""The publish record (``gold/published``): which gold snapshots readers may see, at which versions.

A night's gold snapshot is three Delta commits (segments, summary, transitions), then its MLflow
logging, then the run audit. The label step writes one publish record last, holding the version
of every gold table it committed; readers (the dashboard, ``jobs.ops.summary``) list only
published dates and read them at those versions. A crash anywhere before leaves the date
unpublished (and a previously published date at its previous versions); a re-run publishes it.
Read with delta-rs (no JVM) so the dashboard can use it; this module imports no Spark.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from jobs import storage
from jobs.config import Settings

if TYPE_CHECKING:  # the dashboard imports this module: no Spark at import time
    import pyspark.sql
    from pyspark.sql import SparkSession

GOLD_TABLES = ("gold_customer_segments", "gold_segment_summary", "gold_segment_transitions")
# Published when the night wrote them (the clv step's scorecard; label's provisional record has none).
OPTIONAL_GOLD_TABLES = ("gold_forecast_scorecard",)
PUBLISH_SCHEMA = "snapshot_date date, table_versions map<string,bigint>"


def publish(spark: SparkSession, settings: Settings, run_date: date, versions: dict[str, int]) -> int:
    """Write the publish record of ``run_date`` (the last write of a night); returns its version."""
    from pyspark.sql import functions as F

    from jobs.adapters import lake

    missing = [name for name in GOLD_TABLES if name not in versions]
    if missing:
        raise ValueError(f"{run_date}: cannot publish without the versions of {missing}")
    record = spark.createDataFrame(
        [(run_date, {name: int(versions[name]) for name in (*GOLD_TABLES, *OPTIONAL_GOLD_TABLES) if name in versions})],
        PUBLISH_SCHEMA,
    ).withColumn("published_at", F.current_timestamp())
    predicate = f"snapshot_date = {lake.date_literal(run_date)}"
    return lake.replace_slice(record, settings.table_path("gold_published"), predicate, "snapshot_date")


def ensure_publish_table(spark: SparkSession, settings: Settings) -> None:
    """On a fresh lake (no gold yet), create the publish table empty before the first gold write.

    Readers treat a lake without a publish table as written before publish records and read the
    latest versions; without this, a first night killed between its gold writes would show its
    half-written snapshot.
    """
    from jobs.adapters import lake

    path = settings.table_path("gold_published")
    if lake.exists(path) or lake.exists(settings.table_path("gold_customer_segments")):
        return
    spark.createDataFrame([], f"{PUBLISH_SCHEMA}, published_at timestamp").write.format("delta").partitionBy(
        "snapshot_date"
    ).save(storage.spark_uri(path))


def published_versions(path: Path | str, version: int | None = None) -> dict[date, dict[str, int]] | None:
    """Published dates and their gold versions; None when no publish table exists (a lake written
    before publish records: readers then read the latest versions, as before)."""
    if not storage.is_delta_table(path):
        return None
    rows = (
        storage.delta_table(path, version=version)
        .to_pyarrow_table(columns=["snapshot_date", "table_versions"])
        .to_pylist()
    )
    return {row["snapshot_date"]: dict(row["table_versions"]) for row in rows}


def published_version(settings: Settings, name: str, run_date: date) -> int | None:
    """The version of gold table ``name`` to read ``run_date`` at: the published one; None (the
    latest) on a lake without publish records. A date not published is a ``LakeStateError``."""
    from jobs.errors import LakeStateError

    published = published_versions(settings.table_path("gold_published"))
    if published is None:
        return None
    if run_date not in published:
        raise LakeStateError(f"the gold snapshot of {run_date} is not published: run the label step for it")
    return published[run_date][name]


def last_published_before(
    spark: SparkSession, settings: Settings, day: date
) -> tuple[pyspark.sql.DataFrame | None, date | None]:
    """The gold segments of the latest snapshot published before ``day``, at its published version, or
    (None, None). A snapshot written but never published (a failed label gate, a crash before the
    publish) is skipped: a night builds on what readers saw. A lake without publish records: the
    latest slice before ``day``."""
    from pyspark.sql import functions as F

    from jobs.adapters import lake

    path = settings.table_path("gold_customer_segments")
    published = published_versions(settings.table_path("gold_published"))
    if published is None:
        return lake.latest_slice_before(spark, path, day)
    earlier = [snapshot for snapshot in published if snapshot < day]
    if not earlier:
        return None, None
    found = max(earlier)
    frame = lake.read(spark, path, published[found]["gold_customer_segments"])
    return frame.filter(F.col("snapshot_date") == F.lit(found).cast("date")), found
