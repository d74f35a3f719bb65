"""The customer state's watermark: the date through which ``silver/customer_state`` holds every bronze row.

Every commit to the state carries it as Delta ``userMetadata``; the ingest step decides from it
whether a night can merge its day, the CLV step whether the state is the one of its run date. A
night without rows commits nothing (Delta skips an empty MERGE), so the watermark can lag behind
days that have no bronze rows.
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.config import Rfm, Settings
from jobs.core.clv import net_purchase_days
from jobs.core.rfm import (
    STATE_COLUMNS,
    STATE_KEY,
    compute_rfm,
    considered_lines,
    contributions,
    is_cancellation,
    is_purchase,
    merge_day,
    snapshot_from_state,
    state_from_contributions,
    state_schema,
)

STATE_METADATA_KEY = "state_through"

log = logging.getLogger(__name__)


def state_through(settings: Settings) -> date | None:
    """The date through which the state holds every bronze row, None without a state."""
    metadata = lake.latest_metadata(settings.table_path("silver_customer_state"))
    if metadata is None:
        return None
    return date.fromisoformat(json.loads(metadata)[STATE_METADATA_KEY])


def watermark(day: date) -> str:
    """The commit metadata of a state that holds every bronze row through ``day``."""
    return json.dumps({STATE_METADATA_KEY: day.isoformat()})


def has_rows_between(bronze: DataFrame, first: date, last: date) -> bool:
    """Whether bronze has rows dated ``first``..``last`` (partition-pruned; False when first > last)."""
    return first <= last and not bronze.filter(F.col("transaction_date").between(first, last)).limit(1).isEmpty()


def holds_through(settings: Settings, bronze: DataFrame, day: date) -> bool:
    """The state holds every bronze row through ``day`` and none after: its watermark is ``day``, or
    earlier with no bronze rows after it up to ``day`` (days without trading)."""
    through = state_through(settings)
    return through is not None and through <= day and not has_rows_between(bronze, through + timedelta(days=1), day)


def pinned(spark: SparkSession, settings: Settings, name: str) -> tuple[DataFrame, int]:
    """Table ``name`` at its current version, and that version (``lake.read_pinned``)."""
    return lake.read_pinned(spark, settings.table_path(name), name)


def load_snapshot(spark: SparkSession, settings: Settings, run_date: date, full: bool = False) -> dict[str, int]:
    """Silver RFM of ``run_date`` and the customer state; returns the versions read and written.

    Incremental (the day's bronze rows merged into ``silver/customer_state``, the snapshot
    derived from it) unless ``full``, ``rfm.incremental`` is off, or the state cannot take
    the day (see ``snapshot_mode``): then ``compute_rfm`` over bronze and a state rebuilt
    from bronze, the repair path.
    """
    bronze_path = settings.table_path("bronze_transactions")
    bronze_version = lake.current_version(bronze_path)
    bronze = lake.read(spark, bronze_path, bronze_version)
    mode = "full" if full or not settings.rfm.incremental else snapshot_mode(spark, settings, bronze, run_date)
    if mode == "full":
        snapshot = compute_rfm(bronze, run_date, settings.rfm)
        state_version = rebuild_state(spark, settings, bronze)
    else:
        state_version = merge_state(spark, settings, bronze, run_date)
        state = lake.read(spark, settings.table_path("silver_customer_state"), state_version)
        snapshot = snapshot_from_state(state, run_date, settings.rfm)
    silver_version = lake.replace_slice(
        snapshot,
        settings.table_path("silver_customer_rfm"),
        f"snapshot_date = {lake.date_literal(run_date)}",
        "snapshot_date",
    )
    log.info("silver snapshot of %s: %s path", run_date, mode)
    return {
        "bronze_transactions": bronze_version,
        "silver_customer_state": state_version,
        "silver_customer_rfm": silver_version,
    }


def snapshot_mode(spark: SparkSession, settings: Settings, bronze: DataFrame, run_date: date) -> str:
    """``incremental`` when the state is through ``run_date - 1`` (or through ``run_date``: a
    re-run) with no bronze rows between its watermark and ``run_date``; ``full`` otherwise (no
    state yet, a state without today's columns, a re-run of a date older than the state, or skipped
    days with rows)."""
    through = state_through(settings)
    if through is not None:
        missing = set(STATE_COLUMNS) - set(lake.read(spark, settings.table_path("silver_customer_state")).columns)
        if missing:
            log.warning("the state lacks %s (an older version wrote it): rebuilding it from bronze", sorted(missing))
            return "full"
    if through is None or through > run_date:
        log.warning("state through %s cannot take %s incrementally: recomputing from bronze", through, run_date)
        return "full"
    if has_rows_between(bronze, through + timedelta(days=1), run_date - timedelta(days=1)):
        log.warning("bronze has rows after the state's %s and before %s: recomputing from bronze", through, run_date)
        return "full"
    return "incremental"


def counted_before(bronze: DataFrame, day_rows: DataFrame, run_date: date, rules: Rfm) -> DataFrame | None:
    """(customer_id, invoice) of the day's purchase invoices already counted on an earlier date.

    Invoices never span days in the real data; this finds the ones that do so they are not
    counted twice. The invoice range of the day bounds the scan (Delta file statistics skip
    the files of other ranges). None when the day has no purchase line.
    """
    day_invoices = considered_lines(day_rows, rules).filter(is_purchase(rules)).select("customer_id", "invoice")
    low, high = day_invoices.agg(F.min("invoice"), F.max("invoice")).first()
    if low is None:
        return None
    earlier = bronze.filter((F.col("transaction_date") < F.lit(run_date)) & F.col("invoice").between(low, high))
    earlier = considered_lines(earlier, rules).filter(is_purchase(rules)).select("customer_id", "invoice")
    return earlier.join(day_invoices.distinct(), ["customer_id", "invoice"], "left_semi")


def merge_state(spark: SparkSession, settings: Settings, bronze: DataFrame, run_date: date) -> int:
    """Merge the day's bronze rows into the customer state in one MERGE; returns the state version."""
    path = settings.table_path("silver_customer_state")
    day_rows = bronze.filter(F.col("transaction_date") == F.lit(run_date))
    day = contributions(day_rows, settings.rfm, counted_before(bronze, day_rows, run_date, settings.rfm))
    changes = merge_day(lake.read(spark, path), day, run_date, settings.rfm)
    return lake.merge_by_key(changes, path, STATE_KEY, "delete", watermark(run_date))


def rebuild_state(spark: SparkSession, settings: Settings, bronze: DataFrame) -> int:
    """The customer state from all of bronze, in one overwrite; watermark: bronze's latest date."""
    latest = bronze.agg(F.max("transaction_date")).first()[0]
    if latest is None:
        state = spark.createDataFrame([], state_schema(settings.rfm))
        latest = date.min
    else:
        state = state_from_contributions(contributions(bronze, settings.rfm), settings.rfm)
    return lake.overwrite(state.select(*STATE_COLUMNS), settings.table_path("silver_customer_state"), watermark(latest))


def state_of(spark: SparkSession, settings: Settings, run_date: date) -> tuple[DataFrame, dict[str, int]]:
    """The customer state through ``run_date`` and the version read: the state table when it holds
    bronze through the run date and no later day (every night, after its ingest), else rebuilt from
    bronze up to the run date (a re-run of a date the state has moved past: the same sums)."""
    bronze, version = pinned(spark, settings, "bronze_transactions")
    if holds_through(settings, bronze, run_date):
        state, state_version = pinned(spark, settings, "silver_customer_state")
        return state, {"silver_customer_state": state_version}
    log.warning("the customer state is not the one of %s: summing bronze up to that date", run_date)
    lines = bronze.filter(F.col("transaction_date") <= F.lit(run_date).cast("date"))
    return state_from_contributions(contributions(lines, settings.rfm), settings.rfm), {"bronze_transactions": version}


def purchase_days(bronze: DataFrame, settings: Settings, run_date: date) -> pd.DataFrame:
    """customer_id, purchase_date, amount: the purchase lines' gross spend per customer and day up to
    ``run_date`` (the input of the reference summary, ``jobs.core.clv.customer_summary``, of the state's
    ``value_summary``)."""
    items = purchase_items(bronze, settings, run_date, is_purchase(settings.rfm))
    return items.groupby(["customer_id", "purchase_date"], as_index=False)["amount"].sum()


def net_purchase_days_of(bronze: DataFrame, settings: Settings, run_date: date) -> pd.DataFrame:
    """``purchase_days`` net of the cancellations up to ``run_date``, matched to what they cancel
    (``jobs.core.clv.net_purchase_days``)."""
    return net_purchase_days(
        purchase_items(bronze, settings, run_date, is_purchase(settings.rfm)),
        purchase_items(bronze, settings, run_date, is_cancellation(settings.rfm)),
    )


def net_purchase_days_between(bronze: DataFrame, settings: Settings, after: date, run_date: date) -> pd.DataFrame:
    """Net purchase days dated in (``after``, ``run_date``], from the lines of those dates only (partition-
    pruned): a cancellation in the window of a purchase before it takes nothing back."""
    return net_purchase_days(
        purchase_items(bronze, settings, run_date, is_purchase(settings.rfm), after),
        purchase_items(bronze, settings, run_date, is_cancellation(settings.rfm), after),
    )


def purchase_items(
    bronze: DataFrame, settings: Settings, run_date: date, kind: Column, after: date | None = None
) -> pd.DataFrame:
    """customer_id, stock_code, purchase_date, amount: the ``kind`` lines' quantity x price per customer,
    stock code and day up to ``run_date`` (after ``after`` when given; the lines RFM considers)."""
    dated = F.col("transaction_date") <= F.lit(run_date).cast("date")
    if after is not None:
        dated &= F.col("transaction_date") > F.lit(after).cast("date")
    lines = considered_lines(bronze.filter(dated), settings.rfm)
    return (
        lines.filter(kind)
        .groupBy("customer_id", "stock_code", F.col("transaction_date").alias("purchase_date"))
        .agg(F.sum(F.col("quantity") * F.col("price")).cast("double").alias("amount"))
        .toPandas()
    )
