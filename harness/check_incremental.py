"""Incremental RFM against the reference, night by night: ``make test-incremental-year``.

``python -m harness.check_incremental --source F --from D1 --to D2 [--rerun-every N]``

Loads the source's days before ``D1`` into bronze and builds the customer state from them
(the repair path), then for every night D of [D1, D2]: writes D's bronze partition, derives
the silver snapshot of D incrementally (one MERGE into the state) and compares it, row for
row and column for column, with ``compute_rfm`` over bronze, and the customer-value summary the
clv step reads from the state with ``customer_summary`` over bronze's purchase lines. Every ``N``-th night is run
twice (a re-run must converge). Prints one line per night and exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.adapters.customer_state import load_snapshot, purchase_days, rebuild_state, state_of
from jobs.adapters.spark import get_spark
from jobs.adapters.transactions import parse_transactions, typed_rows
from jobs.cli import configure_logging
from jobs.config import Settings, load_settings
from jobs.core.clv import SUMMARY_COLUMNS, customer_summary
from jobs.core.rfm import compute_rfm, value_summary
from jobs.definitions import days_between
from jobs.ops.backfill import read_source

log = logging.getLogger(__name__)


def typed_source(spark: SparkSession, settings: Settings, source: Path) -> DataFrame:
    """Every row of an export file as typed bronze rows."""
    return typed_rows(parse_transactions(read_source(spark, source, settings=settings), settings))


def differences(spark: SparkSession, settings: Settings, night: date, bronze: DataFrame | None = None) -> int:
    """Rows of the silver snapshot of ``night`` and of ``compute_rfm`` over bronze that differ (both
    ways); ``bronze``: the table already read (and cached) by a caller checking many nights."""
    silver = lake.read(spark, settings.table_path("silver_customer_rfm")).filter(F.col("snapshot_date") == night)
    if bronze is None:
        bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    reference = compute_rfm(bronze, night, settings.rfm).cache()  # each side is compared twice
    silver = silver.select(*reference.columns).cache()
    differing = silver.exceptAll(reference).count() + reference.exceptAll(silver).count()
    reference.unpersist()
    silver.unpersist()
    return differing


def value_differences(
    spark: SparkSession,
    settings: Settings,
    night: date,
    bronze: DataFrame | None = None,
    state: DataFrame | None = None,
) -> int:
    """Customers whose value summary from ``state`` (default: as the clv step derives it, ``state_of``:
    the state, or bronze for a date the state has moved past) differs from ``customer_summary`` over
    bronze (relative 1e-9: the reference averages floats, the state subtracts exact decimals); a
    customer on one side only counts once."""
    if bronze is None:
        bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    if state is None:
        state, _ = state_of(spark, settings, night)
    ours = value_summary(state, night).toPandas().set_index("customer_id").sort_index()
    reference = customer_summary(purchase_days(bronze, settings, night), night).set_index("customer_id").sort_index()
    if not ours.index.equals(reference.index):
        return len(ours.index.symmetric_difference(reference.index))
    columns = SUMMARY_COLUMNS[1:]
    close = np.isclose(ours[columns].to_numpy(), reference[columns].to_numpy(), rtol=1e-9, atol=1e-9)
    return int((~close.all(axis=1)).sum())


def check_nights(
    spark: SparkSession, settings: Settings, rows: DataFrame, first: date, last: date, rerun_every: int = 0
) -> list[dict[str, Any]]:
    """History before ``first`` into bronze and the state, then every night compared; one record per run."""
    bronze = settings.table_path("bronze_transactions")
    rows = rows.cache()
    before = f"transaction_date < {lake.date_literal(first)}"
    lake.replace_slice(rows.filter(before), bronze, before, "transaction_date")
    rebuild_state(spark, settings, lake.read(spark, bronze))
    records = []
    for index, night in enumerate(days_between(first, last)):
        predicate = f"transaction_date = {lake.date_literal(night)}"
        lake.replace_slice(rows.filter(predicate), bronze, predicate, "transaction_date")
        runs = 2 if rerun_every and index % rerun_every == rerun_every - 1 else 1
        for run in range(runs):
            started = time.monotonic()
            load_snapshot(spark, settings, night)
            seconds = time.monotonic() - started
            record = {
                "night": night.isoformat(),
                "run": run + 1,
                "differences": differences(spark, settings, night),
                "value_differences": value_differences(spark, settings, night),
                "seconds": round(seconds, 1),
            }
            log.info("%s", record)
            records.append(record)
    rows.unpersist()
    return records


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="export file (.csv, .csv.gz)")
    parser.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="first night")
    parser.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="last night")
    parser.add_argument("--rerun-every", type=int, default=7, help="re-run every N-th night (0: never)")
    args = parser.parse_args(argv)
    settings = load_settings()
    spark = get_spark(settings)
    rows = typed_source(spark, settings, args.source)
    records = check_nights(spark, settings, rows, args.first, args.last, args.rerun_every)
    bad = [r for r in records if r["differences"] or r["value_differences"]]
    print(json.dumps({"nights": len({r["night"] for r in records}), "runs": len(records), "failed": bad}, indent=2))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
