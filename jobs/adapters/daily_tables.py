"""The daily sales tables (``jobs.core.daily``) that the EDA report reads: written from bronze by date slice."""

from __future__ import annotations

from datetime import date

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.config import Settings
from jobs.core.daily import DAILY_TABLES, DAY_ROWS, daily_sql
from jobs.core.rfm import money_type


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
