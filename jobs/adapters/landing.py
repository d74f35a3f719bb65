"""The landing zone: one folder per day, ``<landing_dir>/date=YYYY-MM-DD/``, plus an arrival marker.

A day's folder holds one or more data files (CSV with a header row, or Parquet) and, written
last, the marker file. Marker present and no rows: a day without trading. Marker absent: the
day's data has not arrived yet.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import date
from pathlib import Path

import pandas as pd

DATA_SUFFIXES = {"csv": (".csv", ".csv.gz"), "parquet": (".parquet",)}


def day_dir(landing_dir: Path, day: date) -> Path:
    """Folder holding the files of ``day``."""
    return Path(landing_dir) / f"date={day.isoformat()}"


def has_arrived(landing_dir: Path, day: date, marker: str) -> bool:
    """True once the day's arrival marker exists."""
    return (day_dir(landing_dir, day) / marker).is_file()


def data_files(landing_dir: Path, day: date, fmt: str) -> list[Path]:
    """The day's data files in name order (marker and hidden files excluded)."""
    folder = day_dir(landing_dir, day)
    if not folder.is_dir():
        return []
    suffixes = DATA_SUFFIXES[fmt]
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", ".")) and p.name.endswith(suffixes)
    )


def fingerprint(files: list[Path]) -> str:
    """Content hash of a day's files: ties a validation result to the exact bytes it saw."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_day(landing_dir: Path, day: date, rows: pd.DataFrame, marker: str, fmt: str = "csv") -> Path:
    """Land ``rows`` as the file of ``day`` (atomically), then write the marker.

    An empty frame still lands a header-only file: a day without trading.
    """
    folder = day_dir(landing_dir, day)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / ("transactions.parquet" if fmt == "parquet" else "transactions.csv")
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    os.close(fd)
    if fmt == "parquet":
        rows.to_parquet(tmp_name, index=False)
    else:
        rows.to_csv(tmp_name, index=False)
    os.replace(tmp_name, target)
    (folder / marker).touch()
    return target
