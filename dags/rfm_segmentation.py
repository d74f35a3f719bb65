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
6. **clv** — predicted value per customer: BG/NBD + Gamma-Gamma fitted on retrain nights (registered model
   `rfm-clv`, its own champion alias), scored every night into the gold tables (P(alive), P(purchase) and
   expected purchases in 90 days, 12-month CLV, the at-risk-value flag); publishes the complete snapshot
   (its `gold_published` Asset event triggers the `segment_export` DAG)
7. **eda_report** — static HTML + PNG charts of the run under the reports folder, also logged to the day's MLflow run

Extra links: **MLflow run** on `cluster` and `label`, **Data Docs** on `validate`.
Manual runs (trigger with the night as logical date) take params: `force_retrain`, `full_recompute`, `k`;
they are recorded as `airflow.param.*` tags on the night's MLflow run.

All logic lives in `jobs/`; each task calls one step, runnable alone as `python -m jobs <step> --run-date D`.
Configuration: `conf/pipeline.yaml` (overridable with `RFM__…` variables). Each task has an
`execution_timeout` (`dag.task_timeout_minutes`), the run a deadline (`dag.run_timeout_minutes`);
a failed task or run posts an alert to `alerts.webhook_url` (`jobs/orchestration/alerts.py`).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, PokeReturnValue, task
from airflow.timetables.interval import CronDataIntervalTimetable

from jobs.config import load_settings
from jobs.definitions import DAG_RUN_TAG, DAG_TAG, PARAM_TAG_PREFIX, TASK_TAG
from jobs.orchestration.alerts import on_failure
from jobs.orchestration.assets import export_trigger, published_event, step_outlets
from jobs.orchestration.defaults import task_defaults, task_timeout
from jobs.orchestration.task import log_lines, run_step_in_task, step_kwargs, with_fixed_k

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
    dagrun_timeout=timedelta(minutes=settings.dag.run_timeout_minutes),
    on_failure_callback=on_failure,
    params={
        "force_retrain": Param(False, type="boolean", description="Retrain (k sweep, registration, promotion) tonight"),
        "full_recompute": Param(False, type="boolean", description="Recompute RFM from the whole history"),
        "k": Param(None, type=["null", "integer"], minimum=2, maximum=20, description="Fixed k for a retrain"),
    },
    default_args={**task_defaults(settings), "wait_for_downstream": True},
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

        try:
            return run_step_in_task("validate", ds)
        finally:
            push_data_docs_link(ti, settings, ds)

    @task(outlets=step_outlets(settings, "ingest"), execution_timeout=task_timeout(settings, "ingest_rfm"))
    def ingest_rfm(ds: str, params=None) -> dict:
        """Bronze partition + RFM snapshot (silver) + run audit."""
        return run_step_in_task("ingest", ds, **step_kwargs("ingest", {"full_recompute": params["full_recompute"]}))

    @task(outlets=step_outlets(settings, "cluster"), execution_timeout=task_timeout(settings, "cluster"))
    def cluster(ds: str, dag_run=None, ti=None, params=None) -> dict:
        """Spark ML clustering, logged to MLflow with Airflow lineage tags and the run's params."""
        from jobs.orchestration.links import push_mlflow_link
        from jobs.orchestration.summaries import cluster_lines, sweep_rows

        lineage = {DAG_TAG: dag_run.dag_id, DAG_RUN_TAG: dag_run.run_id, TASK_TAG: ti.task_id}
        lineage |= {f"{PARAM_TAG_PREFIX}{name}": str(value) for name, value in params.items()}
        result = run_step_in_task(
            "cluster",
            ds,
            lineage=lineage,
            settings=with_fixed_k(settings, params["k"]),
            force_retrain=params["force_retrain"],
        )
        push_mlflow_link(ti, settings, result["mlflow_run_id"])
        log_lines(cluster_lines(result, *sweep_rows(settings, result["mlflow_run_id"])))
        return result

    @task(outlets=step_outlets(settings, "label"), execution_timeout=task_timeout(settings, "label"))
    def label(ds: str, ti=None) -> dict:
        """Cluster labels + RFM quintile segments into the gold tables."""
        from jobs.orchestration.links import push_mlflow_link
        from jobs.orchestration.summaries import label_lines

        result = run_step_in_task("label", ds)
        push_mlflow_link(ti, settings, result["mlflow_run_id"])
        log_lines(label_lines(result))
        return result

    @task(outlets=step_outlets(settings, "clv"), execution_timeout=task_timeout(settings, "clv"))
    def clv(ds: str, outlet_events=None) -> dict:
        """Predicted customer value (BG/NBD + Gamma-Gamma) into the gold tables; publishes the complete
        snapshot, whose publish-record Asset event (snapshot date + versions) triggers segment_export."""
        result = run_step_in_task("clv", ds)
        outlet_events[export_trigger(settings)].extra = published_event(ds, result)
        return result

    @task(execution_timeout=task_timeout(settings, "eda_report"))
    def eda_report(ds: str) -> dict:
        """Static EDA report (HTML + PNG charts), also an artifact of the day's MLflow run."""
        return run_step_in_task("eda", ds)

    wait_for_landing() >> validate() >> ingest_rfm() >> cluster() >> label() >> clv() >> eda_report()
