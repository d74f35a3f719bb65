"""Reading a landed day and turning raw export columns into the pipeline's typed schema.

Both public namings (Online Retail's ``InvoiceNo … UnitPrice, CustomerID`` and Online
Retail II's ``Invoice … Price, Customer ID``) map to snake_case columns through
``conf/pipeline.yaml``. Raw text is kept beside each parsed column (``<name>_raw``) so
validation can count values that did not parse instead of letting them turn into nulls.
"""

from __future__ import annotations

from datetime import date
from functools import reduce
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from jobs.adapters.inventory import literal_path
from jobs.adapters.landing import data_files
from jobs.config import Settings
from jobs.definitions import CANONICAL_COLUMNS, RAW_RECORD, SOURCE_FILE, SOURCE_ROW
from jobs.errors import DataValidationError

TEXT_COLUMNS = ["invoice", "stock_code", "description", "customer_id", "country"]
PARSED_COLUMNS = ["quantity", "price", "invoice_date"]
MONEY_PRECISION = 18


def money_type(settings: Settings) -> str:
    """Exact decimal type for prices and amounts."""
    return f"decimal({MONEY_PRECISION},{settings.rfm.price_precision})"


def money_integer_digits(settings: Settings) -> int:
    """Digits before the decimal point that the money type holds (15 for decimal(18,3))."""
    return MONEY_PRECISION - settings.rfm.price_precision


def read_landed_day(spark: SparkSession, settings: Settings, day: date, files: list[Path] | None = None) -> DataFrame:
    """The day's landed rows, canonically named text columns plus where each row comes from.

    ``files`` defaults to the day's data files. Each file is mapped by its own header (see
    ``read_files``); a day without data files is an empty frame of the same shape.
    """
    if files is None:
        files = data_files(settings.path("landing_dir"), day, settings.landing.format)
    return read_files(spark, settings, files, settings.landing.format)


def read_files(
    spark: SparkSession, settings: Settings, files: list[Path], fmt: str, labels: list[str] | None = None
) -> DataFrame:
    """Several files, each read on its own and mapped to canonical names by its own header, then
    unioned by name. Files that disagree on which columns they have raise, naming both.

    ``labels`` name the files in ``source_file`` (default: the file names).
    """
    labels = labels or [p.name for p in files]
    if not files:
        return empty_landed(spark)
    frames = [
        to_canonical_names(spread(read_file_text(spark, p, fmt, label), p, settings), settings, label)
        for p, label in zip(files, labels, strict=True)
    ]
    first = set(frames[0].columns)
    for label, frame in zip(labels[1:], frames[1:], strict=True):
        if set(frame.columns) != first:
            only = {labels[0]: first - set(frame.columns), label: set(frame.columns) - first}
            differences = "; ".join(f"only {name} has {', '.join(sorted(cols))}" for name, cols in only.items() if cols)
            raise DataValidationError(f"{labels[0]} and {label} disagree on their columns: {differences}")
    return reduce(lambda left, right: left.unionByName(right), frames)


def empty_landed(spark: SparkSession) -> DataFrame:
    """The shape of ``read_files`` for a day without data files."""
    schema = StructType(
        [StructField(c, StringType()) for c in CANONICAL_COLUMNS]
        + [
            StructField(SOURCE_FILE, StringType()),
            StructField(SOURCE_ROW, LongType()),
            StructField(RAW_RECORD, StringType()),
        ]
    )
    return spark.createDataFrame([], schema)


def read_file_text(spark: SparkSession, path: Path, fmt: str, label: str | None = None) -> DataFrame:
    """One file, every column as text, plus ``source_file`` (``label``, default its name),
    ``source_row`` (1 = the first row after the header, in file order) and ``raw_record``
    (the row's fields as read, a JSON object keyed by the file's own column names)."""
    if fmt == "parquet":  # the row's index within its file, whichever split reads it
        frame = read_parquet_text(spark, [literal_path(path)], extra=[F.col("_metadata.row_index").alias("_order")])
    else:  # multiLine CSV is not splittable: one task reads the file, its ids count 0, 1, 2, ...
        frame = read_export_text(spark, [literal_path(path)]).withColumn("_order", F.monotonically_increasing_id())
    columns = [c for c in frame.columns if c != "_order"]
    fields = [F.col(f"`{c}`") for c in columns]
    return frame.select(
        *fields,
        F.lit(label or path.name).alias(SOURCE_FILE),
        (F.col("_order") + 1).cast("long").alias(SOURCE_ROW),
        F.to_json(F.struct(*fields), {"ignoreNullFields": "false"}).alias(RAW_RECORD),
    )


def spread(frame: DataFrame, path: Path, settings: Settings) -> DataFrame:
    """``frame`` (one file's rows) hash-partitioned by ``source_row`` into pieces of about
    ``landing.split_bytes`` of the file, so a large file read in one task (multi-line CSV) is
    parsed, deduplicated and aggregated on every core, and no task holds the whole file.
    A file within one piece is returned as read."""
    pieces = -(-path.stat().st_size // settings.landing.split_bytes)
    return frame.repartition(pieces, SOURCE_ROW) if pieces > 1 else frame


def read_parquet_text(spark: SparkSession, paths: list[str], extra: list[Column] | None = None) -> DataFrame:
    """Parquet export(s) with every column cast to text, like the CSV reader."""
    frame = spark.read.parquet(*paths)
    return frame.select([F.col(f"`{c}`").cast("string").alias(c) for c in frame.columns] + (extra or []))


def read_export_text(spark: SparkSession, paths: list[str]) -> DataFrame:
    """CSV export(s) with a header row, every value as text (no inference, nothing nulled)."""
    return spark.read.options(header=True, inferSchema=False, multiLine=True, escape='"', mode="PERMISSIVE").csv(paths)


def to_canonical_names(raw: DataFrame, settings: Settings, source: str = "the landed file") -> DataFrame:
    """Rename each target's source column to its snake_case name; row provenance columns are kept.

    A column already named as its target is kept as is (so renaming twice changes nothing).
    Two source columns of one target in the same file (``InvoiceNo`` and ``Invoice``) are
    ambiguous: ``DataValidationError`` naming ``source``.
    """
    present = set(raw.columns)
    selected = []
    for target, sources in settings.columns.items():
        found = [s for s in sources if s in present] or ([target] if target in present else [])
        if len(found) > 1:
            raise DataValidationError(f"{source}: columns {', '.join(found)} all map to {target}: ambiguous")
        if found:
            selected.append(F.col(f"`{found[0]}`").alias(target))
    return raw.select(*selected, *[F.col(c) for c in (SOURCE_FILE, SOURCE_ROW, RAW_RECORD) if c in present])


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
