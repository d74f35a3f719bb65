"""A two-task DAG whose tasks run fake "cluster" and "label" steps through run_in_task (tests/test_lineage.py)."""

import pendulum
from airflow.sdk import DAG, task

from jobs.config import load_settings
from jobs.orchestration.assets import step_outlets

settings = load_settings()


def cluster_step(day, **kwargs):
    return {"silver_customer_rfm": 3, "silver_customer_clusters": 5}


def label_step(day, **kwargs):
    versions = {"gold_customer_segments": 8, "gold_segment_summary": 9, "gold_segment_transitions": 2}
    return {"silver_customer_rfm": 3, "silver_customer_clusters": 5, "gold_published": 4, **versions}


cluster_step.__module__, label_step.__module__ = (
    "jobs.steps.cluster",
    "jobs.steps.label",
)  # leased and recorded as steps

with DAG(dag_id="lineage_probe", schedule=None, start_date=pendulum.datetime(2011, 12, 1, tz="UTC")) as dag:

    @task(outlets=step_outlets(settings, "cluster"))
    def cluster(ds=None):
        from jobs.orchestration.task import run_in_task

        return run_in_task(cluster_step, ds)

    @task(outlets=step_outlets(settings, "label"))
    def label(ds=None):
        from jobs.orchestration.task import run_in_task

        return run_in_task(label_step, ds)

    @task
    def untracked():
        return 1

    cluster() >> label() >> untracked()
