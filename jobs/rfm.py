"""Step 2 — ingest the validated day into bronze, then compute the RFM snapshot into silver.

Extract: the landed day (only once its latest validation passed on these very bytes).
Transform: ``typed_rows`` (bronze, lossless) and ``compute_rfm`` (silver, pure).
Load: ``replaceWhere`` on the run date for bronze, silver and the run audit.
"""

from __future__ import annotations

import sys
from datetime import date, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs import lake
from jobs.cli import run_step
from jobs.config import Rfm, Settings, load_settings
from jobs.errors import LakeStateError
from jobs.landing import data_files, fingerprint
from jobs.spark import get_spark
from jobs.transactions import CANONICAL_COLUMNS, parse_transactions, read_landed_day, to_canonical_names, typed_rows
from jobs.validate import read_latest_report

EXCLUSION_REASONS = [
    "missing_customer_id",
    "non_product",
    "duplicate",
    "cancellation",
    "other_non_purchase",
    "non_positive_quantity",
    "non_positive_price",
]


def _starts_with_any(column: str, prefixes: list[str]) -> Column:
    condition = F.lit(False)
    for prefix in prefixes:
        condition = condition | F.col(column).startswith(prefix)
    return condition


def considered_lines(transactions: DataFrame, rules: Rfm) -> DataFrame:
    """Lines that count for RFM: customer known, a product (not a charge), no exact duplicates."""
    lines = transactions
    if rules.require_customer_id:
        lines = lines.filter(F.col("customer_id").isNotNull())
    lines = lines.filter(~F.col("stock_code").isin(rules.non_product_stock_codes))
    if rules.drop_exact_duplicates:
        lines = lines.dropDuplicates(CANONICAL_COLUMNS)
    return lines


def is_purchase(rules: Rfm) -> Column:
    """A purchase line: not a cancellation/adjustment invoice, positive quantity and price."""
    return (
        ~_starts_with_any("invoice", rules.non_purchase_prefixes) & (F.col("quantity") > 0) & (F.col("price") > 0)
    )


def is_cancellation(rules: Rfm) -> Column:
    """A cancellation (return) line: a ``C`` invoice taking quantity back."""
    return F.col("invoice").startswith(rules.cancellation_prefix) & (F.col("quantity") < 0)


def compute_rfm(transactions: DataFrame, snapshot: date, rules: Rfm) -> DataFrame:
    """Per-customer RFM as of ``snapshot`` from typed transactions (any dates; later ones ignored).

    recency_days = snapshot - last purchase date; frequency = distinct purchase invoices;
    monetary = purchases + cancellation lines (negative), floored at 0 (or purchases only
    when ``net_of_cancellations`` is off); customers without a purchase line are left out.
    """
    snapshot_col = F.lit(snapshot).cast("date")
    lines = considered_lines(transactions.filter(F.col("transaction_date") <= snapshot_col), rules)
    lines = lines.withColumn("amount", F.col("quantity") * F.col("price"))
    purchases = lines.filter(is_purchase(rules))
    cancelled = (
        lines.filter(is_cancellation(rules)).groupBy("customer_id").agg(F.sum("amount").alias("monetary_cancelled"))
    )
    revenue_by_country = purchases.groupBy("customer_id", "country").agg(F.sum("amount").alias("revenue"))
    top_country = (
        revenue_by_country.withColumn(
            "rank",
            F.row_number().over(
                Window.partitionBy("customer_id").orderBy(F.desc("revenue"), F.asc_nulls_last("country"))
            ),
        )
        .filter(F.col("rank") == 1)
        .select("customer_id", "country")
    )
    per_customer = purchases.groupBy("customer_id").agg(
        F.min("transaction_date").alias("first_purchase_date"),
        F.max("transaction_date").alias("last_purchase_date"),
        F.countDistinct("invoice").alias("frequency"),
        F.sum("amount").alias("monetary_gross"),
    )
    money = f"decimal(20,{rules.price_precision})"
    gross = F.col("monetary_gross").cast(money)
    cancellations = F.coalesce(F.col("monetary_cancelled"), F.lit(0)).cast(money)
    net = F.greatest(gross + cancellations, F.lit(0).cast(money)) if rules.net_of_cancellations else gross
    return (
        per_customer.join(cancelled, "customer_id", "left")
        .join(top_country, "customer_id", "left")
        .select(
            snapshot_col.alias("snapshot_date"),
            "customer_id",
            F.datediff(snapshot_col, "last_purchase_date").alias("recency_days"),
            F.col("frequency").cast("int").alias("frequency"),
            net.cast(money).alias("monetary"),
            gross.alias("monetary_gross"),
            cancellations.alias("monetary_cancelled"),
            "first_purchase_date",
            "last_purchase_date",
            F.datediff(snapshot_col, "first_purchase_date").alias("tenure_days"),
            "country",
        )
    )


def exclusion_reason(rules: Rfm) -> Column:
    """Why a line is not a purchase (first reason that applies), null exactly for purchase lines.

    A ``C`` invoice line that does not take quantity back is ``other_non_purchase``; a missing
    quantity or price counts as non-positive.
    """
    business = Window.partitionBy(*CANONICAL_COLUMNS).orderBy(F.lit(1))
    duplicate = (F.row_number().over(business) > 1) if rules.drop_exact_duplicates else F.lit(False)
    missing_id = F.col("customer_id").isNull() if rules.require_customer_id else F.lit(False)
    return (
        F.when(missing_id, "missing_customer_id")
        .when(F.col("stock_code").isin(rules.non_product_stock_codes), "non_product")
        .when(duplicate, "duplicate")
        .when(is_cancellation(rules), "cancellation")
        .when(_starts_with_any("invoice", rules.non_purchase_prefixes), "other_non_purchase")
        .when(F.coalesce(F.col("quantity") <= 0, F.lit(True)), "non_positive_quantity")
        .when(F.coalesce(F.col("price") <= 0, F.lit(True)), "non_positive_price")
    )


def exclusion_counts(day_rows: DataFrame, rules: Rfm) -> dict[str, int]:
    """Rows of the day by exclusion reason (every reason present, zero when unused)."""
    counted = {
        row["reason"]: row["rows"]
        for row in day_rows.select(exclusion_reason(rules).alias("reason"))
        .filter(F.col("reason").isNotNull())
        .groupBy("reason")
        .agg(F.count("*").alias("rows"))
        .collect()
    }
    return {reason: int(counted.get(reason, 0)) for reason in EXCLUSION_REASONS}


def audit_row(
    spark: SparkSession, run_date: date, step: str, rows_in: int, excluded: dict[str, int], versions: dict[str, int]
) -> DataFrame:
    """One run-audit record: what a step read, left out and wrote for a run date."""
    schema = (
        "run_date date, step string, rows_in bigint, excluded_rows map<string,bigint>, "
        "table_versions map<string,bigint>, recorded_at timestamp"
    )
    return spark.createDataFrame([(run_date, step, rows_in, excluded, versions, None)], schema).withColumn(
        "recorded_at", F.current_timestamp()
    )


def write_audit(spark: SparkSession, settings: Settings, run_date: date, step: str, rows_in: int,
                excluded: dict[str, int], versions: dict[str, int]) -> int:  # fmt: skip
    """Replace the audit record of (run date, step)."""
    predicate = f"run_date = {lake.date_literal(run_date)} AND step = '{step}'"
    record = audit_row(spark, run_date, step, rows_in, excluded, versions)
    return lake.replace_slice(record, lake.table_path(settings, "run_audit"), predicate, "run_date")


def audited_dates(spark: SparkSession, settings: Settings, step: str = "ingest") -> set[date]:
    """Run dates the given step has completed (from the run audit)."""
    path = lake.table_path(settings, "run_audit")
    if not lake.exists(spark, path):
        return set()
    rows = lake.read(spark, path).filter(F.col("step") == step).select("run_date").distinct().collect()
    return {row["run_date"] for row in rows}


def require_previous_day(spark: SparkSession, settings: Settings, run_date: date) -> None:
    """Refuse to build on a lake that misses the day before (unless nothing was ever loaded)."""
    loaded = audited_dates(spark, settings)
    if loaded and run_date - timedelta(days=1) not in loaded and min(loaded) < run_date:
        raise LakeStateError(
            f"the lake has no ingested {run_date - timedelta(days=1)}: run that day first "
            f"(latest ingested: {max(d for d in loaded if d < run_date)})"
        )


def require_validated(settings: Settings, run_date: date) -> None:
    """Refuse input whose latest validation failed, is missing, or saw other bytes."""
    report = read_latest_report(settings, run_date)
    files = data_files(settings.path("landing_dir"), run_date, settings.landing.format)
    if report is None or not report.success:
        raise LakeStateError(f"{run_date} has no passing validation: run `python -m jobs.validate` first")
    if report.landing_fingerprint != fingerprint(files):
        raise LakeStateError(f"the landed files of {run_date} changed after validation: validate them again")


def extract_day(spark: SparkSession, settings: Settings, run_date: date) -> DataFrame:
    """The day's landed rows, typed."""
    return typed_rows(parse_transactions(to_canonical_names(read_landed_day(spark, settings, run_date), settings), settings))


def load_snapshot(spark: SparkSession, settings: Settings, run_date: date) -> dict[str, int]:
    """Recompute silver RFM for ``run_date`` from bronze; returns the versions read and written."""
    bronze_path = lake.table_path(settings, "bronze_transactions")
    bronze_version = lake.current_version(spark, bronze_path)
    bronze = lake.read(spark, bronze_path, bronze_version)
    snapshot = compute_rfm(bronze, run_date, settings.rfm)
    silver_version = lake.replace_slice(
        snapshot,
        lake.table_path(settings, "silver_customer_rfm"),
        f"snapshot_date = {lake.date_literal(run_date)}",
        "snapshot_date",
    )
    return {"bronze_transactions": bronze_version, "silver_customer_rfm": silver_version}


def ingest_day(run_date: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Bronze partition of ``run_date``, its RFM snapshot and audit record; returns versions."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    require_validated(settings, run_date)
    require_previous_day(spark, settings, run_date)
    day_rows = extract_day(spark, settings, run_date).cache()
    rows_in = day_rows.count()
    excluded = exclusion_counts(day_rows, settings.rfm)
    lake.replace_slice(
        day_rows,
        lake.table_path(settings, "bronze_transactions"),
        f"transaction_date = {lake.date_literal(run_date)}",
        "transaction_date",
    )
    day_rows.unpersist()
    versions = load_snapshot(spark, settings, run_date)
    customers = lake.read(spark, lake.table_path(settings, "silver_customer_rfm"), versions["silver_customer_rfm"])
    customers = customers.filter(F.col("snapshot_date") == F.lit(run_date)).count()
    write_audit(spark, settings, run_date, "ingest", rows_in, excluded, versions)
    return {"run_date": run_date.isoformat(), "rows_in": rows_in, "customers": customers, "excluded": excluded, **versions}


def main(argv: list[str] | None = None) -> int:
    return run_step(ingest_day, "Ingest a validated day into bronze and compute its RFM snapshot.", argv)


if __name__ == "__main__":
    sys.exit(main())
