"""Delta Lake tables: where they live and the few ways this pipeline writes them.

Every write replaces exactly one run date's slice (``replaceWhere``), in one atomic Delta
commit: re-running a date gives the same rows, and a crash mid-write leaves the previous
version as it was. Tables keep the default protocol so delta-rs can read them. Each write has a
fault point between its data files and its commit (``jobs.adapters.faults.in_write``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import faults

WRITE_ID_PREFIX = "rfm-write:"  # commitInfo.userMetadata of every write: finds the version it committed


def exists(spark: SparkSession, path: Path) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, str(path))


def current_version(spark: SparkSession, path: Path) -> int | None:
    """Latest committed version, or None when the table does not exist yet."""
    from delta.tables import DeltaTable

    if not exists(spark, path):
        return None
    return int(DeltaTable.forPath(spark, str(path)).history(1).select("version").first()[0])


def replace_slice(frame: DataFrame, path: Path, predicate: str, partition_by: str) -> int:
    """Atomically replace the rows matching ``predicate`` with ``frame``; returns the version this
    write committed (not the table's latest, which another writer may have moved on since).

    New columns are added to the table's schema (additive evolution); nothing is dropped.
    """
    spark = frame.sparkSession
    write_id = f"{WRITE_ID_PREFIX}{uuid.uuid4().hex}"
    writer = (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("mergeSchema", "true")
        .option("userMetadata", write_id)
    )
    if not exists(spark, path):
        writer = writer.partitionBy(partition_by)
    faults.in_write("write", frame, path, partition_by)
    writer.save(str(path))
    committed = committed_version(spark, path, write_id)
    # Delta makes no commit for a write that changes nothing (an empty frame over an empty slice):
    # the table already is what the write asked for.
    return committed if committed is not None else current_version(spark, path)


def committed_version(spark: SparkSession, path: Path, write_id: str, search: int = 100) -> int | None:
    """The version whose commit carries ``write_id`` as its user metadata (among the latest
    ``search``); None when no commit does."""
    from delta.tables import DeltaTable

    found = (
        DeltaTable.forPath(spark, str(path))
        .history(search)
        .filter(F.col("userMetadata") == write_id)
        .select("version")
        .collect()
    )
    if len(found) > 1:
        raise RuntimeError(f"{path}: {len(found)} commits carry write id {write_id} among the latest {search}")
    return int(found[0]["version"]) if found else None


def read(spark: SparkSession, path: Path, version: int | None = None) -> DataFrame:
    """A table, at ``version`` when given (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(str(path))


def latest_slice_before(spark: SparkSession, path: Path, day: date) -> tuple[DataFrame | None, date | None]:
    """The latest ``snapshot_date`` slice of the table at ``path`` before ``day`` (partition-pruned),
    or (None, None) when there is none."""
    if not exists(spark, path):
        return None, None
    table = read(spark, path)
    found = table.filter(F.col("snapshot_date") < F.lit(day).cast("date")).agg(F.max("snapshot_date")).first()[0]
    if found is None:
        return None, None
    return table.filter(F.col("snapshot_date") == F.lit(found)), found


def date_literal(day: date) -> str:
    return f"DATE'{day.isoformat()}'"


def date_range_predicate(column: str, first: date, last: date) -> str:
    """``column`` in [first, last], for ``replaceWhere``. Not ``BETWEEN``: Spark 4.1 rewrites it to a
    common expression that Delta 4.4's partition filter cannot resolve on an existing table."""
    return f"{column} >= {date_literal(first)} AND {column} <= {date_literal(last)}"


COMMIT_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"


@contextmanager
def commit_metadata(spark: SparkSession, metadata: str) -> Iterator[None]:
    """Record ``metadata`` as the ``userMetadata`` of the Delta commits made inside the block."""
    previous = spark.conf.get(COMMIT_METADATA_CONF, None)
    spark.conf.set(COMMIT_METADATA_CONF, metadata)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(COMMIT_METADATA_CONF)
        else:
            spark.conf.set(COMMIT_METADATA_CONF, previous)


def merge_by_key(source: DataFrame, path: Path, key: list[str], delete_flag: str, metadata: str) -> int:
    """One Delta MERGE of ``source`` into ``path`` on ``key`` (null-safe): rows flagged
    ``delete_flag`` delete their match, the others update or insert every column; the commit
    carries ``metadata``. Returns the new version."""
    from delta.tables import DeltaTable

    spark = source.sparkSession
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in key)
    values = {f"`{c}`": f"s.`{c}`" for c in source.columns if c != delete_flag}
    faults.in_write("merge", source, path)
    with commit_metadata(spark, metadata):
        (
            DeltaTable.forPath(spark, str(path))
            .alias("t")
            .merge(source.alias("s"), condition)
            .whenMatchedDelete(condition=f"s.`{delete_flag}`")
            .whenMatchedUpdate(set=values)
            .whenNotMatchedInsert(condition=f"NOT s.`{delete_flag}`", values=values)
            .execute()
        )
    return current_version(spark, path)


def overwrite(frame: DataFrame, path: Path, metadata: str) -> int:
    """Replace the whole table with ``frame`` in one commit carrying ``metadata``; returns the version."""
    faults.in_write("overwrite", frame, path)
    frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true").option(
        "userMetadata", metadata
    ).save(str(path))
    return current_version(spark=frame.sparkSession, path=path)


def latest_metadata(spark: SparkSession, path: Path, depth: int = 100) -> str | None:
    """The ``userMetadata`` of the newest commit (of the last ``depth``) that has one, or None."""
    from delta.tables import DeltaTable

    if not exists(spark, path):
        return None
    row = (
        DeltaTable.forPath(spark, str(path))
        .history(depth)
        .filter("userMetadata IS NOT NULL")
        .orderBy(F.desc("version"))
        .select("userMetadata")
        .first()
    )
    return None if row is None else row[0]
