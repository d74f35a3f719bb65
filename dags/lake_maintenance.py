"""
### Lake maintenance — weekly

Compacts the small files every night leaves in each Delta table (**OPTIMIZE**), then deletes the
files no kept version needs (**VACUUM**). Kept: every version that the run audit, the publish
records or the nights' MLflow runs name for the run dates of the last `maintenance.reproducible_days`
days (a re-run of such a date reads exactly what it read), and never files younger than
`maintenance.min_retention_hours`. The task log prints files and bytes per table before and after.

Logic: `jobs/tools/maintain.py` (`make maintain` does the same by hand). Schedule: `maintenance.schedule`.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task
from airflow.timetables.interval import CronDataIntervalTimetable

from jobs.config import load_settings
from jobs.orchestration.alerts import on_failure
from jobs.orchestration.defaults import task_defaults, task_timeout

settings = load_settings()

with DAG(
    dag_id="lake_maintenance",
    description="Weekly OPTIMIZE + VACUUM of the Delta lake, keeping every version a recent record names",
    schedule=CronDataIntervalTimetable(settings.maintenance.schedule, timezone="UTC"),
    start_date=pendulum.parse(settings.dag.start_date, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=[*settings.dag.tags, "maintenance"],
    doc_md=__doc__,
    dagrun_timeout=timedelta(minutes=settings.dag.run_timeout_minutes),
    on_failure_callback=on_failure,
    default_args=task_defaults(settings),
) as dag:

    @task(execution_timeout=task_timeout(settings, "maintain_lake"))
    def maintain_lake(ds: str) -> dict:
        """OPTIMIZE + VACUUM every table; files and bytes per table before and after."""
        from jobs.orchestration.task import run_in_task
        from jobs.tools.maintain import maintain_lake as maintain

        return run_in_task(maintain, ds)

    maintain_lake()
