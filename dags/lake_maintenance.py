"""
### Lake maintenance — weekly

OPTIMIZE and VACUUM of every Delta table, keeping every version a recent run record names.
Task `maintain` calls `jobs/steps/maintain.py` (`python -m jobs maintain --run-date D` runs it alone).
What it keeps and why: [docs/operations.md](docs/operations.md#lake-maintenance-compaction-and-vacuum);
the tasks of all DAGs: [docs/pipeline.md](docs/pipeline.md#the-dags-tasks).
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
    **dag_defaults(settings, ("maintenance", "spark", "delta")),
) as dag:

    @task(execution_timeout=task_timeout(settings, "maintain"))
    def maintain(ds: str) -> dict:
        """OPTIMIZE + VACUUM every table; files and bytes per table before and after."""
        from jobs.orchestration.task import run_in_task
        from jobs.steps.maintain import maintain_lake

        return run_in_task(maintain_lake, ds)

    maintain()
