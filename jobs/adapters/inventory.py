"""The inventory of a day folder and the strict reader that accounts for every landed byte.

Every entry of ``date=D/`` is classified without following it (``lstat``): the arrival marker,
a data file (a suffix of ``landing.format``, matched case-insensitively), or a name matching one
of ``landing.ignore`` (recorded, never read). Anything else fails the day naming it: another
name, a symlink, a folder, a FIFO, a device, a socket, a hard-linked file.

Each data file is then streamed once, opened with ``O_NOFOLLOW`` (and checked to still be the
regular file that was listed): hashed, decompressed within a byte budget (``landing.max_file_bytes``,
``landing.max_day_bytes``), decoded as strict UTF-8 and parsed by Python's ``csv`` module in strict
mode, with bounded field length and record span. The records counted here are the ones every
later reader must account for (validate compares Spark's rows, ingest bronze + quarantine).

A day on a bucket (``s3://…/date=D/``) is read the same way: one listing of its prefix (a deeper key
is refused like a folder), each object streamed and checked to still be the object listed (its
ETag). The folder is reached only through ``list_folder`` and ``open_stream``.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

from jobs import storage
from jobs.errors import DataValidationError, UnreadableFileError
from jobs.storage import Location

DATA_SUFFIXES = {"csv": (".csv", ".csv.gz"), "parquet": (".parquet",)}
PARQUET_MAGIC = b"PAR1"
BLOCK = 1 << 20  # bytes read (and at most inflated) per step
DATA, MARKER, IGNORED = "data", "marker", "ignored"
# Characters a Hadoop path cannot take literally even escaped (``[``, ``{`` classes, ``:`` URI scheme,
# ``\`` escape); ``?``, ``*``, ``]``, ``}`` are read literally once escaped (``literal_path``).
UNREADABLE_NAME_CHARS = frozenset("[{:\\")


class ResourceLimitError(DataValidationError):
    """A landed file (or day) goes beyond a bound in ``landing``: permanent, never retried."""


@dataclass(frozen=True)
class Limits:
    """The bounds a day's files are read within (``landing`` in conf)."""

    max_file_bytes: int = 1 << 30
    max_day_bytes: int = 2 << 30
    max_columns: int = 64
    max_field_chars: int = 4096
    max_record_lines: int = 8

    @classmethod
    def of(cls, landing: Any) -> Limits:
        return cls(**{name: getattr(landing, name) for name in cls.__dataclass_fields__})


@dataclass
class Entry:
    """One entry of the day folder and what was decided about it."""

    name: str
    decision: str  # data | marker | ignored
    size: int
    sha256: str = ""
    inflated_bytes: int = 0
    records: int | None = None  # data files: records after the header, by the strict reader
    columns: list[str] = field(default_factory=list)


@dataclass
class Inventory:
    """Every entry of a day folder; ``fingerprint`` ties a validation to the data files' bytes."""

    folder: Location
    entries: list[Entry]

    @property
    def data(self) -> list[Entry]:
        return [e for e in self.entries if e.decision == DATA]

    @property
    def data_paths(self) -> list[Location]:
        return [self.folder / e.name for e in self.data]

    @property
    def records(self) -> dict[str, int]:
        return {e.name: int(e.records or 0) for e in self.data}

    @property
    def fingerprint(self) -> str:
        return fingerprint_of([(e.name, e.size, bytes.fromhex(e.sha256)) for e in self.data])

    def as_records(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.entries]


# ---------------------------------------------------------------- the two backends: a local folder, a bucket prefix


@dataclass(frozen=True)
class Listed:
    """An entry as listed, never followed: its kind (``file`` or what else it is), size, number of
    names and identity (device and inode; an object's ETag), checked again when it is opened."""

    kind: str
    size: int
    links: int = 1
    identity: tuple[Any, ...] = ()


def list_folder(folder: Location) -> dict[str, Listed]:
    """Every entry of ``folder`` (not recursive) by name, sorted; empty when it does not exist.

    Local: ``lstat`` of each name (a symlink is one, never followed). On a bucket: one listing of
    the prefix (ListObjectsV2, no glob); a deeper key shows as a folder."""
    if storage.is_remote(folder):
        return _list_prefix(folder)
    return {name: _listed(os.lstat(Path(folder) / name)) for name in sorted(os.listdir(folder))}


def _listed(status: os.stat_result) -> Listed:
    kind = "file" if stat.S_ISREG(status.st_mode) else _kind(status.st_mode)
    return Listed(kind, status.st_size, status.st_nlink, (status.st_dev, status.st_ino))


def _list_prefix(folder: Location) -> dict[str, Listed]:
    fs, root = storage.filesystem(folder)
    try:
        found = fs.ls(root, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    entries = {}
    for info in found:
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info.get("type") == "directory":
            entries[name] = Listed("a folder (a deeper key prefix)", 0)
        else:
            entries[name] = Listed("file", int(info.get("size") or 0), 1, (info.get("ETag"),))
    return dict(sorted(entries.items()))


def open_stream(folder: Location, name: str, listed: Listed) -> IO[bytes]:
    """A binary stream of the listed file, never through a symlink; refused when the entry is no
    longer the file that was listed (swapped for a link, a FIFO, another file or object)."""
    if storage.is_remote(folder):
        return _open_object(folder, name, listed)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(Path(folder) / name, flags)
    except OSError as error:
        raise DataValidationError(f"{name!r}: refused: cannot be opened as a regular file ({error.strerror})") from None
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != listed.identity:
        os.close(fd)
        raise _replaced(name)
    return os.fdopen(fd, "rb")


def _open_object(folder: Location, name: str, listed: Listed) -> IO[bytes]:
    fs, root = storage.filesystem(folder)
    try:
        stream = fs.open(f"{root}/{name}", "rb", block_size=BLOCK, cache_type="none")
    except FileNotFoundError:
        raise _replaced(name) from None
    if (stream.details.get("ETag"),) != listed.identity:
        stream.close()
        raise _replaced(name)
    return stream


def _replaced(name: str) -> DataValidationError:
    return DataValidationError(f"{name!r}: refused: replaced by another entry while the day was read")


# ---------------------------------------------------------------- classification


def _kind(mode: int) -> str:
    kinds = [
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ]
    return next((text for test, text in kinds if test(mode)), "not a regular file")


def classify(name: str, listed: Listed, marker: str, fmt: str, ignore: list[str]) -> str:
    """``data``, ``marker`` or ``ignored``; anything else raises naming the entry and why."""
    if listed.kind != "file":
        raise DataValidationError(f"{name!r}: refused: {listed.kind} in the day folder (never opened)")
    if listed.links > 1:
        raise DataValidationError(f"{name!r}: refused: a hard link ({listed.links} names for one file)")
    if name == marker:
        return MARKER
    if any(fnmatchcase(name, pattern) for pattern in ignore):
        return IGNORED
    if name.lower().endswith(DATA_SUFFIXES[fmt]) and not name.startswith((".", "_")):
        unreadable = sorted({c for c in name if c in UNREADABLE_NAME_CHARS or not c.isprintable()})
        if unreadable:
            raise DataValidationError(
                f"{name!r}: refused: its name holds {unreadable}, which Hadoop/Spark paths read as a pattern "
                "or URI syntax (or a control character): rename the file"
            )
        return DATA
    expected = " or ".join(DATA_SUFFIXES[fmt])
    raise DataValidationError(
        f"{name!r}: unexpected entry in the day folder: not a {expected} data file (any case, not hidden), "
        f"not the marker {marker!r}, not matched by landing.ignore {ignore}"
    )


# ---------------------------------------------------------------- streaming checks


class _Budget:
    """Inflated bytes left for the day; a file's own budget is checked beside it."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.day_used = limits, 0

    def take(self, name: str, file_used: int, size: int) -> None:
        self.day_used += size
        if file_used > self.limits.max_file_bytes:
            raise ResourceLimitError(
                f"{name!r}: more than landing.max_file_bytes={self.limits.max_file_bytes} bytes once inflated "
                "(a compression bomb or a mis-delivery): refused before any reader loads it"
            )
        if self.day_used > self.limits.max_day_bytes:
            raise ResourceLimitError(
                f"{name!r}: the day's files hold more than landing.max_day_bytes={self.limits.max_day_bytes} "
                "bytes once inflated: refused before any reader loads them"
            )


def _raw_blocks(stream: IO[bytes], digest: Any, counter: list[int]) -> Iterator[bytes]:
    for block in iter(lambda: stream.read(BLOCK), b""):
        digest.update(block)
        counter[0] += len(block)
        yield block


def _gunzip(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Inflate every gzip member, at most ``BLOCK`` bytes per step (a bomb never fills memory);
    raises on corruption, truncation or trailing bytes that are not another member."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for block in blocks:
        pending = block
        while pending:
            if inflater.eof:  # another member follows (or trailing bytes: zlib.error names them)
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            yield inflater.decompress(pending, BLOCK)
            pending = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if not inflater.eof:
        raise EOFError("the gzip stream ends before its end marker (truncated)")


_LINE_END = re.compile(r"\r\n|\r|\n")


class _Lines:
    """Physical lines (ends kept: ``\\r\\n``, ``\\r``, ``\\n``) of decoded text chunks, each at most
    ``max_chars``; counts the lines of the record being read to bound its span."""

    def __init__(self, name: str, chunks: Iterator[str], max_chars: int, max_record_lines: int) -> None:
        self.name, self.chunks, self.max_chars, self.max_span = name, chunks, max_chars, max_record_lines
        self.line = 0  # physical lines handed to the reader
        self.record_start = 1  # first physical line of the record being read

    def __iter__(self) -> Iterator[str]:
        buffer = ""
        for chunk in self.chunks:
            buffer += chunk
            start = 0
            for match in _LINE_END.finditer(buffer):
                if match.group() == "\r" and match.end() == len(buffer):
                    break  # maybe the first half of \r\n: wait for the next chunk
                yield self._emit(buffer[start : match.end()])
                start = match.end()
            buffer = buffer[start:]
            if len(buffer) > self.max_chars:
                self._too_long()
        if buffer:
            yield self._emit(buffer)

    def _emit(self, line: str) -> str:
        if len(line) > self.max_chars:
            self._too_long()
        self.line += 1
        if self.line - self.record_start + 1 > self.max_span:
            raise ResourceLimitError(
                f"{self.name!r}: the record starting on line {self.record_start} spans more than "
                f"landing.max_record_lines={self.max_span} lines (an unbalanced quote?)"
            )
        return line

    def _too_long(self) -> None:
        raise ResourceLimitError(
            f"{self.name!r}: line {self.line + 1} is longer than {self.max_chars} characters "
            "(landing.max_columns x landing.max_field_chars)"
        )


def _decode(name: str, blocks: Iterator[bytes]) -> Iterator[str]:
    """Strict UTF-8 text; NUL bytes and a byte-order mark are refused, naming the offset."""
    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    for block in blocks:
        nul = block.find(b"\x00")
        if nul >= 0:
            raise UnreadableFileError(f"{name!r}: unreadable: a NUL byte at offset {offset + nul} (binary data?)")
        text = decoder.decode(block)
        if offset == 0 and text.startswith("\ufeff"):
            raise UnreadableFileError(
                f"{name!r}: starts with a byte-order mark (U+FEFF): its first column name would not match; "
                "export UTF-8 without a BOM"
            )
        offset += len(block)
        yield text
    yield decoder.decode(b"", final=True)


def scan_csv(
    name: str, text: Iterator[str], limits: Limits, on_record: Callable[[int, list[str]], None] | None = None
) -> tuple[list[str], int]:
    """(header, records) of one CSV file read by Python's strict ``csv`` reader; raises naming the
    line of the first record that breaks a rule. ``on_record(number, fields)`` sees each record."""
    lines = _Lines(name, text, limits.max_columns * (limits.max_field_chars + 3) + 2, limits.max_record_lines)
    previous = csv.field_size_limit(limits.max_field_chars)
    try:
        reader = csv.reader(lines, strict=True)
        header: list[str] | None = None
        records = 0
        try:
            for row in reader:
                start, lines.record_start = lines.record_start, lines.line + 1
                if not row:
                    continue  # a blank line: no record (Spark skips it too)
                if header is None:
                    header = _check_header(name, row, limits)
                    continue
                if len(row) != len(header):
                    raise DataValidationError(
                        f"{name!r}: the record on line {start} has {len(row)} fields, the header {len(header)}: "
                        f"{_shown(row)}"
                    )
                records += 1
                if on_record:
                    on_record(records, row)
        except csv.Error as error:
            problem = str(error)
            if "field larger than field limit" in problem:
                raise ResourceLimitError(
                    f"{name!r}: the record starting on line {lines.record_start} has a field longer than "
                    f"landing.max_field_chars={limits.max_field_chars} (an unbalanced quote?)"
                ) from None
            raise DataValidationError(
                f"{name!r}: malformed CSV in the record starting on line {lines.record_start}: {problem}"
            ) from None
    finally:
        csv.field_size_limit(previous)
    if header is None:
        raise DataValidationError(f"{name!r}: empty: no header row (a header-only file is a day without trading)")
    return header, records


def _shown(row: list[str]) -> str:
    return repr([value[:40] for value in row[:10]])


def _check_header(name: str, header: list[str], limits: Limits) -> list[str]:
    if len(header) > limits.max_columns:
        raise ResourceLimitError(f"{name!r}: {len(header)} columns, more than landing.max_columns={limits.max_columns}")
    blank = [i + 1 for i, column in enumerate(header) if not column.strip()]
    if blank:
        raise DataValidationError(f"{name!r}: header column(s) {blank} have no name")
    seen: dict[str, str] = {}
    for column in header:
        key = column.strip().lower()
        if key in seen:
            raise DataValidationError(f"{name!r}: header names {seen[key]!r} and {column!r} twice (any case)")
        seen[key] = column
    return header


def _parquet_shape(name: str, stream: IO[bytes], limits: Limits) -> tuple[list[str], int]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(stream).metadata
    except Exception as error:  # noqa: BLE001 - any footer error: the file is not what its name says
        raise UnreadableFileError(f"{name!r}: unreadable: not a Parquet file ({error})") from None
    columns = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if len(columns) > limits.max_columns:
        raise ResourceLimitError(
            f"{name!r}: {len(columns)} columns, more than landing.max_columns={limits.max_columns}"
        )
    return columns, int(meta.num_rows)


def scan_file(
    folder: Location,
    name: str,
    status: Listed,
    limits: Limits,
    budget: _Budget | None = None,
    on_record: Callable[[int, list[str]], None] | None = None,
) -> Entry:
    """One data file streamed once: hash, size, inflated bytes, header and strict record count."""
    budget = budget or _Budget(limits)
    digest, counter, used = hashlib.sha256(), [0], [0]
    lower = name.lower()

    def counted(blocks: Iterator[bytes]) -> Iterator[bytes]:
        for block in blocks:
            used[0] += len(block)
            budget.take(name, used[0], len(block))
            yield block

    try:
        with open_stream(folder, name, status) as stream:
            if lower.endswith(".parquet"):
                budget.take(name, status.size, status.size)
                head, tail = (
                    stream.read(4),
                    (stream.seek(-4, os.SEEK_END) if status.size >= 8 else 0, stream.read(4)),
                )
                if not (head == tail[1] == PARQUET_MAGIC):
                    raise ValueError("no Parquet magic bytes at both ends (truncated or not Parquet)")
                stream.seek(0)
                columns, records = _parquet_shape(name, stream, limits)
                stream.seek(0)
                for _ in _raw_blocks(stream, digest, counter):
                    pass
                used[0] = counter[0]
            else:
                raw = _raw_blocks(stream, digest, counter)
                inflated = counted(_gunzip(raw) if lower.endswith(".gz") else raw)
                columns, records = scan_csv(name, _decode(name, inflated), limits, on_record)
                for _ in inflated:  # bytes after the last record (none: the reader read to the end)
                    pass
    except UnicodeDecodeError as error:
        raise UnreadableFileError(f"{name!r}: unreadable: not UTF-8 text ({error.reason})") from None
    except zlib.error as error:
        raise UnreadableFileError(f"{name!r}: unreadable: corrupt gzip data ({error})") from None
    except (EOFError, ValueError) as error:
        raise UnreadableFileError(f"{name!r}: unreadable: {error}") from None
    except OSError as error:
        raise UnreadableFileError(f"{name!r}: unreadable: {error.strerror or error}") from None
    return Entry(name, DATA, counter[0], digest.hexdigest(), used[0], records, columns)


def _digest_only(folder: Location, name: str, status: Listed) -> Entry:
    digest, counter = hashlib.sha256(), [0]
    with open_stream(folder, name, status) as stream:
        for _ in _raw_blocks(stream, digest, counter):
            pass
    return Entry(name, "", counter[0], digest.hexdigest())


def take_inventory(folder: Location, marker: str, fmt: str, ignore: list[str], limits: Limits) -> Inventory:
    """Every entry of the day folder (or prefix) classified, recorded and (data files) strictly read.

    Raises ``DataValidationError`` (exit 2) naming the first entry refused. A missing folder is
    an empty inventory (the marker check decides whether the day has arrived).
    """
    if not storage.is_remote(folder):
        folder = Path(folder)
        try:
            status = os.lstat(folder)
        except FileNotFoundError:
            return Inventory(folder, [])
        if not stat.S_ISDIR(status.st_mode):
            raise DataValidationError(f"{str(folder)!r}: refused: the day folder is {_kind(status.st_mode)}")
    budget, entries = _Budget(limits), []
    for name, listed in list_folder(folder).items():
        decision = classify(name, listed, marker, fmt, ignore)
        if decision == DATA:
            entries.append(scan_file(folder, name, listed, limits, budget))
        else:
            entry = _digest_only(folder, name, listed)
            entry.decision = decision
            entries.append(entry)
    return Inventory(folder, entries)


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(8, "big") + value


def fingerprint_of(files: list[tuple[str, int, bytes]]) -> str:
    """Length-prefixed hash of (name, size, SHA-256) per file: two file sets never hash alike."""
    outer = hashlib.sha256(len(files).to_bytes(8, "big"))
    for name, size, content in files:
        outer.update(_field(name.encode()) + size.to_bytes(8, "big") + _field(content))
    return outer.hexdigest()


_GLOB_CHARS = re.compile(r"([\\*?\[\]{}])")


def literal_path(path: Location) -> str:
    """``path`` for a Hadoop/Spark reader (``s3a://`` on a bucket), its glob characters escaped so
    the name is read as itself."""
    text = storage.spark_uri(path) if storage.is_remote(path) else str(Path(path).absolute())
    return _GLOB_CHARS.sub(r"\\\1", text)


def first_disagreement(folder: Location, name: str, limits: Limits, theirs: list[list[str | None]]) -> str:
    """Where another reader's rows of ``name`` (in file order) first differ from the strict reader's
    records: the record number and both versions. Empty and null fields count as equal."""
    found: list[str] = []

    def compare(number: int, row: list[str]) -> None:
        if found:
            return
        if number > len(theirs):
            found.append(f"record {number} {_shown(row)}: the other reader has no such record")
        elif [v or "" for v in theirs[number - 1]] != [v or "" for v in row]:
            found.append(f"record {number}: strict reader {_shown(row)}, other reader {_shown(theirs[number - 1])}")

    if name.lower().endswith(".parquet"):
        return "Parquet row counts differ"
    entry = scan_file(folder, name, list_folder(folder)[name], limits, on_record=compare)
    count = int(entry.records or 0)
    if not found and len(theirs) > count:
        found.append(f"record {count + 1}: only the other reader has it: {_shown(theirs[count])}")
    return found[0] if found else "no record differs"
