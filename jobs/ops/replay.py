"""Real history night by night in this process: the DAG's tasks in order, without Airflow.

``python -m jobs.ops.replay --source F --until D0 --to D2 [--label-on D ...]``

History up to ``until`` is loaded into bronze in one commit (the backfill's load, without
its per-day validation); each later day is landed from the source, then runs every step of the
DAG in order (``jobs.definitions.NIGHT_STEPS``: validate, ingest, cluster, label, clv, eda) — on every night,
or, past ingest, only on the ``--label-on`` dates (validate and ingest run every night, so RFM
continuity holds); ``--skip`` leaves steps out (e.g. ``eda`` for a long stability run).
``make replay`` runs the same nights through Airflow.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from jobs.adapters.daily_tables import write_daily_tables
from jobs.adapters.expectations import validation_frame
from jobs.adapters.spark import get_spark
from jobs.cli import night_steps
from jobs.config import Settings, load_settings
from jobs.definitions import NIGHT_STEPS, days_between
from jobs.ops.backfill import first_day, load_history, read_source
from jobs.ops.split import date_column, land_days, read_export

EVERY_NIGHT = ("validate", "ingest")  # the steps that keep the RFM snapshots continuous


def run_step(name: str, night: date, settings: Settings, spark: SparkSession) -> dict[str, Any]:
    """One step of the DAG for ``night`` in this process (the Spark session passed where taken)."""
    step = night_steps()[name]
    takes_spark = "spark" in inspect.signature(step).parameters
    return step(night, settings, spark) if takes_spark else step(night, settings)


def night_row(night: date, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the cluster, label and clv steps reported for one night (the promotion when there was one)."""
    clustered, labelled = results["cluster"], results["label"]
    promotion = clustered.get("promotion") or {}
    idle = promotion.get("idle") or {}
    row = {
        "night": night,
        "kind": clustered["night_type"],
        "version": clustered["model_version"],
        "k": clustered["k"],
        "promoted": promotion.get("promoted"),
        **{f"idle_{key}": idle.get(key) for key in ("champion_changes", "candidate_changes", "relabelled")},
        "customers": labelled["customers"],
        **labelled["stability"],
    }
    if "clv" in results:
        clv = results["clv"]
        row.update(
            clv_model_version=clv["clv_model_version"],
            clv_fitted=clv["fitted"],
            clv_params=clv["params"],
            clv_state_version=clv["read_versions"].get("silver_customer_state"),
        )
    return row


def replay_nights(
    settings: Settings,
    spark: SparkSession,
    source: Path,
    until: date,
    last: date,
    label_on: set[date] | None = None,
    skip: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Load history to ``until``, then run every night to ``last``; one row per labelled night."""
    history = validation_frame(read_source(spark, source, settings=settings), settings)
    start = first_day(history)
    load_history(spark, settings, history, start, until)
    write_daily_tables(spark, settings, start, until)
    export = read_export(source)
    first = until + timedelta(days=1)
    land_days(
        export,
        settings.path("landing_dir"),
        first,
        last,
        settings.landing.marker,
        settings.landing.format,
        date_column(export, settings),
    )
    steps = [name for name in NIGHT_STEPS if name not in (skip or set())]
    rows = []
    for night in days_between(first, last):
        modelled = label_on is None or night in label_on
        results, seconds = {}, {}
        for name in steps:
            if modelled or name in EVERY_NIGHT:
                started = time.perf_counter()
                results[name] = run_step(name, night, settings, spark)
                seconds[f"seconds_{name}"] = round(time.perf_counter() - started, 1)
        if modelled:
            rows.append({**night_row(night, results), **seconds})
    return rows


def stability_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: idle customers' cluster-label stability per night, then per night type (a retrain
    night's type says whether its version was promoted)."""
    import pandas as pd

    nights = pd.DataFrame(rows)
    if "stability_population" not in nights:
        return "no night with a previous snapshot\n"
    nights = nights[nights["stability_population"].notna()].copy()
    nights["type"] = nights["kind"].where(
        nights["kind"] != "retrain",
        nights["promoted"].map({True: "retrain (promoted)", False: "retrain (champion kept)"}),
    )
    lines = [
        "| night | type | version | idle | kept | changed | relabelled by the refit |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in nights.itertuples():
        relabelled = "" if pd.isna(row.idle_relabelled) else f"{row.idle_relabelled:.0f}"
        lines.append(
            f"| {row.night} | {row.type} | {row.version} | {row.stability_population:,.0f} | "
            f"{row.label_stability_cluster:.2%} | {row.label_changes_cluster:.0f} | {relabelled} |"
        )
    lines += ["", "| night type | nights | kept (min–max) | changed per night (min–max) |", "|---|---|---|---|"]
    for kind, group in nights.groupby("type"):
        kept, changed = group["label_stability_cluster"], group["label_changes_cluster"]
        lines.append(
            f"| {kind} | {len(group)} | {kept.min():.2%}–{kept.max():.2%} | {changed.min():.0f}–{changed.max():.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="export file (.csv, .csv.gz, .parquet)")
    parser.add_argument("--until", required=True, type=date.fromisoformat, help="last day of the loaded history")
    parser.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="last night to run")
    parser.add_argument("--label-on", nargs="*", type=date.fromisoformat, help="cluster and label only these nights")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(NIGHT_STEPS), help="steps to leave out")
    parser.add_argument("--table", type=Path, help="also write the stability table (markdown) here")
    args = parser.parse_args(argv)
    settings = load_settings()
    spark = get_spark(settings)
    label_on = set(args.label_on) if args.label_on else None
    rows = replay_nights(settings, spark, args.source, args.until, args.last, label_on, set(args.skip))
    print(json.dumps(rows, default=str, indent=2))
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(stability_table(rows), encoding="utf-8")
        print(args.table.read_text(encoding="utf-8"))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
