"""
### Lake maintenance — weekly

Compacts the small files every night leaves in each Delta table (**OPTIMIZE**), then deletes the
files no kept version needs (**VACUUM**). Kept: every version that the run audit, the publish
records or the nights' MLflow runs name for the run dates of the last `maintenance.reproducible_days`
days (a re-run of such a date reads exactly what it read), and never files younger than
`maintenance.min_retention_hours`. The task log prints files and bytes per table before and after.

Logic: `jobs/steps/maintain.py` (`make maintain` does the same by hand). Schedule: `maintenance.schedule`.
"""

from airflow.sdk import DAG, task
from airflow.timetables.interval import CronDataIntervalTimetable

from jobs.config import load_settings
from jobs.orchestration.defaults import dag_defaults, task_timeout

settings = load_settings()

with DAG(
    dag_id="lake_maintenance",
    description="Weekly OPTIMIZE + VACUUM of the Delta lake, keeping every version a recent record names",
    schedule=CronDataIntervalTimetable(settings.maintenance.schedule, timezone="UTC"),
    catchup=False,
    doc_md=__doc__,
    **dag_defaults(settings, ("maintenance",)),
) as dag:

    @task(execution_timeout=task_timeout(settings, "maintain"))
    def maintain(ds: str) -> dict:
        """OPTIMIZE + VACUUM every table; files and bytes per table before and after."""
        from jobs.orchestration.task import run_in_task
        from jobs.steps.maintain import maintain_lake

        return run_in_task(maintain_lake, ds)

    maintain()
