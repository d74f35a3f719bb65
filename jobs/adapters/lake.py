"""Delta Lake tables: where they live and the few ways this pipeline writes them.

Every write replaces exactly one run date's slice (``replaceWhere``), in one atomic Delta
commit: re-running a date gives the same rows, and a crash mid-write leaves the previous
version as it was. Tables keep the default protocol so delta-rs can read them.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession


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
    """Atomically replace the rows matching ``predicate`` with ``frame``; returns the new version.

    New columns are added to the table's schema (additive evolution); nothing is dropped.
    """
    spark = frame.sparkSession
    writer = (
        frame.write.format("delta").mode("overwrite").option("replaceWhere", predicate).option("mergeSchema", "true")
    )
    if not exists(spark, path):
        writer = writer.partitionBy(partition_by)
    writer.save(str(path))
    return current_version(spark, path)


def read(spark: SparkSession, path: Path, version: int | None = None) -> DataFrame:
    """A table, at ``version`` when given (time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(str(path))


def date_literal(day: date) -> str:
    return f"DATE'{day.isoformat()}'"
