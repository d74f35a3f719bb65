"""MLflow plumbing: the experiment, one active run per (DAG, run date), lineage tags."""

from __future__ import annotations

from datetime import date

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from jobs.config import Settings

RUN_DATE_TAG = "rfm.run_date"
DAG_TAG = "airflow.dag_id"
SUPERSEDED_TAG = "rfm.superseded_by"


def client(settings: Settings) -> MlflowClient:
    """A client on the configured tracking store (also set as MLflow's default)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri)


def experiment_id(settings: Settings) -> str:
    """The experiment's id, created with artifacts under the MLflow dir on first use."""
    tracking = client(settings)
    found = tracking.get_experiment_by_name(settings.mlflow.experiment)
    if found is not None:
        return found.experiment_id
    artifacts = settings.path("mlflow_dir") / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return tracking.create_experiment(settings.mlflow.experiment, artifact_location=artifacts.as_uri())


def runs_for_date(settings: Settings, dag_id: str, run_date: date) -> list[Run]:
    """Active runs recorded for (DAG, run date), newest first."""
    return client(settings).search_runs(
        [experiment_id(settings)],
        filter_string=f"tags.`{RUN_DATE_TAG}` = '{run_date.isoformat()}' and tags.`{DAG_TAG}` = '{dag_id}'",
        order_by=["attributes.start_time DESC"],
    )


def supersede_earlier_runs(settings: Settings, dag_id: str, run_date: date, keep_run_id: str) -> list[str]:
    """Tag and soft-delete older runs of the same (DAG, run date); returns their ids."""
    tracking = client(settings)
    superseded = [run.info.run_id for run in runs_for_date(settings, dag_id, run_date) if run.info.run_id != keep_run_id]
    for run_id in superseded:
        tracking.set_tag(run_id, SUPERSEDED_TAG, keep_run_id)
        tracking.delete_run(run_id)
    return superseded
