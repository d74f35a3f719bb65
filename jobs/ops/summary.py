"""Where a run's outputs are, and the segments of a snapshot — read without a JVM (delta-rs).

``python -m jobs.ops.summary --run-date YYYY-MM-DD``
"""

from __future__ import annotations

import sys
from datetime import date

import pandas as pd
from deltalake import DeltaTable

from jobs.adapters import registry, tracking
from jobs.adapters.publish import published_version
from jobs.cli import run_date_parser
from jobs.config import Settings, load_settings
from jobs.definitions import TABLES
from jobs.steps.export import read_manifest


def segment_table(settings: Settings, run_date: date) -> pd.DataFrame:
    """The published gold segment summary of ``run_date``, best segments first within each scheme."""
    version = published_version(settings, "gold_segment_summary", run_date)
    table = DeltaTable(str(settings.table_path("gold_segment_summary")), version=version)
    summary = table.to_pandas(filters=[("snapshot_date", "=", run_date)])
    return summary.sort_values(["label_scheme", "monetary_total"], ascending=[True, False])


def export_lines(settings: Settings, run_date: date) -> list[str]:
    """Where the snapshot's segment exports and campaign lists are, or how to write them."""
    manifest = read_manifest(settings, run_date)
    folder = settings.path("exports_dir") / f"snapshot_date={run_date}"
    if manifest is None:
        return [f"Segment exports: none for {run_date} yet (python -m jobs.ops.exports writes them)"]
    lines = [
        f"Segment exports: {folder}  ({manifest['customers']} customers, exported {manifest['exported_at']}; "
        "column dictionary in manifest.json)"
    ]
    lines += [
        f"  campaign {c['campaign']}: {c['rows']} customers -> {folder / c['csv']}"
        for c in manifest.get("campaigns", [])
    ]
    return lines


def report(settings: Settings, run_date: date) -> str:
    """A plain-text report: table locations and versions, MLflow run, segments."""
    lines = [f"RFM segmentation — snapshot {run_date}", "", "Delta tables:"]
    for name in TABLES:
        path = settings.table_path(name)
        version = DeltaTable(str(path)).version() if DeltaTable.is_deltatable(str(path)) else None
        lines.append(f"  {name:<26} v{version}  {path}")
    runs = tracking.runs_for_date(settings, settings.dag.dag_id, run_date)
    lines += ["", f"MLflow: {settings.tracking_uri}  (make mlflow-ui; make compare for the last nights)"]
    lines += [
        f"  run {r.info.run_id}  {r.data.tags.get('rfm.night_type', '?')} night, model version "
        f"{r.data.params.get('model_version', '?')}, k={r.data.params.get('k', '?')}, "
        f"silhouette={r.data.metrics.get('silhouette', float('nan')):.3f}"
        for r in runs
    ]
    champion = registry.champion(settings)
    if champion is not None:
        lines.append(f"  {registry.champion_uri(settings)} -> version {champion.version}")
    lines += ["", f"EDA report: {settings.report_dir(run_date) / 'report.html'}", "Segment explorer: make dashboard"]
    lines += ["", *export_lines(settings, run_date)]
    summary = segment_table(settings, run_date)
    pd.set_option("display.width", 160)
    for scheme, rows in summary.groupby("label_scheme"):
        shown = rows[
            [
                "segment",
                "customers",
                "customer_share",
                "mean_recency_days",
                "mean_frequency",
                "mean_monetary",
                "revenue_share",
            ]
        ]
        lines += ["", f"Segments ({scheme} labels):", shown.round(3).to_string(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = run_date_parser("Print where the outputs are and the segments of a snapshot.").parse_args(argv)
    print(report(load_settings(), args.run_date))
    return 0


if __name__ == "__main__":
    sys.exit(main())
