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

import deltalake
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import storage
from jobs.adapters import faults
from jobs.storage import Location

WRITE_ID_PREFIX = "rfm-write:"  # commitInfo.userMetadata of every write: finds the version it committed


def _log(path: Location | str) -> deltalake.DeltaTable:
    """The table's commit log, read by delta-rs: versions and commit metadata in milliseconds, no Spark job."""
    return storage.delta_table(path)


def exists(path: Location | str) -> bool:
    return storage.is_delta_table(path)


def current_version(path: Location | str) -> int | None:
    """Latest committed version, or None when the table does not exist yet."""
    return _log(path).version() if exists(path) else None


def replace_slice(frame: DataFrame, path: Location, predicate: str, partition_by: str) -> int:
    """Atomically replace the rows matching ``predicate`` with ``frame``; returns the version this
    write committed (not the table's latest, which another writer may have moved on since).

    New columns are added to the table's schema (additive evolution); nothing is dropped.
    """
    write_id = f"{WRITE_ID_PREFIX}{uuid.uuid4().hex}"
    writer = (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("mergeSchema", "true")
        .option("userMetadata", write_id)
    )
    if not exists(path):
        writer = writer.partitionBy(partition_by)
    faults.in_write("write", frame, path, partition_by)
    writer.save(storage.spark_uri(path))
    committed = committed_version(path, write_id)
    # Delta makes no commit for a write that changes nothing (an empty frame over an empty slice):
    # the table already is what the write asked for.
    return committed if committed is not None else current_version(path)


def committed_version(path: Location | str, write_id: str, search: int = 100) -> int | None:
    """The version whose commit carries ``write_id`` as its user metadata (among the latest
    ``search``); None when no commit does."""
    found = [c["version"] for c in _log(path).history(search) if c.get("userMetadata") == write_id]
    if len(found) > 1:
        raise RuntimeError(f"{path}: {len(found)} commits carry write id {write_id} among the latest {search}")
    return int(found[0]) if found else None


def read(spark: SparkSession, path: Location, version: int | None = None) -> DataFrame:
    """A table, at ``version`` when given (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(storage.spark_uri(path))


def read_pinned(spark: SparkSession, path: Location, name: str) -> tuple[DataFrame, int]:
    """Table ``name`` at ``path`` at its current version, and that version; a missing table is a ``LakeStateError``."""
    from jobs.errors import LakeStateError

    version = current_version(path)
    if version is None:
        raise LakeStateError(f"no {name} table at {path}: run the earlier steps first")
    return read(spark, path, version), version


def latest_slice_before(spark: SparkSession, path: Location, day: date) -> tuple[DataFrame | None, date | None]:
    """The latest ``snapshot_date`` slice of the table at ``path`` before ``day`` (partition-pruned),
    or (None, None) when there is none."""
    if not exists(path):
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


def sql_path(path: Location | str) -> str:
    """The table at ``path`` as a Spark SQL identifier (``delta.`path```)."""
    return "delta.`" + storage.spark_uri(path).replace("`", "``") + "`"


def merge_by_key(source: DataFrame, path: Location, key: list[str], delete_flag: str, metadata: str) -> int:
    """One Delta MERGE of ``source`` into ``path`` on ``key`` (null-safe): rows flagged
    ``delete_flag`` delete their match, the others update or insert every column; the commit
    carries ``metadata``. Returns the new version. Plain SQL: it runs over Spark Connect too."""
    spark = source.sparkSession
    view = f"merge_source_{uuid.uuid4().hex}"
    columns = [f"`{c}`" for c in source.columns if c != delete_flag]
    condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in key)
    statement = (
        f"MERGE INTO {sql_path(path)} AS t USING {view} AS s ON {condition} "
        f"WHEN MATCHED AND s.`{delete_flag}` THEN DELETE "
        f"WHEN MATCHED THEN UPDATE SET {', '.join(f't.{c} = s.{c}' for c in columns)} "
        f"WHEN NOT MATCHED AND NOT s.`{delete_flag}` THEN INSERT ({', '.join(columns)}) "
        f"VALUES ({', '.join(f's.{c}' for c in columns)})"
    )
    faults.in_write("merge", source, path)
    source.createOrReplaceTempView(view)
    try:
        with commit_metadata(spark, metadata):
            spark.sql(statement)
    finally:
        spark.catalog.dropTempView(view)
    return current_version(path)


def overwrite(frame: DataFrame, path: Location, metadata: str) -> int:
    """Replace the whole table with ``frame`` in one commit carrying ``metadata``; returns the version."""
    faults.in_write("overwrite", frame, path)
    frame.write.format("delta").mode("overwrite").option("overwriteSchema", "true").option(
        "userMetadata", metadata
    ).save(storage.spark_uri(path))
    return current_version(path)


def latest_metadata(path: Location | str, depth: int = 100) -> str | None:
    """The ``userMetadata`` of the newest commit (of the last ``depth``) that has one, or None."""
    if not exists(path):
        return None
    commits = sorted(_log(path).history(depth), key=lambda c: c["version"], reverse=True)
    return next((c["userMetadata"] for c in commits if c.get("userMetadata") is not None), None)
