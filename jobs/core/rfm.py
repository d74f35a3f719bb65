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
    top_country = main_country(revenue_by_country, "revenue")
    per_customer = purchases.groupBy("customer_id").agg(
        F.min("transaction_date").alias("first_purchase_date"),
        F.max("transaction_date").alias("last_purchase_date"),
        F.countDistinct("invoice").alias("frequency"),
        F.sum("amount").alias("monetary_gross"),
    )
    return rfm_snapshot_columns(
        per_customer.join(cancelled, "customer_id", "left").join(top_country, "customer_id", "left"), snapshot, rules
    )


def rfm_snapshot_columns(per_customer: DataFrame, snapshot: date, rules: Rfm) -> DataFrame:
    """The silver snapshot's columns from per-customer first/last purchase date, frequency,
    ``monetary_gross``, ``monetary_cancelled`` (null: none) and top ``country``."""
    snapshot_col = F.lit(snapshot).cast("date")
    money = money_type(rules)
    gross = to_money(F.col("monetary_gross"), rules, "monetary_gross")
    cancellations = to_money(F.coalesce(F.col("monetary_cancelled"), F.lit(0)), rules, "monetary_cancelled")
    net = F.greatest(gross + cancellations, F.lit(0).cast(money)) if rules.net_of_cancellations else gross
    return per_customer.select(
        snapshot_col.alias("snapshot_date"),
        "customer_id",
        F.datediff(snapshot_col, "last_purchase_date").alias("recency_days"),
        F.col("frequency").cast("int").alias("frequency"),
        to_money(net, rules, "monetary").alias("monetary"),
        gross.alias("monetary_gross"),
        cancellations.alias("monetary_cancelled"),
        "first_purchase_date",
        "last_purchase_date",
        F.datediff(snapshot_col, "first_purchase_date").alias("tenure_days"),
        "country",
    )


def money_type(rules: Rfm) -> str:
    """The exact decimal type of the snapshot's money columns."""
    return f"decimal(20,{rules.price_precision})"


def to_money(value: Column, rules: Rfm, what: str) -> Column:
    """``value`` cast to the money type, failing the query when a value does not fit (with ANSI
    off, Spark's cast would turn it into null, and ``greatest(null, 0)`` a top spender into 0)."""
    money = money_type(rules)
    overflow = F.raise_error(F.concat(F.lit(f"{what} does not fit {money}: "), value.cast("string")))
    return F.when(value.isNotNull() & value.cast(money).isNull(), overflow).otherwise(value.cast(money))


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


# ---------------------------------------------------------------- incremental RFM
#
# The per-customer state (``silver/customer_state``) holds, per (customer_id, country), what
# ``compute_rfm`` aggregates: first/last purchase date, purchase invoices, gross and cancelled
# amounts; and what the customer-value summary needs: purchase days and the gross of the key's
# first purchase day. A night adds the day's contribution in one MERGE; the snapshot of D is a pure
# function of the state through D. ``merged_date`` and the ``prev_*`` columns (the key's state
# before its latest contribution) let a re-run of the latest date replace, not add, its
# contribution. See docs/design-decisions.md ("Incremental RFM").

STATE_KEY = ["customer_id", "country"]
STATE_MEASURES = [
    "first_purchase_date",
    "last_purchase_date",
    "purchase_invoices",
    "monetary_gross",
    "monetary_cancelled",
    "purchase_days",
    "first_day_gross",
]
STATE_COLUMNS = [
    *STATE_KEY,
    *STATE_MEASURES,
    "merged_date",
    *(f"prev_{m}" for m in STATE_MEASURES),
    "prev_merged_date",
]
# Daily dedup adds up to whole-history dedup only because the dedup key holds the timestamp:
# two exact duplicates share ``invoice_date``, hence ``transaction_date``.
DEDUP_KEY_HOLDS_TIMESTAMP = "invoice_date" in CANONICAL_COLUMNS


def state_schema(rules: Rfm) -> str:
    """The DDL schema of the state table."""
    money = money_type(rules)
    measures = (
        "first_purchase_date date, last_purchase_date date, purchase_invoices bigint, "
        f"monetary_gross {money}, monetary_cancelled {money}, purchase_days bigint, first_day_gross {money}"
    )
    prev = ", ".join(f"prev_{part}" for part in measures.split(", "))
    return f"customer_id string, country string, {measures}, merged_date date, {prev}, prev_merged_date date"


def contributions(lines: DataFrame, rules: Rfm, counted_before: DataFrame | None = None) -> DataFrame:
    """Per (customer_id, country, transaction_date): the day's purchase dates, invoices, gross, cancelled,
    purchase day and first-day gross (``STATE_MEASURES``).

    ``lines`` are typed transactions of one day or of many (exact duplicates are dropped here,
    per day: duplicates share their timestamp). An invoice counts once per customer: at its
    first (date, country asc nulls last), and not at all when ``counted_before`` (customer_id,
    invoice pairs of earlier days' purchase lines) holds it — invoices that span days are
    handled, not double-counted.
    """
    if not DEDUP_KEY_HOLDS_TIMESTAMP:  # pragma: no cover - guards a change of the dedup key
        raise AssertionError("daily dedup needs the timestamp in the dedup key (CANONICAL_COLUMNS)")
    considered = considered_lines(lines, rules).withColumn("amount", F.col("quantity") * F.col("price"))
    purchase, cancellation = is_purchase(rules), is_cancellation(rules)
    first_seen = Window.partitionBy("customer_id", "invoice").orderBy("transaction_date", F.asc_nulls_last("country"))
    tagged = considered.filter(purchase | cancellation).withColumn("is_purchase", purchase)
    tagged = tagged.withColumn(
        "first_line", F.when(F.col("is_purchase"), F.row_number().over(first_seen) == 1).otherwise(F.lit(False))
    )
    if counted_before is not None:
        earlier = counted_before.select("customer_id", "invoice").distinct().withColumn("_seen", F.lit(True))
        tagged = tagged.join(earlier, ["customer_id", "invoice"], "left").withColumn(
            "first_line", F.col("first_line") & F.col("_seen").isNull()
        )
    when_purchase = F.when(F.col("is_purchase"), F.col("transaction_date"))
    per_key = tagged.groupBy("customer_id", "country", "transaction_date").agg(
        F.min(when_purchase).alias("first_purchase_date"),
        F.max(when_purchase).alias("last_purchase_date"),
        F.count(F.when(F.col("first_line"), F.lit(1))).cast("bigint").alias("purchase_invoices"),
        to_money(F.sum(F.when(F.col("is_purchase"), F.col("amount"))), rules, "monetary_gross").alias("monetary_gross"),
        to_money(F.sum(F.when(~F.col("is_purchase"), F.col("amount"))), rules, "monetary_cancelled").alias(
            "monetary_cancelled"
        ),
    )
    # a customer buying in two countries on one day has one purchase day: the first country's key counts it
    bought = F.col("first_purchase_date").isNotNull()
    buyer_day = Window.partitionBy("customer_id", "transaction_date").orderBy(
        F.desc(bought), F.asc_nulls_last("country")
    )
    counts_day = bought & (F.row_number().over(buyer_day) == 1)
    return per_key.withColumns(
        {"purchase_days": F.when(counts_day, 1).otherwise(0).cast("bigint"), "first_day_gross": F.col("monetary_gross")}
    )


def _sum_or_null(column: str, condition: Column | None = None) -> Column:
    value = F.col(column) if condition is None else F.when(condition, F.col(column))
    return F.sum(value)


def state_from_contributions(contributed: DataFrame, rules: Rfm) -> DataFrame:
    """The state (``STATE_COLUMNS``) of every key from all its contributions (the repair path)."""
    money = money_type(rules)
    key = Window.partitionBy(*(F.col(k) for k in STATE_KEY))
    before = F.col("transaction_date") < F.col("merged_date")
    latest = contributed.withColumn("merged_date", F.max("transaction_date").over(key)).withColumns(
        {
            "first_day": F.min("first_purchase_date").over(key),
            "prev_first_day": F.min(F.when(before, F.col("first_purchase_date"))).over(key),
        }
    )
    on_first_day = F.col("transaction_date") == F.col("first_day")
    on_prev_first_day = before & (F.col("transaction_date") == F.col("prev_first_day"))
    return latest.groupBy(*STATE_KEY).agg(
        F.min("first_purchase_date").alias("first_purchase_date"),
        F.max("last_purchase_date").alias("last_purchase_date"),
        F.sum("purchase_invoices").cast("bigint").alias("purchase_invoices"),
        to_money(_sum_or_null("monetary_gross"), rules, "monetary_gross").alias("monetary_gross"),
        to_money(_sum_or_null("monetary_cancelled"), rules, "monetary_cancelled").alias("monetary_cancelled"),
        F.sum("purchase_days").cast("bigint").alias("purchase_days"),
        _sum_or_null("first_day_gross", on_first_day).cast(money).alias("first_day_gross"),
        F.max("merged_date").alias("merged_date"),
        F.min(F.when(before, F.col("first_purchase_date"))).alias("prev_first_purchase_date"),
        F.max(F.when(before, F.col("last_purchase_date"))).alias("prev_last_purchase_date"),
        F.coalesce(F.sum(F.when(before, F.col("purchase_invoices"))), F.lit(0))
        .cast("bigint")
        .alias("prev_purchase_invoices"),
        _sum_or_null("monetary_gross", before).cast(money).alias("prev_monetary_gross"),
        _sum_or_null("monetary_cancelled", before).cast(money).alias("prev_monetary_cancelled"),
        F.coalesce(F.sum(F.when(before, F.col("purchase_days"))), F.lit(0)).cast("bigint").alias("prev_purchase_days"),
        _sum_or_null("first_day_gross", on_prev_first_day).cast(money).alias("prev_first_day_gross"),
        F.max(F.when(before, F.col("transaction_date"))).alias("prev_merged_date"),
    )


def _add(left: str, right: str) -> Column:
    """Null + null = null (no amount yet), else the sum with nulls as 0."""
    a, b = F.col(left), F.col(right)
    return F.when(a.isNull() & b.isNull(), None).otherwise(F.coalesce(a, F.lit(0)) + F.coalesce(b, F.lit(0)))


def first_day_gross() -> Column:
    """The merged key's first-day gross: the day's when it buys before (or without) the base's first
    purchase day, both added on the same day, else the base's."""
    base_first, day_first = F.col("b_first_purchase_date"), F.col("s_first_purchase_date")
    return (
        F.when(day_first.isNull(), F.col("b_first_day_gross"))
        .when(base_first.isNull() | (day_first < base_first), F.col("s_first_day_gross"))
        .when(day_first == base_first, _add("b_first_day_gross", "s_first_day_gross"))
        .otherwise(F.col("b_first_day_gross"))
    )


def merge_day(state: DataFrame, day: DataFrame, run_date: date, rules: Rfm) -> DataFrame:
    """New state rows of the keys the night of ``run_date`` touches, plus a ``delete`` flag.

    ``state``: state rows (any superset of the touched keys); ``day``: ``contributions`` of
    ``run_date``. A key last merged on ``run_date`` (a re-run) starts again from its ``prev_*``
    columns; a key the re-run no longer contributes to goes back to them (or is deleted when
    it had nothing before). Every other key starts from its current values.
    """
    money = money_type(rules)
    d = F.lit(run_date).cast("date")
    t = state.select(*[F.col(c).alias(f"t_{c}") for c in STATE_COLUMNS])
    s = day.select(*[F.col(c).alias(f"s_{c}") for c in [*STATE_KEY, *STATE_MEASURES]])
    on = F.col("t_customer_id").eqNullSafe(F.col("s_customer_id")) & F.col("t_country").eqNullSafe(F.col("s_country"))
    rerun = F.coalesce(F.col("t_merged_date") == d, F.lit(False))
    in_day = F.col("s_purchase_invoices").isNotNull()  # every contribution row has a count (maybe 0)
    joined = t.join(s, on, "full_outer").filter(in_day | rerun)
    base = {m: F.when(rerun, F.col(f"t_prev_{m}")).otherwise(F.col(f"t_{m}")) for m in STATE_MEASURES}
    base_merged = F.when(rerun, F.col("t_prev_merged_date")).otherwise(F.col("t_merged_date"))
    b = joined.select("*", *[v.alias(f"b_{m}") for m, v in base.items()], base_merged.alias("b_merged_date"))
    added = {
        "first_purchase_date": F.least("b_first_purchase_date", "s_first_purchase_date"),
        "last_purchase_date": F.greatest("b_last_purchase_date", "s_last_purchase_date"),
        "purchase_invoices": F.coalesce(F.col("b_purchase_invoices"), F.lit(0))
        + F.coalesce(F.col("s_purchase_invoices"), F.lit(0)),
        "monetary_gross": _add("b_monetary_gross", "s_monetary_gross"),
        "monetary_cancelled": _add("b_monetary_cancelled", "s_monetary_cancelled"),
        "purchase_days": F.coalesce(F.col("b_purchase_days"), F.lit(0))
        + F.coalesce(F.col("s_purchase_days"), F.lit(0)),
        "first_day_gross": first_day_gross(),
    }
    key = [F.when(in_day, F.col(f"s_{k}")).otherwise(F.col(f"t_{k}")).alias(k) for k in STATE_KEY]
    # a re-run key without a contribution tonight: back to its previous state (prev unknown now)
    new = [F.when(in_day, added[m]).otherwise(F.col(f"b_{m}")) for m in STATE_MEASURES]
    types = {
        "purchase_invoices": "bigint",
        "purchase_days": "bigint",
        "monetary_gross": money,
        "monetary_cancelled": money,
        "first_day_gross": money,
    }
    measures = [
        (to_money(v, rules, m) if types.get(m) == money else v.cast(types.get(m, "date"))).alias(m)
        for m, v in zip(STATE_MEASURES, new, strict=True)
    ]
    prev = [F.when(in_day, F.col(f"b_{m}")).cast(types.get(m, "date")).alias(f"prev_{m}") for m in STATE_MEASURES]
    return b.select(
        *key,
        *measures,
        F.when(in_day, d).otherwise(F.col("b_merged_date")).alias("merged_date"),
        *prev,
        F.when(in_day, F.col("b_merged_date")).alias("prev_merged_date"),
        (~in_day & F.col("b_merged_date").isNull()).alias("delete"),
    )


def main_country(revenue_by_country: DataFrame, revenue: str) -> DataFrame:
    """Each customer's country: the one with the most ``revenue`` (ties: the first country by name)."""
    order = Window.partitionBy("customer_id").orderBy(F.desc(revenue), F.asc_nulls_last("country"))
    return (
        revenue_by_country.withColumn("rank", F.row_number().over(order))
        .filter(F.col("rank") == 1)
        .select("customer_id", "country")
    )


def snapshot_from_state(state: DataFrame, snapshot: date, rules: Rfm) -> DataFrame:
    """The silver snapshot of ``snapshot`` (``compute_rfm``'s schema) from the state through that date."""
    buyers = state.filter(F.col("first_purchase_date").isNotNull())
    top_country = main_country(buyers, "monetary_gross")
    per_customer = (
        state.groupBy("customer_id")
        .agg(
            F.min("first_purchase_date").alias("first_purchase_date"),
            F.max("last_purchase_date").alias("last_purchase_date"),
            F.sum("purchase_invoices").alias("frequency"),
            F.sum("monetary_gross").alias("monetary_gross"),
            F.sum("monetary_cancelled").alias("monetary_cancelled"),
        )
        .filter(F.col("first_purchase_date").isNotNull())
    )
    return rfm_snapshot_columns(per_customer.join(top_country, "customer_id", "left"), snapshot, rules)


def value_summary(state: DataFrame, as_of: date) -> DataFrame:
    """The customer-value summary of every buyer from the state through ``as_of``: the columns and
    library convention of ``jobs.core.clv.customer_summary`` (its reference over purchase lines).

    Purchase days add up over a customer's countries (each day counted by one key); the repeat
    days' mean spend is the gross beyond the first purchase day over the repeat days.
    """
    buyers = state.filter(F.col("first_purchase_date").isNotNull())
    customer_first = F.min("first_purchase_date").over(Window.partitionBy("customer_id"))
    per_customer = (
        buyers.withColumn("customer_first", customer_first)
        .groupBy("customer_id")
        .agg(
            F.sum("purchase_days").alias("purchase_days"),
            F.min("first_purchase_date").alias("first"),
            F.max("last_purchase_date").alias("last"),
            F.sum("monetary_gross").alias("gross"),
            F.sum(F.when(F.col("first_purchase_date") == F.col("customer_first"), F.col("first_day_gross"))).alias(
                "first_gross"
            ),
        )
    )
    repeats = F.col("purchase_days") - 1
    repeat_mean = (F.col("gross") - F.col("first_gross")).cast("double") / repeats
    return per_customer.select(
        "customer_id",
        repeats.cast("double").alias("frequency"),
        F.datediff("last", "first").cast("double").alias("recency"),
        F.datediff(F.lit(as_of).cast("date"), "first").cast("double").alias("T"),
        F.when(repeats > 0, repeat_mean).otherwise(F.lit(0.0)).alias("monetary_value"),
    )
