"""Reading a landed day and turning raw export columns into the pipeline's typed schema.

Both public namings (Online Retail's ``InvoiceNo … UnitPrice, CustomerID`` and Online
Retail II's ``Invoice … Price, Customer ID``) map to snake_case columns through
``conf/pipeline.yaml``. Raw text is kept beside each parsed column (``<name>_raw``) so
validation can count values that did not parse instead of letting them turn into nulls.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from jobs.adapters.landing import data_files
from jobs.config import Settings
from jobs.definitions import CANONICAL_COLUMNS

TEXT_COLUMNS = ["invoice", "stock_code", "description", "customer_id", "country"]
PARSED_COLUMNS = ["quantity", "price", "invoice_date"]


def money_type(settings: Settings) -> str:
    """Exact decimal type for prices and amounts."""
    return f"decimal(18,{settings.rfm.price_precision})"


def read_landed_day(spark: SparkSession, settings: Settings, day: date) -> DataFrame:
    """Every column of the day's landed files as text; an empty frame when the day has no rows."""
    files = [str(p) for p in data_files(settings.path("landing_dir"), day, settings.landing.format)]
    if not files:
        return spark.createDataFrame([], StructType([StructField(c, StringType()) for c in CANONICAL_COLUMNS]))
    if settings.landing.format == "parquet":
        return read_parquet_text(spark, files)
    return read_export_text(spark, files)


def read_parquet_text(spark: SparkSession, paths: list[str]) -> DataFrame:
    """Parquet export(s) with every column cast to text, like the CSV reader."""
    frame = spark.read.parquet(*paths)
    return frame.select([F.col(f"`{c}`").cast("string").alias(c) for c in frame.columns])


def read_export_text(spark: SparkSession, paths: list[str]) -> DataFrame:
    """CSV export(s) with a header row, every value as text (no inference, nothing nulled)."""
    return spark.read.options(header=True, inferSchema=False, multiLine=True, escape='"', mode="PERMISSIVE").csv(paths)


def to_canonical_names(raw: DataFrame, settings: Settings) -> DataFrame:
    """Rename the first matching source column of each target to its snake_case name."""
    present = set(raw.columns)
    selected = []
    for target, sources in settings.columns.items():
        source = next((s for s in sources if s in present), None)
        if source is not None:
            selected.append(F.col(f"`{source}`").alias(target))
    return raw.select(selected)


def _blank_to_null(column: Column) -> Column:
    return F.when(F.trim(column) == "", None).otherwise(column)


def _parse_timestamp(column: Column, formats: list[str]) -> Column:
    return F.coalesce(*[F.try_to_timestamp(F.trim(column), F.lit(fmt)) for fmt in formats])


def parse_transactions(named: DataFrame, settings: Settings) -> DataFrame:
    """Typed transactions from canonically named text columns; ``<col>_raw`` keeps the text.

    Customer ids are normalised (``13085.0`` -> ``13085``); a value that does not parse
    becomes null in the typed column while its text stays in ``<col>_raw``.
    """
    columns = set(named.columns)
    out = named
    for name in TEXT_COLUMNS:
        if name in columns:
            out = out.withColumn(name, _blank_to_null(F.col(name)))
    if "customer_id" in columns:
        out = out.withColumn("customer_id_raw", F.col("customer_id")).withColumn(
            "customer_id", F.regexp_replace(F.trim(F.col("customer_id")), r"\.0+$", "")
        )
    parsers = {
        "quantity": lambda c: F.expr(f"try_cast(trim({c}) as int)"),
        "price": lambda c: F.expr(f"try_cast(trim({c}) as {money_type(settings)})"),
        "invoice_date": lambda c: _parse_timestamp(F.col(c), settings.timestamp_formats),
    }
    for name, parse in parsers.items():
        if name in columns:
            out = out.withColumn(f"{name}_raw", _blank_to_null(F.col(name))).withColumn(name, parse(f"{name}_raw"))
    return out


def is_adjustment(settings: Settings) -> Column:
    """Documented accounting adjustments (bad debt): allowed a negative price."""
    rules = settings.validation
    return F.coalesce(
        F.col("invoice").startswith(rules.adjustment_invoice_prefix)
        & F.col("stock_code").isin(rules.adjustment_stock_codes),
        F.lit(False),
    )


def typed_rows(parsed: DataFrame) -> DataFrame:
    """The canonical typed columns plus the transaction date (the partition key)."""
    return parsed.select(*CANONICAL_COLUMNS).withColumn("transaction_date", F.to_date("invoice_date"))
