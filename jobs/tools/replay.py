"""Real history night by night in this process: the DAG's tasks in order, without Airflow.

``python -m jobs.tools.replay --source F --until D0 --to D2 [--label-on D ...]``

History up to ``until`` is loaded into bronze in one commit (the backfill's load, without
its per-day validation); each later day is landed from the source, then validated, ingested,
clustered and labelled — on every night, or only on the ``--label-on`` dates (ingest runs
every night, so RFM continuity holds). ``make replay`` runs the same nights through Airflow.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from jobs.adapters.expectations import validation_frame
from jobs.adapters.spark import get_spark
from jobs.config import Settings, load_settings
from jobs.definitions import days_between
from jobs.steps.cluster import cluster_day
from jobs.steps.ingest import ingest_day, write_daily_tables
from jobs.steps.label import label_day
from jobs.steps.validate import validate_day
from jobs.tools.backfill import first_day, load_history, read_source
from jobs.tools.split import date_column, land_days, read_export


def replay_nights(settings: Settings, spark: SparkSession, source: Path, until: date, last: date,
                  label_on: set[date] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Load history to ``until``, then run every night to ``last``; one row per labelled night."""
    history = validation_frame(read_source(spark, source, settings=settings), settings)
    start = first_day(history)
    load_history(spark, settings, history, start, until)
    write_daily_tables(spark, settings, start, until)
    export = read_export(source)
    first = until + timedelta(days=1)
    land_days(export, settings.path("landing_dir"), first, last, settings.landing.marker, settings.landing.format,
              date_column(export, settings))  # fmt: skip
    rows = []
    for night in days_between(first, last):
        validate_day(night, settings, spark)
        ingest_day(night, settings, spark)
        if label_on is None or night in label_on:
            clustered = cluster_day(night, settings, spark)
            labelled = label_day(night, settings, spark)
            rows.append({"night": night, "kind": clustered["night_type"], "version": clustered["model_version"],
                         "k": clustered["k"], "customers": labelled["customers"], **labelled["stability"]})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="export file (.csv, .csv.gz, .parquet)")
    parser.add_argument("--until", required=True, type=date.fromisoformat, help="last day of the loaded history")
    parser.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="last night to run")
    parser.add_argument("--label-on", nargs="*", type=date.fromisoformat, help="cluster and label only these nights")
    args = parser.parse_args(argv)
    settings = load_settings()
    spark = get_spark(settings)
    label_on = set(args.label_on) if args.label_on else None
    rows = replay_nights(settings, spark, args.source, args.until, args.last, label_on)
    print(json.dumps(rows, default=str, indent=2))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
