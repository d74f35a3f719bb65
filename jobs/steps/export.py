"""Per-segment customer lists for marketing tools, one folder per snapshot, replaced atomically.

``python -m jobs export --run-date YYYY-MM-DD`` (the ``segment_export`` DAG runs the same)

Layout under ``paths.exports_dir``::

    snapshot_date=D            -> .versions/D-<id>   (a symlink, swapped in one rename)
    .versions/D-<id>/<scheme>/<segment>.csv|.parquet
    .versions/D-<id>/campaigns/<campaign>.csv|.parquet   ready lists (conf ``exports.campaigns``)
    .versions/D-<id>/manifest.json   row counts per file, the column dictionary, the table versions

The CSV is for a spreadsheet (``jobs.core.exports``: money to 2 decimals with the currency in the
column name, probabilities to 3, flags yes/no); the Parquet file keeps the gold columns at full
precision. Both list the best customers first (by 12-month CLV, else by money spent).

A reader that opens ``snapshot_date=D/`` sees either the previous export or the new one, never
a half-written folder. Reads the lake with delta-rs (no JVM), and only what is published: the
snapshot's entry in the publish record (gold/published, at the version the triggering Asset event
names, else the latest), then gold/customer_segments at the version that entry holds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from deltalake import DeltaTable

from jobs.adapters.publish import published_versions
from jobs.config import Settings, load_settings
from jobs.core.exports import by_value, campaign_lists, column_dictionary, for_spreadsheet
from jobs.definitions import (
    EXPORT_CLV_COLUMNS,
    EXPORT_COLUMNS,
    EXPORT_MANIFEST,
    EXPORT_SOURCE_TABLE,
    EXPORT_TRIGGER_TABLE,
    LABEL_SCHEMES,
)
from jobs.errors import LakeStateError

VERSIONS_DIR = ".versions"


def slug(segment: str) -> str:
    """A file-name-safe form of a segment name: ``Can't Lose`` -> ``cant-lose``."""
    return re.sub(r"[^a-z0-9]+", "-", segment.lower().replace("'", "")).strip("-") or "unnamed"


def segment_lists(gold: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(label scheme, segment) -> that segment's customers (the export columns ``gold`` has, best first)."""
    columns = export_columns(gold.columns)
    lists = {}
    for scheme, column in LABEL_SCHEMES.items():
        for segment, rows in gold.groupby(column, sort=True):
            lists[(scheme, str(segment))] = by_value(rows[columns])
    return lists


def export_columns(available: Any) -> list[str]:
    """EXPORT_COLUMNS, then the predicted-value columns among ``available`` (a snapshot scored by clv)."""
    return EXPORT_COLUMNS + [column for column in EXPORT_CLV_COLUMNS if column in set(available)]


def snapshot_versions(settings: Settings, snapshot: date, record_version: int | None = None) -> dict[str, int]:
    """The gold versions the publish record (at ``record_version``, else the latest) holds for ``snapshot``;
    LakeStateError when the snapshot is not published there."""
    published = published_versions(settings.table_path(EXPORT_TRIGGER_TABLE), record_version)
    if not published or snapshot not in published:
        raise LakeStateError(f"the gold snapshot of {snapshot} is not published: nothing to export")
    return published[snapshot]


def read_snapshot(settings: Settings, snapshot: date, version: int) -> pd.DataFrame:
    """The gold rows of ``snapshot`` at the published ``version``; LakeStateError when there are none."""
    table = DeltaTable(str(settings.table_path(EXPORT_SOURCE_TABLE)), version=version)
    available = [field.name for field in table.schema().fields]
    gold = table.to_pandas(filters=[("snapshot_date", "=", snapshot)], columns=export_columns(available))
    if gold.empty:
        raise LakeStateError(f"no {EXPORT_SOURCE_TABLE} rows for {snapshot} at version {version}")
    return gold


def write_list(rows: pd.DataFrame, folder: Path, stem: str, currency: str) -> None:
    """``stem``.csv (for a spreadsheet) and ``stem``.parquet (full precision) under ``folder``."""
    (folder / stem).parent.mkdir(parents=True, exist_ok=True)
    for_spreadsheet(rows, currency).to_csv(folder / f"{stem}.csv", index=False)
    rows.to_parquet(folder / f"{stem}.parquet", index=False)


def write_lists(lists: dict[tuple[str, str], pd.DataFrame], folder: Path, currency: str) -> list[dict[str, Any]]:
    """CSV and Parquet of every list under ``folder/<scheme>/``; the manifest's file entries."""
    files = []
    for (scheme, segment), rows in lists.items():
        stem = f"{scheme}/{slug(segment)}"
        write_list(rows, folder, stem, currency)
        files.append(
            {
                "label_scheme": scheme,
                "segment": segment,
                "rows": len(rows),
                "csv": f"{stem}.csv",
                "parquet": f"{stem}.parquet",
            }
        )
    return files


def publish(exports_dir: Path, snapshot: date, folder: Path) -> Path:
    """Point ``snapshot_date=D`` at ``folder`` in one rename, then drop the folder it replaced."""
    link = exports_dir / f"snapshot_date={snapshot.isoformat()}"
    previous = link.resolve() if link.is_symlink() else None
    temporary = exports_dir / f".{link.name}.{uuid.uuid4().hex[:8]}"
    temporary.symlink_to(folder.relative_to(exports_dir))
    os.replace(temporary, link)  # atomic on POSIX: readers see the old or the new target
    if previous is not None and previous != folder.resolve():
        shutil.rmtree(previous, ignore_errors=True)
    return link


def export_day(run_date: date, settings: Settings | None = None, record_version: int | None = None) -> dict[str, Any]:
    """Export the segment lists of the snapshot published for ``run_date``; returns the manifest."""
    return export_snapshot(settings or load_settings(), run_date, record_version)


def export_snapshot(settings: Settings, snapshot: date, record_version: int | None = None) -> dict[str, Any]:
    """Write the segment lists of the published ``snapshot`` and its manifest; returns the manifest.
    ``record_version``: the publish record's version to read (the Asset event's), else the latest."""
    record_path = str(settings.table_path(EXPORT_TRIGGER_TABLE))
    if record_version is None and DeltaTable.is_deltatable(record_path):
        record_version = DeltaTable(record_path).version()
    versions = snapshot_versions(settings, snapshot, record_version)
    source_version = versions[EXPORT_SOURCE_TABLE]
    gold = read_snapshot(settings, snapshot, source_version)
    exports_dir = settings.path("exports_dir")
    folder = exports_dir / VERSIONS_DIR / f"{snapshot.isoformat()}-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    currency = settings.exports.currency
    try:
        files = write_lists(segment_lists(gold), folder, currency)
        campaigns = []
        for name, rows in campaign_lists(gold[export_columns(gold.columns)], settings.exports.campaigns).items():
            write_list(rows, folder, f"campaigns/{slug(name)}", currency)
            rule = settings.exports.campaigns[name]
            campaigns.append(
                {
                    "campaign": name,
                    "rule": {column: list(values) for column, values in rule.items()},
                    "rows": len(rows),
                    "csv": f"campaigns/{slug(name)}.csv",
                    "parquet": f"campaigns/{slug(name)}.parquet",
                }
            )
        manifest = {
            "snapshot_date": snapshot.isoformat(),
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source_table": EXPORT_SOURCE_TABLE,
            "source_version": source_version,
            "columns": export_columns(gold.columns),
            "currency": currency,
            "column_dictionary": column_dictionary(export_columns(gold.columns), currency),
            "row_order": "best customers first: by clv_12m (else monetary), highest first; then customer_id",
            "table_versions": {**versions, EXPORT_TRIGGER_TABLE: record_version},
            "customers": len(gold),
            "rows_per_scheme": {
                scheme: sum(f["rows"] for f in files if f["label_scheme"] == scheme) for scheme in LABEL_SCHEMES
            },
            "files": files,
            "campaigns": campaigns,
        }
        (folder / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=1))
        manifest["path"] = str(publish(exports_dir, snapshot, folder))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return manifest


def snapshots_to_export(extras: list[dict[str, Any]]) -> dict[str, int | None]:
    """Snapshot date -> the newest publish-record version among the Asset events' extras, by date."""
    latest: dict[str, int | None] = {}
    for extra in extras:
        day, version = extra["snapshot_date"], extra.get("gold_published_version")
        if day not in latest or (version is not None and (latest[day] is None or version > latest[day])):
            latest[day] = version
    return dict(sorted(latest.items()))


def stale_snapshots(settings: Settings, until: date | None = None) -> list[date]:
    """Published snapshots (up to ``until``) with no export, or exported from another version than
    the one published now (a re-run published it again): what a catch-up exports, oldest first."""
    published = published_versions(settings.table_path(EXPORT_TRIGGER_TABLE)) or {}
    stale = []
    for day, versions in sorted(published.items()):
        manifest = read_manifest(settings, day)
        if (until is None or day <= until) and (
            manifest is None or manifest.get("source_version") != versions.get(EXPORT_SOURCE_TABLE)
        ):
            stale.append(day)
    return stale


def read_manifest(settings: Settings, snapshot: date) -> dict[str, Any] | None:
    """The published manifest of ``snapshot``, or None."""
    path = settings.path("exports_dir") / f"snapshot_date={snapshot.isoformat()}" / EXPORT_MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None
