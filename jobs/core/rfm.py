"""RFM: which lines count, and the per-customer recency, frequency and monetary as of a date.

The purchase and cancellation rules are SQL predicates, so Spark (``F.expr``) and DuckDB apply
the very same text; ``compute_rfm`` is the reference computation of a snapshot.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.config import Rfm
from jobs.core.rules import cancellation_sql, non_product_sql, non_purchase_invoice_sql, purchase_sql
from jobs.definitions import CANONICAL_COLUMNS

EXCLUSION_REASONS = [
    "missing_customer_id",
    "non_product",
    "duplicate",
    "cancellation",
    "other_non_purchase",
    "non_positive_quantity",
    "non_positive_price",
]


def considered_lines(transactions: DataFrame, rules: Rfm) -> DataFrame:
    """Lines that count for RFM: customer known, a product (not a charge), no exact duplicates."""
    lines = transactions
    if rules.require_customer_id:
        lines = lines.filter(F.col("customer_id").isNotNull())
    lines = lines.filter(~F.expr(non_product_sql(rules)))
    if rules.drop_exact_duplicates:
        lines = lines.dropDuplicates(CANONICAL_COLUMNS)
    return lines


def is_purchase(rules: Rfm) -> Column:
    """A purchase line (``rules.purchase_sql``)."""
    return F.expr(purchase_sql(rules))


def is_cancellation(rules: Rfm) -> Column:
    """A cancellation line (``rules.cancellation_sql``)."""
    return F.expr(cancellation_sql(rules))


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
        .when(F.expr(non_product_sql(rules)), "non_product")
        .when(duplicate, "duplicate")
        .when(is_cancellation(rules), "cancellation")
        .when(F.expr(non_purchase_invoice_sql(rules)), "other_non_purchase")
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
