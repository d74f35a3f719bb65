"""
### RFM segmentation — nightly

The run whose data interval is **[D, D+1)** processes day **D** (`ds`):

1. **wait_for_landing** — the day's arrival marker under the landing folder (reschedules; fails after the configured timeout)
2. **validate** — Great Expectations suite `expectations/transactions.json`; a failure fails at once, no retry, nothing written
3. **ingest_rfm** — bronze partition of D (Delta, `replaceWhere`), RFM snapshot as of D into silver, run audit
4. **cluster** — scores D with the MLflow champion model (`models:/<name>@champion`); on a retrain night
   (weekly, or no champion yet) first sweeps k as child runs, registers the chosen model and decides promotion;
   a re-run of D scores with the version recorded for D. One MLflow run per (DAG, D)
5. **label** — VIP / Loyal / At-Risk / Low-Value carried across nights, RFM quintile segments (edges frozen with
   the model), segment transitions and label stability into the gold tables and the night's MLflow run
6. **eda_report** — static HTML + PNG charts of the run under the reports folder, also logged to the day's MLflow run

All logic lives in `jobs/`; each task calls one step, runnable alone as `python -m jobs <step> --run-date D`.
Configuration: `conf/pipeline.yaml` (overridable with `RFM__…` variables).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, PokeReturnValue, task
from airflow.timetables.interval import CronDataIntervalTimetable

from jobs.config import load_settings
from jobs.definitions import DAG_RUN_TAG, DAG_TAG, EXPORT_SOURCE_TABLE, TASK_TAG
from jobs.orchestration.assets import step_outlets, table_asset
from jobs.orchestration.task import run_step_in_task

settings = load_settings()

with DAG(
    dag_id=settings.dag.dag_id,
    description="Daily RFM customer segmentation: GX -> Spark/Delta -> Spark ML/MLflow -> labels -> EDA report",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.parse(settings.dag.start_date, tz="UTC"),
    end_date=pendulum.parse(settings.dag.end_date, tz="UTC") if settings.dag.end_date else None,
    catchup=settings.dag.catchup,
    max_active_runs=1,
    tags=settings.dag.tags,
    doc_md=__doc__,
    default_args={
        "owner": settings.dag.owner,
        "depends_on_past": True,
        "wait_for_downstream": True,
        "retries": settings.dag.retries,
        "retry_delay": timedelta(seconds=settings.dag.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(seconds=settings.dag.max_retry_delay_seconds),
    },
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

    @task
    def validate(ds: str) -> dict:
        """Great Expectations on the landed day; fails without retry on bad data."""
        return run_step_in_task("validate", ds)

    @task(outlets=step_outlets(settings, "ingest"))
    def ingest_rfm(ds: str) -> dict:
        """Bronze partition + RFM snapshot (silver) + run audit."""
        return run_step_in_task("ingest", ds)

    @task(outlets=step_outlets(settings, "cluster"))
    def cluster(ds: str, dag_run=None, ti=None) -> dict:
        """Spark ML clustering, logged to MLflow with Airflow lineage tags."""
        lineage = {DAG_TAG: dag_run.dag_id, DAG_RUN_TAG: dag_run.run_id, TASK_TAG: ti.task_id}
        return run_step_in_task("cluster", ds, lineage=lineage)

    @task(outlets=step_outlets(settings, "label"))
    def label(ds: str, outlet_events=None) -> dict:
        """Cluster labels + RFM quintile segments into the gold tables (their Asset event names the snapshot)."""
        result = run_step_in_task("label", ds)
        outlet_events[table_asset(settings, EXPORT_SOURCE_TABLE)].extra = {"snapshot_date": ds}
        return result

    @task
    def eda_report(ds: str) -> dict:
        """Static EDA report (HTML + PNG charts), also an artifact of the day's MLflow run."""
        return run_step_in_task("eda", ds)

    wait_for_landing() >> validate() >> ingest_rfm() >> cluster() >> label() >> eda_report()
