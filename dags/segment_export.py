"""
### Segment export — after each gold snapshot

Scheduled on the **publish record** Asset (`gold_published`): each time the nightly
`rfm_segmentation` DAG's `clv` task — the last writer of a night — publishes a complete snapshot
(segments, labels and predicted value), this DAG writes the per-segment customer lists that
marketing tools import, for that snapshot, read at exactly the published table versions:

`<exports_dir>/snapshot_date=D/<scheme>/<segment>.csv` and `.parquet`, one file per segment and
label scheme (`cluster`, `rfm`), plus `manifest.json` (row counts, the snapshot's table versions).
The snapshot's folder is replaced atomically; a snapshot the publish record does not hold is never exported.

Logic: `jobs/steps/export.py` (`python -m jobs export --run-date D` does the same by hand).
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
    **dag_defaults(settings, ("export",)),
) as dag:

    @task(execution_timeout=task_timeout(settings, "export"))
    def export(triggering_asset_events=None) -> list[dict]:
        """Export every snapshot named by the triggering publish events, oldest first, each at the
        publish record's version its latest event names."""
        from jobs.orchestration.task import run_in_task
        from jobs.steps.export import export_day, snapshots_to_export

        extras = [event.extra for events in triggering_asset_events.values() for event in events]
        manifests = [
            run_in_task(export_day, snapshot, record_version=version)
            for snapshot, version in snapshots_to_export(extras).items()
        ]
        return [{k: m[k] for k in ("snapshot_date", "customers", "rows_per_scheme", "path")} for m in manifests]

    export()
