"""A retrain night is several registry calls; a crash between any two must leave a state the next
attempt of the date completes (issue 12, items 7 and 8).

One night (12-05) trains the champion; the next (12-06, cadence 1 day) retrains. Each trial copies
that lake + MLflow store, makes one call of the 12-06 retrain fail, runs the cluster step again,
and compares the outcome with a clean 12-06.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from jobs.adapters import lake, registry, tracking
from jobs.definitions import PROMOTION_TAG, TRAINED_VERSION_TAG
from jobs.steps import cluster
from jobs.steps.cluster import cluster_day, plan_for
from tests.conftest import settings_for
from tests.helpers import generated_rows, write_rfm_snapshots

FIRST, SECOND, THIRD = date(2011, 12, 5), date(2011, 12, 6), date(2011, 12, 7)


class Crash(RuntimeError):
    """The injected failure."""


# --- item 8: only "not found" means no champion ------------------------------------------------------


def test_no_champion_only_when_the_registry_says_not_found(settings, monkeypatch) -> None:
    assert registry.champion(settings) is None  # no registered model: RESOURCE_DOES_NOT_EXIST
    tracking.client(settings).create_registered_model(settings.model.registered_name)
    assert registry.champion(settings) is None  # a model without the alias: "alias ... not found"

    def unavailable(self, name, alias):
        raise MlflowException("database is locked", TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "get_model_version_by_alias", unavailable)
    with pytest.raises(MlflowException, match="database is locked"):
        registry.champion(settings)


# --- item 7: crash between the calls of a retrain, then retry ----------------------------------------


def copy_store(base, target: Path):
    """A private copy of the lake and MLflow store of ``base`` settings."""
    shutil.copytree(base.path("data_dir"), target, dirs_exist_ok=True)
    return settings_for(target, **{name: getattr(base, name).model_dump() for name in ("model", "clustering")})


@pytest.fixture(scope="module")
def first_night(spark, tmp_path_factory):
    """Silver for three nights of 300 generated customers; the first night clustered (the champion)."""
    root = tmp_path_factory.mktemp("recovery")
    settings = settings_for(root / "base", model={"retrain_every_days": 1}, clustering={"k": 4})
    rows = generated_rows(spark, settings, root / "export.csv", customers=300, days=60, seed=11, end_date=THIRD)
    write_rfm_snapshots(settings, rows, (FIRST, SECOND, THIRD))
    cluster_day(FIRST, settings, spark)
    return settings


@pytest.fixture(scope="module")
def clean_second(spark, first_night, tmp_path_factory):
    """The second night run without a crash: the outcome every recovered trial must reach."""
    settings = copy_store(first_night, tmp_path_factory.mktemp("clean"))
    return cluster_day(SECOND, settings, spark)


def crash_in(monkeypatch, point: str) -> None:
    """Make the retrain fail at ``point``: the call named there raises."""

    def boom(*args, **kwargs):
        raise Crash(point)

    target = {
        "before-register": (registry.mlflow, "register_model"),  # model logged to the run, no version
        "before-decision": (registry, "record_decision"),  # version registered, never evaluated
        "before-alias": (registry, "move_alias"),  # decision recorded, alias not moved
        "before-run-tags": (cluster, "finish_retrain"),  # alias moved, the run not tagged
        "before-clusters": (lake, "replace_slice"),  # scored, nothing written
    }[point]
    monkeypatch.setattr(*target, boom)


@pytest.mark.parametrize(
    "point", ["before-register", "before-decision", "before-alias", "before-run-tags", "before-clusters"]
)
def test_a_retry_completes_a_crashed_retrain(spark, first_night, clean_second, tmp_path, point) -> None:
    settings = copy_store(first_night, tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        crash_in(patch, point)
        with pytest.raises(Crash):
            cluster_day(SECOND, settings, spark)

    result = cluster_day(SECOND, settings, spark)

    client = tracking.client(settings)
    trained = [v for v in registry.trained_versions(settings) if registry.trained_on(v) == SECOND]
    assert len(trained) == 1, "the retry registered a second version instead of resuming the first"
    new = trained[0]
    decision = registry.decision(new)
    assert decision is not None, "the version registered for the night was never evaluated"
    assert PROMOTION_TAG in new.tags
    # the same outcome as a night without a crash
    assert decision.promoted == clean_second["promotion"]["promoted"]
    assert decision.new_silhouette == pytest.approx(clean_second["promotion"]["new_silhouette"])
    assert decision.champion_silhouette == pytest.approx(clean_second["promotion"]["champion_silhouette"])
    assert result["model_version"] == (str(new.version) if decision.promoted else decision.champion_version)
    clusters = lake.read(spark, settings.table_path("silver_customer_clusters"))
    recorded = {r["model_version"] for r in clusters.filter(f"snapshot_date = '{SECOND}'").collect()}
    assert recorded == {result["model_version"]}
    assert str(registry.champion(settings).version) == result["model_version"]
    # one live run for the night, and it is the run that holds the sweep and the model
    runs = tracking.runs_for_date(settings, settings.dag.dag_id, SECOND)
    assert [r.info.run_id for r in runs] == [result["mlflow_run_id"]]
    assert runs[0].data.tags[TRAINED_VERSION_TAG] == str(new.version)
    source = client.get_run(new.run_id)
    assert source.info.lifecycle_stage == "active", "the run holding the sweep was deleted"
    assert len(tracking.child_runs(settings, new.run_id)) == 1  # k fixed: a sweep of one fit
    # the next night plans without error
    assert plan_for(spark, settings, THIRD, settings.dag.dag_id).kind == "retrain"


def test_a_version_without_tags_does_not_break_later_nights(spark, first_night, tmp_path) -> None:
    """A version registered by hand (or by older code) without the training-date tag is ignored."""
    settings = copy_store(first_night, tmp_path)
    champion = registry.champion(settings)
    client = tracking.client(settings)
    client.create_model_version(settings.model.registered_name, champion.source, champion.run_id)
    assert plan_for(spark, settings, SECOND, settings.dag.dag_id).kind == "retrain"


# --- issue 15: the force_retrain param against the crash-resume plan ----------------------------------


def not_due(first_night, target: Path):
    """A copy of the first night's store where the cadence does not retrain SECOND (only a force does)."""
    settings = copy_store(first_night, target)
    return settings.model_copy(update={"model": settings.model.model_copy(update={"retrain_every_days": 30})})


def versions_of(settings, night: date) -> list:
    return [v for v in registry.trained_versions(settings) if registry.trained_on(v) == night]


def test_a_forced_retrain_retried_after_a_crash_resumes_and_a_plain_rerun_scores_with_its_version(
    spark, first_night, tmp_path
) -> None:
    settings = not_due(first_night, tmp_path)
    assert plan_for(spark, settings, SECOND, settings.dag.dag_id).kind == "score"
    with pytest.MonkeyPatch.context() as patch:
        crash_in(patch, "before-alias")
        with pytest.raises(Crash):
            cluster_day(SECOND, settings, spark, force_retrain=True)
    retried = cluster_day(SECOND, settings, spark, force_retrain=True)  # the task's retry keeps its params
    trained = versions_of(settings, SECOND)
    assert len(trained) == 1, "the forced retry registered a second version"
    assert retried["night_type"] == "resume"
    runs = tracking.runs_for_date(settings, settings.dag.dag_id, SECOND)
    assert [r.info.run_id for r in runs] == [retried["mlflow_run_id"]] == [trained[0].run_id]

    rerun = cluster_day(SECOND, settings, spark)  # a later re-run without the param
    assert rerun["night_type"] == "rerun" and rerun["model_version"] == retried["model_version"]
    assert len(versions_of(settings, SECOND)) == 1
    assert [r.info.run_id for r in tracking.runs_for_date(settings, settings.dag.dag_id, SECOND)] == [
        rerun["mlflow_run_id"]
    ]


def test_forcing_a_night_that_already_retrained_reuses_its_version_and_run(spark, first_night, tmp_path) -> None:
    settings = not_due(first_night, tmp_path)
    forced = cluster_day(SECOND, settings, spark, force_retrain=True)
    assert forced["night_type"] == "retrain"
    again = cluster_day(SECOND, settings, spark, force_retrain=True)  # the manual run triggered twice
    assert len(versions_of(settings, SECOND)) == 1, "a second version for the night"
    assert again["model_version"] == forced["model_version"] and again["night_type"] == "resume"
    runs = tracking.runs_for_date(settings, settings.dag.dag_id, SECOND)
    assert [r.info.run_id for r in runs] == [forced["mlflow_run_id"]], "a second live MLflow run for the night"
