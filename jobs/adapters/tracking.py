"""MLflow plumbing: the experiment, one active run per (DAG, run date), lineage tags.

A night's run is the parent (tag ``rfm.step = cluster``); a retrain night's sweep fits are its
child runs. A re-run of a date supersedes the earlier run: tagged ``rfm.superseded_by`` and
soft-deleted with its children — unless it trained a registered model version, whose source
it is: that run stays restorable in place, tagged, and is no longer the date's run.
"""

from __future__ import annotations

import os
from datetime import date

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from jobs import storage
from jobs.config import Settings
from jobs.definitions import (
    DAG_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    RUN_DATE_TAG,
    STEP_TAG,
    SUPERSEDED_TAG,
    TRAINED_VERSION_TAG,
)


def client(settings: Settings) -> MlflowClient:
    """A client on the configured tracking store (also set as MLflow's default); with the artifacts
    on a bucket, the S3 endpoint and keys are in this process's environment (boto3 reads them)."""
    os.environ.update(storage.mlflow_env(settings))
    mlflow.set_tracking_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri)


def experiment_id(settings: Settings) -> str:
    """The experiment's id, created with artifacts under the MLflow dir on first use."""
    tracking = client(settings)
    found = tracking.get_experiment_by_name(settings.mlflow.experiment)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:  # an experiment created before the tag
            tracking.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id
    kind = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    if settings.tracking_uri.startswith(("http://", "https://")):  # a server: it stores (proxies) artifacts
        return tracking.create_experiment(settings.mlflow.experiment, tags=kind)
    if settings.mlflow.artifacts_destination:  # a bucket (s3://…) or a folder the store names as is
        return tracking.create_experiment(
            settings.mlflow.experiment, artifact_location=settings.mlflow.artifacts_destination.rstrip("/"), tags=kind
        )
    artifacts = settings.path("mlflow_dir") / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    return tracking.create_experiment(settings.mlflow.experiment, artifact_location=artifacts.as_uri(), tags=kind)


def runs_for_date(settings: Settings, dag_id: str, run_date: date) -> list[Run]:
    """Active, not superseded night runs recorded for (DAG, run date), newest first."""
    runs = client(settings).search_runs(
        [experiment_id(settings)],
        filter_string=(
            f"tags.`{RUN_DATE_TAG}` = '{run_date.isoformat()}' and tags.`{DAG_TAG}` = '{dag_id}' "
            f"and tags.`{STEP_TAG}` = 'cluster'"
        ),
        order_by=["attributes.start_time DESC"],
    )
    return [run for run in runs if SUPERSEDED_TAG not in run.data.tags]


def child_runs(settings: Settings, parent_run_id: str) -> list[Run]:
    """The runs nested under ``parent_run_id`` (a retrain night's sweep)."""
    return client(settings).search_runs(
        [experiment_id(settings)], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    )


def trained_a_version(tracking: MlflowClient, run: Run) -> bool:
    """Whether ``run`` is the source of a registered model version (even if a crash kept it from
    being tagged so)."""
    if TRAINED_VERSION_TAG in run.data.tags:
        return True
    return bool(tracking.search_model_versions(f"run_id = '{run.info.run_id}'"))


def supersede_earlier_runs(settings: Settings, dag_id: str, run_date: date, keep_run_id: str) -> list[str]:
    """Tag older runs of the same (DAG, run date) and soft-delete them with their children,
    except runs that trained a registered version; returns the superseded ids."""
    tracking = client(settings)
    superseded = [run for run in runs_for_date(settings, dag_id, run_date) if run.info.run_id != keep_run_id]
    for run in superseded:
        tracking.set_tag(run.info.run_id, SUPERSEDED_TAG, keep_run_id)
        if trained_a_version(tracking, run):
            continue
        for child in child_runs(settings, run.info.run_id):
            tracking.delete_run(child.info.run_id)
        tracking.delete_run(run.info.run_id)
    return [run.info.run_id for run in superseded]


DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"  # `make mlflow-ui`


def ui_base(settings: Settings) -> str:
    """The MLflow UI: ``mlflow.ui_url``, else the tracking server, else `make mlflow-ui`'s address."""
    if settings.mlflow.ui_url:
        return settings.mlflow.ui_url.rstrip("/")
    if settings.tracking_uri.startswith(("http://", "https://")):
        return settings.tracking_uri.rstrip("/")
    return DEFAULT_MLFLOW_UI


def runs_page(base: str, experiment: str) -> str:
    """The runs tab of an experiment in the MLflow UI at ``base`` (MLflow 3 opens an experiment on
    its GenAI overview otherwise)."""
    return f"{base}/#/experiments/{experiment}/runs"


def run_page(base: str, experiment: str, run_id: str) -> str:
    """One run's page in the MLflow UI at ``base``."""
    return f"{runs_page(base, experiment)}/{run_id}"


def compare_page(base: str, experiment: str, run_ids: list[str]) -> str:
    """The MLflow UI's comparison of ``run_ids`` (runs of ``experiment``)."""
    import json
    from urllib.parse import quote

    return f"{base}/#/compare-runs?runs={quote(json.dumps(run_ids))}&experiments={quote(json.dumps([experiment]))}"


def run_url(settings: Settings, experiment: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return run_page(ui_base(settings), experiment, run_id)


def describe_version(settings: Settings, name: str, version: str, run_id: str, what: str, trained_on: str) -> None:
    """Descriptions (MLflow's Description boxes) on a registered model and one of its versions,
    linking back to the training run (whose description names the Airflow run and the EDA report)."""
    registry = client(settings)
    registry.update_registered_model(
        name,
        description=(
            f"{what}. One version per retrain night; the version nights score with holds the alias "
            "`@champion`. Each version's description names the night and the MLflow run that trained it; "
            "that run's description names the Airflow DAG run, and its artifact `eda/report.html` is the "
            "night's EDA report. Lifecycle: docs/model-lifecycle.md."
        ),
    )
    registry.update_model_version(
        name,
        version,
        description=(
            f"Trained on the night {trained_on} in MLflow run [{run_id}]({run_url(settings, experiment_id(settings), run_id)}) "
            "(its description: the Airflow DAG run; its artifacts: the EDA report `eda/report.html`)."
        ),
    )
