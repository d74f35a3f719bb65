"""The quarantine (``quarantine/transactions``): landed rows held back by a ``quarantine`` policy.

Validation decides which rows (by file and row number) broke a quarantine rule; the loading
step splits the day's parsed rows into those it loads and those it holds back here, with the
row's raw fields, its file and row number, the run date and every expectation it broke. A
run date's slice is replaced as a whole (``replaceWhere``), like every other table, so a
corrected re-delivery of the day replaces its quarantine too.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.config import Settings
from jobs.definitions import RAW_RECORD, ROW_KEY, SOURCE_FILE, SOURCE_ROW

KEY_SCHEMA = f"{SOURCE_FILE} string, {SOURCE_ROW} bigint, expectations array<string>"
COLUMNS = ["run_date", SOURCE_FILE, SOURCE_ROW, RAW_RECORD, "expectations", "landing_fingerprint"]


def quarantine_keys(spark: SparkSession, entries: list[dict[str, Any]]) -> DataFrame:
    """The rows a validation report holds back: file, row number, expectations broken."""
    return spark.createDataFrame(
        [(e[SOURCE_FILE], int(e[SOURCE_ROW]), list(e["expectations"])) for e in entries], KEY_SCHEMA
    )


def split_quarantined(
    parsed: DataFrame, keys: DataFrame, run_date: Column, fingerprint: str
) -> tuple[DataFrame, DataFrame]:
    """(rows to load, quarantine records) of parsed landed rows; ``run_date`` dates each record."""
    kept = parsed.join(F.broadcast(keys.select(*ROW_KEY)), ROW_KEY, "left_anti")
    held = parsed.join(F.broadcast(keys), ROW_KEY, "inner").select(
        run_date.cast("date").alias("run_date"),
        SOURCE_FILE,
        SOURCE_ROW,
        RAW_RECORD,
        "expectations",
        F.lit(fingerprint).alias("landing_fingerprint"),
    )
    return kept, held


def write_quarantine(held: DataFrame, settings: Settings, first: date, last: date | None = None) -> int:
    """Replace the quarantine slice of run dates [first, last] (one date by default); returns the version."""
    last = last or first
    predicate = lake.date_range_predicate("run_date", first, last)
    return lake.replace_slice(
        held.select(*COLUMNS), settings.table_path("quarantine_transactions"), predicate, "run_date"
    )
