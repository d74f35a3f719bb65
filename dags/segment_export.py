"""
### Segment export — after each gold snapshot

Scheduled on the **publish record** Asset (`gold_published`): each time the nightly
`rfm_segmentation` DAG's `clv` task — the last writer of a night — publishes a complete snapshot
(segments, labels and predicted value), this DAG writes the per-segment customer lists that
marketing tools import, for that snapshot, read at exactly the published table versions:

`<exports_dir>/snapshot_date=D/<scheme>/<segment>.csv` and `.parquet`, one file per segment and
label scheme (`cluster`, `rfm`), plus `manifest.json` (row counts, the snapshot's table versions).
The snapshot's folder is replaced atomically; a snapshot the publish record does not hold is never exported.

Logic: `jobs/tools/export.py` (`python -m jobs.tools.export --run-date D` does the same by hand).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from jobs.config import load_settings
from jobs.orchestration.alerts import on_failure
from jobs.orchestration.assets import export_trigger
from jobs.orchestration.defaults import task_defaults, task_timeout

settings = load_settings()

with DAG(
    dag_id="segment_export",
    description="Per-segment customer lists (CSV + Parquet + manifest) for each new gold snapshot",
    schedule=[export_trigger(settings)],
    start_date=pendulum.parse(settings.dag.start_date, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=[*settings.dag.tags, "export"],
    doc_md=__doc__,
    dagrun_timeout=timedelta(minutes=settings.dag.run_timeout_minutes),
    on_failure_callback=on_failure,
    default_args=task_defaults(settings),
) as dag:

    @task(execution_timeout=task_timeout(settings, "export_segments"))
    def export_segments(triggering_asset_events=None) -> list[dict]:
        """Export every snapshot named by the triggering publish events, oldest first, each at the
        publish record's version its latest event names."""
        from jobs.orchestration.task import run_in_task
        from jobs.tools.export import export_snapshot, snapshots_to_export

        extras = [event.extra for events in triggering_asset_events.values() for event in events]
        manifests = [
            run_in_task(lambda day, version: export_snapshot(settings, day, version), snapshot, version=version)
            for snapshot, version in snapshots_to_export(extras).items()
        ]
        return [{k: m[k] for k in ("snapshot_date", "customers", "rows_per_scheme", "path")} for m in manifests]

    export_segments()
