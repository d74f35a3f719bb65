"""The Airflow Assets of the lake: one per Delta table, named after ``definitions.TABLES``.

The nightly DAG declares the tables each task writes as its ``outlets``; ``segment_export`` is
scheduled on the publish record (gold/published), whose event ``clv`` emits. URIs are ``file://``
URLs of the configured lake, or its ``s3://`` URIs on a bucket.
"""

from __future__ import annotations

from airflow.sdk import Asset

from jobs import storage
from jobs.config import Settings
from jobs.definitions import EXPORT_TRIGGER_TABLE, TABLES_WRITTEN
from jobs.storage import Location


def table_uri(location: Location) -> str:
    return str(location) if storage.is_remote(location) else location.as_uri()


def table_asset(settings: Settings, name: str) -> Asset:
    """The Asset of Delta table ``name`` (a key of ``definitions.TABLES``)."""
    return Asset(name=name, uri=table_uri(settings.table_path(name)), group="delta")


def step_outlets(settings: Settings, step: str) -> list[Asset]:
    """The Assets the DAG task running ``step`` writes (none for a step that writes no table)."""
    return [table_asset(settings, name) for name in TABLES_WRITTEN.get(step, [])]


def export_trigger(settings: Settings) -> Asset:
    """The Asset whose update schedules ``segment_export``: the publish record, updated by ``clv``
    when a night's snapshot is complete (its event's extra names the snapshot and its versions)."""
    return table_asset(settings, EXPORT_TRIGGER_TABLE)


def published_event(snapshot_date: str, result: dict) -> dict:
    """The extra of the publish record's Asset event: the snapshot and the record's version holding
    its gold versions (``segment_export`` reads exactly those)."""
    return {"snapshot_date": snapshot_date, "gold_published_version": int(result[EXPORT_TRIGGER_TABLE])}
