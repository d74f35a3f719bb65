"""Per-segment customer lists for marketing tools, one folder per snapshot, replaced atomically.

``python -m jobs.tools.export --run-date YYYY-MM-DD`` (the ``segment_export`` DAG runs the same)

Layout under ``paths.exports_dir``::

    snapshot_date=D            -> .versions/D-<id>   (a symlink, swapped in one rename)
    .versions/D-<id>/<scheme>/<segment>.csv|.parquet
    .versions/D-<id>/manifest.json   row counts per file, the snapshot's table versions

A reader that opens ``snapshot_date=D/`` sees either the previous export or the new one, never
a half-written folder. Reads the lake with delta-rs (no JVM).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from deltalake import DeltaTable

from jobs.cli import run_date_parser
from jobs.config import Settings, load_settings
from jobs.definitions import EXPORT_COLUMNS, EXPORT_MANIFEST, EXPORT_SOURCE_TABLE, LABEL_SCHEMES, TABLES
from jobs.errors import LakeStateError

VERSIONS_DIR = ".versions"


def slug(segment: str) -> str:
    """A file-name-safe form of a segment name: ``Can't Lose`` -> ``cant-lose``."""
    return re.sub(r"[^a-z0-9]+", "-", segment.lower().replace("'", "")).strip("-") or "unnamed"


def segment_lists(gold: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(label scheme, segment) -> that segment's customers (EXPORT_COLUMNS, by customer id)."""
    lists = {}
    for scheme, column in LABEL_SCHEMES.items():
        for segment, rows in gold.groupby(column, sort=True):
            lists[(scheme, str(segment))] = rows[EXPORT_COLUMNS].sort_values("customer_id").reset_index(drop=True)
    return lists


def table_versions(settings: Settings) -> dict[str, int | None]:
    """Current Delta version of every table (None when it does not exist yet)."""
    found = {}
    for name in TABLES:
        path = str(settings.table_path(name))
        found[name] = DeltaTable(path).version() if DeltaTable.is_deltatable(path) else None
    return found


def read_snapshot(settings: Settings, snapshot: date) -> tuple[pd.DataFrame, int]:
    """The gold rows of ``snapshot`` and the table version read; LakeStateError when there are none."""
    path = str(settings.table_path(EXPORT_SOURCE_TABLE))
    if not DeltaTable.is_deltatable(path):
        raise LakeStateError(f"no {EXPORT_SOURCE_TABLE} table at {path}: nothing to export")
    table = DeltaTable(path)
    gold = table.to_pandas(filters=[("snapshot_date", "=", snapshot)], columns=EXPORT_COLUMNS)
    if gold.empty:
        raise LakeStateError(f"no {EXPORT_SOURCE_TABLE} snapshot for {snapshot}: it is not published")
    return gold, table.version()


def write_lists(lists: dict[tuple[str, str], pd.DataFrame], folder: Path) -> list[dict[str, Any]]:
    """CSV and Parquet of every list under ``folder/<scheme>/``; the manifest's file entries."""
    files = []
    for (scheme, segment), rows in lists.items():
        (folder / scheme).mkdir(parents=True, exist_ok=True)
        stem = f"{scheme}/{slug(segment)}"
        rows.to_csv(folder / f"{stem}.csv", index=False)
        rows.to_parquet(folder / f"{stem}.parquet", index=False)
        files.append({"label_scheme": scheme, "segment": segment, "rows": len(rows),
                      "csv": f"{stem}.csv", "parquet": f"{stem}.parquet"})  # fmt: skip
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


def export_snapshot(settings: Settings, snapshot: date) -> dict[str, Any]:
    """Write the segment lists of ``snapshot`` and its manifest; returns the manifest."""
    gold, source_version = read_snapshot(settings, snapshot)
    versions = table_versions(settings)
    exports_dir = settings.path("exports_dir")
    folder = exports_dir / VERSIONS_DIR / f"{snapshot.isoformat()}-{uuid.uuid4().hex[:12]}"
    folder.mkdir(parents=True)
    try:
        files = write_lists(segment_lists(gold), folder)
        manifest = {
            "snapshot_date": snapshot.isoformat(),
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source_table": EXPORT_SOURCE_TABLE,
            "source_version": source_version,
            "table_versions": versions,
            "customers": len(gold),
            "rows_per_scheme": {
                scheme: sum(f["rows"] for f in files if f["label_scheme"] == scheme) for scheme in LABEL_SCHEMES
            },  # fmt: skip
            "files": files,
        }
        (folder / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=1))
        manifest["path"] = str(publish(exports_dir, snapshot, folder))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return manifest


def read_manifest(settings: Settings, snapshot: date) -> dict[str, Any] | None:
    """The published manifest of ``snapshot``, or None."""
    path = settings.path("exports_dir") / f"snapshot_date={snapshot.isoformat()}" / EXPORT_MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    args = run_date_parser("Export the per-segment customer lists of a snapshot.").parse_args(argv)
    manifest = export_snapshot(load_settings(), args.run_date)
    print(json.dumps({k: manifest[k] for k in ("snapshot_date", "customers", "rows_per_scheme", "path")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
