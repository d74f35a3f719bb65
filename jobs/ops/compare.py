"""The last N nights side by side, read with the MLflow client.

``python -m jobs.ops.compare --last 14``  (``make compare``)

One row per night run (superseded runs left out), newest first: date, retrain or scoring night,
algorithm, k, model version, whether a retrain took the alias, silhouette, Davies–Bouldin,
cluster sizes, cluster-label shares, the label stability against the previous snapshot, and the
CLV model version the night scored with and its 12-month total.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd
from mlflow.entities import Run

from jobs.adapters import tracking
from jobs.config import Settings, load_settings
from jobs.definitions import (
    CLV_MODEL_VERSION_PARAM,
    CLV_TOTAL_METRIC,
    NIGHT_TYPE_TAG,
    PROMOTED_TAG,
    RUN_DATE_TAG,
    STEP_TAG,
    SUPERSEDED_TAG,
)


def night_runs(settings: Settings, last: int) -> list[Run]:
    """The newest ``last`` night runs (one per run date), newest first."""
    runs = tracking.client(settings).search_runs(
        [tracking.experiment_id(settings)],
        filter_string=f"tags.`{STEP_TAG}` = 'cluster'",
        order_by=[f"tags.`{RUN_DATE_TAG}` DESC", "attributes.start_time DESC"],
    )
    return [run for run in runs if SUPERSEDED_TAG not in run.data.tags][:last]


def _cluster_sizes(metrics: dict[str, float], k: int) -> str:
    return "/".join(str(int(metrics.get(f"cluster_size_{c}", 0))) for c in range(k))


def _label_shares(metrics: dict[str, float]) -> str:
    shares = {
        name.removeprefix("label_share_"): value for name, value in metrics.items() if name.startswith("label_share_")
    }
    return " ".join(f"{label} {share:.0%}" for label, share in sorted(shares.items(), key=lambda kv: -kv[1]))


def comparison_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run with the figures analysts compare."""
    rows = []
    for run in runs:
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        k = int(params.get("k", 0))
        rows.append(
            {
                "date": tags.get(RUN_DATE_TAG),
                "night": tags.get(NIGHT_TYPE_TAG, ""),
                "algorithm": params.get("algorithm"),
                "k": k,
                "model_version": params.get("model_version"),
                "promoted": tags.get(PROMOTED_TAG, ""),
                "silhouette": metrics.get("silhouette"),
                "davies_bouldin": metrics.get("davies_bouldin"),
                "cluster_sizes": _cluster_sizes(metrics, k),
                "label_shares": _label_shares(metrics),
                "stability_cluster": metrics.get("label_stability_cluster"),
                "stability_rfm": metrics.get("label_stability_rfm"),
                "ari_cluster": metrics.get("ari_cluster"),
                "clv_model_version": params.get(CLV_MODEL_VERSION_PARAM),
                "clv_12m_total": metrics.get(CLV_TOTAL_METRIC),
                "run_id": run.info.run_id,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare the last N nightly runs (MLflow).")
    parser.add_argument("--last", type=int, default=14, help="how many nights (default 14)")
    args = parser.parse_args(argv)
    table = comparison_table(night_runs(load_settings(), args.last))
    if table.empty:
        print("No nightly runs yet: run `make run` first.")
        return 0
    settings = load_settings()
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 60):
        print(readable(table).to_string(index=False))
    print("\nRuns in the MLflow UI (make mlflow-ui):")
    for row in table.itertuples():
        print(f"  {row.date} {row.night:<8} {run_link(settings, row.run_id)}")
    return 0


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The table as printed: money to 2 decimals with thousands separators, scores to 3, the run id
    shortened (the full id and its link are printed below the table)."""
    shown = table.copy()
    shown["clv_12m_total"] = shown["clv_12m_total"].map(lambda v: "" if pd.isna(v) else f"{v:,.2f}")
    shown = shown.rename(columns={"clv_12m_total": f"clv_12m_total_{load_settings().exports.currency.lower()}"})
    shown["run_id"] = shown["run_id"].str[:8]
    return shown.round(3)


def run_link(settings: Settings, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return tracking.run_url(settings, tracking.experiment_id(settings), run_id)


if __name__ == "__main__":
    sys.exit(main())
