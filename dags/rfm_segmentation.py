"""
### RFM segmentation — nightly

The run whose data interval is **[D, D+1)** processes day **D** (`ds`): wait for the day's
landing marker, validate it (Great Expectations), ingest it into the Delta lake with its RFM
snapshot, cluster (Spark ML, MLflow), label, predict customer value, and write the EDA report.
Each task calls the step of the same name in `jobs/steps/` (`python -m jobs <step> --run-date D`
runs it alone). What each step reads and writes: [docs/pipeline.md](docs/pipeline.md#the-dags-tasks).

Manual runs (trigger with the night as logical date) take params: `force_retrain`, `full_recompute`, `k`.
Configuration: `conf/pipeline.yaml`.
"""

import pendulum
from airflow.sdk import DAG, Param, PokeReturnValue, task
from airflow.timetables.interval import CronDataIntervalTimetable

from jobs.config import load_settings
from jobs.definitions import DAG_RUN_TAG, DAG_TAG, PARAM_TAG_PREFIX, TASK_TAG
from jobs.orchestration.assets import export_trigger, published_event, step_outlets
from jobs.orchestration.defaults import dag_defaults, task_timeout
from jobs.orchestration.task import run_in_task, with_fixed_k

settings = load_settings()


with DAG(
    dag_id=settings.dag.dag_id,
    description="Daily RFM customer segmentation: GX -> Spark/Delta -> Spark ML/MLflow -> labels -> EDA report",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    end_date=pendulum.parse(settings.dag.end_date, tz="UTC") if settings.dag.end_date else None,
    catchup=settings.dag.catchup,
    doc_md=__doc__,
    params={
        "force_retrain": Param(False, type="boolean", description="Retrain (k sweep, registration, promotion) tonight"),
        "full_recompute": Param(False, type="boolean", description="Recompute RFM from the whole history"),
        "k": Param(None, type=["null", "integer"], minimum=2, maximum=20, description="Fixed k for a retrain"),
    },
    **dag_defaults(
        settings, ("segmentation", "great-expectations", "spark", "delta", "mlflow"), wait_for_downstream=True
    ),
) as dag:

    @task.sensor(
        poke_interval=settings.landing.sensor_poke_seconds,
        timeout=settings.landing.sensor_timeout_seconds,
        mode="reschedule",
    )
    def wait_for_landing(ds: str) -> PokeReturnValue:
        """The day's files have landed (arrival marker present)."""
        from datetime import date

        from jobs.adapters.landing import has_arrived

        arrived = has_arrived(settings.path("landing_dir"), date.fromisoformat(ds), settings.landing.marker)
        return PokeReturnValue(is_done=arrived)

    @task(execution_timeout=task_timeout(settings, "validate"))
    def validate(ds: str, ti=None) -> dict:
        """Great Expectations on the landed day; fails without retry on bad data."""
        from jobs.orchestration.links import push_data_docs_link
        from jobs.steps.validate import validate_day

        try:
            return run_in_task(validate_day, ds)
        finally:
            push_data_docs_link(ti, settings, ds)

    @task(outlets=step_outlets(settings, "ingest"), execution_timeout=task_timeout(settings, "ingest"))
    def ingest(ds: str, params=None) -> dict:
        """Bronze partition + RFM snapshot (silver) + run audit; `full_recompute` recomputes from bronze."""
        from jobs.steps.ingest import ingest_day

        return run_in_task(ingest_day, ds, full=params["full_recompute"])

    @task(outlets=step_outlets(settings, "cluster"), execution_timeout=task_timeout(settings, "cluster"))
    def cluster(ds: str, dag_run=None, ti=None, params=None) -> dict:
        """Spark ML clustering, logged to MLflow with Airflow lineage tags and the run's params."""
        from jobs.orchestration.links import push_mlflow_link
        from jobs.steps.cluster import cluster_day

        lineage = {DAG_TAG: dag_run.dag_id, DAG_RUN_TAG: dag_run.run_id, TASK_TAG: ti.task_id}
        lineage |= {f"{PARAM_TAG_PREFIX}{name}": str(value) for name, value in params.items()}
        result = run_in_task(
            cluster_day,
            ds,
            lineage=lineage,
            settings=with_fixed_k(settings, params["k"]),
            force_retrain=params["force_retrain"],
        )
        push_mlflow_link(ti, settings, result["mlflow_run_id"])
        return result

    @task(outlets=step_outlets(settings, "label"), execution_timeout=task_timeout(settings, "label"))
    def label(ds: str, ti=None) -> dict:
        """Cluster labels + RFM quintile segments into the gold tables."""
        from jobs.orchestration.links import push_mlflow_link
        from jobs.steps.label import label_day

        result = run_in_task(label_day, ds)
        push_mlflow_link(ti, settings, result["mlflow_run_id"])
        return result

    @task(outlets=step_outlets(settings, "clv"), execution_timeout=task_timeout(settings, "clv"))
    def clv(ds: str, outlet_events=None) -> dict:
        """Predicted customer value into the gold tables; publishes the complete snapshot, whose
        publish-record Asset event (snapshot date + versions) triggers segment_export."""
        from jobs.steps.clv import clv_day

        result = run_in_task(clv_day, ds)
        outlet_events[export_trigger(settings)].extra = published_event(ds, result)
        return result

    @task(execution_timeout=task_timeout(settings, "eda"))
    def eda(ds: str) -> dict:
        """Static EDA report (HTML + PNG charts), also an artifact of the day's MLflow run."""
        from jobs.steps.eda import eda_day

        return run_in_task(eda_day, ds)

    wait_for_landing() >> validate() >> ingest() >> cluster() >> label() >> clv() >> eda()
