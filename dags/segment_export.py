"""
### Segment export — after each published snapshot

Scheduled on the `gold_published` Asset that the nightly `clv` task updates: writes the published
snapshot's per-segment customer lists and campaign lists under `<exports_dir>/snapshot_date=D/`,
then catches up every other published snapshot not exported yet (a night published while this DAG
was paused is exported by the next run: Airflow keeps no event for a paused DAG).
Task `export` calls `jobs/steps/export.py` (`python -m jobs export --run-date D` runs it alone).
Details: [docs/operations.md](docs/operations.md#segment-exports-for-marketing);
the tasks of all DAGs: [docs/pipeline.md](docs/pipeline.md#the-dags-tasks).
"""

from airflow.sdk import DAG, task

from jobs.config import load_settings
from jobs.orchestration.assets import export_trigger
from jobs.orchestration.defaults import dag_defaults, task_timeout

settings = load_settings()

with DAG(
    dag_id="segment_export",
    description="Per-segment customer lists (CSV + Parquet + manifest) for each new gold snapshot",
    schedule=[export_trigger(settings)],
    catchup=False,
    doc_md=__doc__,
    **dag_defaults(settings, ("export", "delta")),
) as dag:

    @task(execution_timeout=task_timeout(settings, "export"))
    def export(triggering_asset_events=None) -> list[dict]:
        """Export every snapshot named by the triggering publish events, oldest first, each at the
        publish record's version its latest event names; then every published snapshot not exported yet."""
        from jobs.orchestration.summaries import export_lines
        from jobs.orchestration.task import log_lines, run_in_task
        from jobs.steps.export import export_day, snapshots_to_export, stale_snapshots

        extras = [event.extra for events in triggering_asset_events.values() for event in events]
        manifests = [
            run_in_task(export_day, snapshot, record_version=version)
            for snapshot, version in snapshots_to_export(extras).items()
        ]
        manifests += [run_in_task(export_day, day.isoformat()) for day in stale_snapshots(settings)]
        log_lines(export_lines(manifests, caught_up=len(manifests) - len(snapshots_to_export(extras))))
        return [{k: m[k] for k in ("snapshot_date", "customers", "rows_per_scheme", "path")} for m in manifests]

    export()
