"""The landing zone: one folder per day, ``<landing_dir>/date=YYYY-MM-DD/``, plus an arrival marker.

A day's folder holds one or more data files (CSV with a header row, or Parquet) and, written
last, the marker file. Marker present and no rows: a day without trading. Marker absent: the
day's data has not arrived yet. On a bucket the folder is a key prefix and the marker the
commit signal: a sender puts every data object, then the marker object.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING

import pandas as pd

from jobs import storage
from jobs.adapters.inventory import (
    DATA_SUFFIXES,
    PARQUET_MAGIC,
    Inventory,
    Limits,
    _gunzip,
    list_folder,
    take_inventory,
)
from jobs.definitions import REQUIRED_COLUMNS
from jobs.errors import DataValidationError, UnreadableFileError
from jobs.storage import Location

if TYPE_CHECKING:
    from jobs.config import Settings


def day_dir(landing_dir: Location, day: date) -> Location:
    """Folder (or key prefix) holding the files of ``day``."""
    return landing_dir / f"date={day.isoformat()}"


def has_arrived(landing_dir: Location, day: date, marker: str) -> bool:
    """True once the day's arrival marker exists (one listing: a regular file or an object)."""
    listed = list_folder(day_dir(landing_dir, day)).get(marker)
    return listed is not None and listed.kind == "file"


def data_files(landing_dir: Location, day: date, fmt: str) -> list[Location]:
    """The day's data files in name order (marker and hidden files excluded, suffixes in any case).

    A listing only: the steps read a day through ``day_inventory``, which refuses what this skips.
    """
    folder = day_dir(landing_dir, day)
    suffixes = DATA_SUFFIXES[fmt]
    return [
        folder / name
        for name, listed in list_folder(folder).items()
        if listed.kind == "file" and not name.startswith(("_", ".")) and name.lower().endswith(suffixes)
    ]


def day_inventory(settings: Settings, day: date) -> Inventory:
    """Every entry of the day's folder classified, and its data files read by the strict reader
    within the bounds of ``landing`` in conf (``jobs.adapters.inventory``)."""
    landing = settings.landing
    folder = day_dir(settings.path("landing_dir"), day)
    try:
        inventory = take_inventory(folder, landing.marker, landing.format, landing.ignore, Limits.of(landing))
        for entry in inventory.data:
            refuse_ambiguous_columns(entry.name, entry.columns, settings)
    except DataValidationError as error:  # the same class (exit 2), naming the day's folder
        raise type(error)(f"{day} in {folder}: {error}") from None
    return inventory


def refuse_ambiguous_columns(name: str, header: list[str], settings: Settings) -> None:
    """Two source names of one required column in a file (``InvoiceNo`` and ``Invoice``):
    ``DataValidationError`` before Spark reads it. A missing column is the suite's to report
    (``expect_column_to_exist`` from ``definitions.REQUIRED_COLUMNS``), in the day's result."""
    for target in REQUIRED_COLUMNS:
        found = [c for c in header if c in {*settings.columns.get(target, []), target}]
        if len(found) > 1:
            raise DataValidationError(f"{name!r}: columns {', '.join(found)} all map to {target}: ambiguous")


def _check_utf8(blocks: Iterator[bytes]) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    for block in blocks:
        decoder.decode(block)
    decoder.decode(b"", final=True)


def file_digest(path: Location) -> tuple[bytes, int]:
    """SHA-256 and size of a file's bytes, read once; the file is checked on the way.

    ``.csv.gz``: a complete, uncorrupted gzip stream of UTF-8 text; ``.csv``: UTF-8 text;
    ``.parquet``: the magic bytes at both ends (a truncated file loses its footer). A file
    that fails raises ``UnreadableFileError`` naming it: retrying cannot repair it.
    """
    digest, size, head, tail = hashlib.sha256(), 0, b"", b""

    def blocks() -> Iterator[bytes]:
        nonlocal size, head, tail
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
                head = head or block[:4]
                tail = (tail + block)[-4:]
                yield block

    try:
        if path.name.lower().endswith(".gz"):
            _check_utf8(_gunzip(blocks()))
        elif path.name.lower().endswith(".csv"):
            _check_utf8(blocks())
        else:
            for _ in blocks():
                pass
            if path.name.lower().endswith(".parquet") and not (head == tail == PARQUET_MAGIC):
                raise ValueError("no Parquet magic bytes at both ends (truncated or not Parquet)")
    except UnicodeDecodeError as error:
        raise UnreadableFileError(f"{path}: unreadable: not UTF-8 text ({error.reason})") from None
    except zlib.error as error:
        raise UnreadableFileError(f"{path}: unreadable: corrupt gzip data ({error})") from None
    except (OSError, EOFError, ValueError) as error:
        raise UnreadableFileError(f"{path}: unreadable: {error}") from None
    return digest.digest(), size


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(8, "big") + value


def fingerprint(files: list[Location]) -> str:
    """Content hash of a day's files, ties a validation result to the exact bytes it saw.

    Each field is length-prefixed (the number of files; per file its name, its size and the
    SHA-256 of its bytes), so two different file sets can never hash alike by shifting bytes
    from one file's content into the next file's name. Every file is checked while it is
    read (``file_digest``).
    """
    outer = hashlib.sha256(len(files).to_bytes(8, "big"))
    for path in files:
        content, size = file_digest(path)
        outer.update(_field(path.name.encode()) + size.to_bytes(8, "big") + _field(content))
    return outer.hexdigest()


def write_day(landing_dir: Location, day: date, rows: pd.DataFrame, marker: str, fmt: str = "csv") -> Location:
    """Land ``rows`` as the file of ``day`` (atomically: a rename on disk, one put on a bucket),
    then write the marker. An empty frame still lands a header-only file: a day without trading.
    """
    folder = day_dir(landing_dir, day)
    name = "transactions.parquet" if fmt == "parquet" else "transactions.csv"
    if storage.is_remote(folder):
        body = rows.to_parquet(index=False) if fmt == "parquet" else rows.to_csv(index=False).encode()
        (folder / name).write_bytes(body)
        (folder / marker).write_bytes(b"")
        return folder / name
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    os.close(fd)
    if fmt == "parquet":
        rows.to_parquet(tmp_name, index=False)
    else:
        rows.to_csv(tmp_name, index=False)
    os.replace(tmp_name, folder / name)
    (folder / marker).touch()
    return folder / name
