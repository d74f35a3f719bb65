"""The hostile corpus (issue 27): landed days an attacker or a careless upstream job could deliver,
each generated in code with the verdict the gate must reach.

A case builds one day folder; its verdict is ``Pass(records)`` (the strict reader counts these
records per data file and the day is accepted), ``Quarantine(records, held)`` (accepted, ``held``
rows go to quarantine) or ``Fail(text)`` (exit 2, the message names ``text``). Settings overrides
(``limits``) keep the resource cases small: the same rule at a scale that runs in milliseconds.
"""

from __future__ import annotations

import gzip
import os
import socket
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

DAY = date(2011, 12, 5)
HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
MARKER = "_SUCCESS"


@dataclass(frozen=True)
class Pass:
    records: dict[str, int]
    held: int = 0  # rows quarantined (Spark subset); 0: a clean day
    suite_fails: str = ""  # the inventory accepts the files, the suite then fails the day naming this


@dataclass(frozen=True)
class Fail:
    names: str  # the error message contains this (the file, column or bound)


@dataclass(frozen=True)
class Case:
    id: str
    kind: str  # filesystem | encoding | structure | resource | payload
    build: Callable[[Path], None]
    verdict: Pass | Fail
    limits: dict[str, int] = field(default_factory=dict)  # landing.* overrides
    spark: bool = False  # also in the Spark (validate + ingest) subset run in CI


def row(i: int, **values: str) -> list[str]:
    base = {
        "InvoiceNo": str(536365 + i),
        "StockCode": f"85{i:03d}A",
        "Description": f"WHITE HANGING HEART T-LIGHT HOLDER {i}",
        "Quantity": str(1 + i % 7),
        "InvoiceDate": f"2011-12-05 {8 + i % 10:02d}:{i % 60:02d}:00",
        "UnitPrice": f"{1 + i % 5}.55",
        "CustomerID": f"{17850 + i % 40}.0",
        "Country": "United Kingdom",
    }
    base.update(values)
    return [base[c] for c in HEADER] if set(base) == set(HEADER) else list(base.values())


def quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\r\n') else value


def csv_text(rows: list[list[str]], header: list[str] = HEADER, end: str = "\n") -> str:
    return "".join(",".join(quote(v) for v in r) + end for r in [header, *rows])


def good(n: int, **values: str) -> str:
    return csv_text([row(i, **values) for i in range(n)])


def land(name: str, content: str | bytes, marker: bool = True) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        (folder / name).write_bytes(content.encode() if isinstance(content, str) else content)
        if marker:
            (folder / MARKER).touch()

    return build


def both(*builds: Callable[[Path], None]) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        for b in builds:
            b(folder)

    return build


def with_entry(make: Callable[[Path], None]) -> Callable[[Path], None]:
    return both(land("transactions.csv", good(5)), make)


def zeros_gzip(size: int, zeros: bool = False) -> bytes:
    """A compression bomb: ``size`` bytes of one repeated valid row after a CSV header, gzipped
    (several hundred to one); ``zeros`` the issue's literal one, zero bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(csv_text([]).encode())]
    block = ",".join(row(1)).encode() + b"\n"
    block = b"\0" * (1 << 20) if zeros else block * ((1 << 20) // len(block))
    for _ in range(size >> 20):
        out.append(packer.compress(block))
    return b"".join(out) + packer.flush()


def columns_swapped(rows: list[list[str]]) -> list[list[str]]:
    return [list(reversed(r)) for r in rows]


def _fifo(folder: Path) -> None:
    os.mkfifo(folder / "transactions.csv")


def _socket(folder: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "feed.csv"))
    sock.close()


def _outside(folder: Path) -> None:
    target = folder.parent.parent / "outside.csv"
    target.write_text(good(5))
    (folder / "transactions.csv").symlink_to(target)


def _hardlink(folder: Path) -> None:
    target = folder.parent.parent / "elsewhere.csv"
    target.write_text(good(5))
    os.link(target, folder / "transactions.csv")


def _day_is_link(folder: Path) -> None:
    real = folder.parent / "real-day"
    real.mkdir()
    land("transactions.csv", good(5))(real)
    folder.rmdir()
    folder.symlink_to(real)


def _nested(folder: Path) -> None:
    (folder / "more").mkdir()
    (folder / "more" / "transactions.csv").write_text(good(5))


def _marker_link(folder: Path) -> None:
    (folder / "transactions.csv").write_text(good(5))
    (folder.parent / "m").touch()
    (folder / MARKER).symlink_to(folder.parent / "m")


def _stray_quote(n: int, at: int) -> str:
    rows = [row(i) for i in range(n)]
    text = csv_text(rows)
    lines = text.splitlines(keepends=True)
    fields = lines[at + 1].split(",")
    fields[2] = '"' + fields[2]  # one stray quote opening a Description
    lines[at + 1] = ",".join(fields)
    return "".join(lines)


def _multi_member() -> bytes:
    return gzip.compress(good(5).encode()) + gzip.compress(
        csv_text([row(i) for i in range(5, 10)], header=[]).lstrip("\n").encode()
    )


def _payload(n: int, at: list[int], **values: str) -> str:
    return csv_text([row(i, **(values if i in at else {})) for i in range(n)])


def _three_rules(n: int) -> str:
    """Two rows breaking each of three quarantine rules: 1 % per rule, 3 % of the day in all."""
    broken = {1: {"Quantity": "x"}, 2: {"Quantity": "x"}, 3: {"UnitPrice": "-1"}, 4: {"UnitPrice": "-1"}}
    broken |= {5: {"StockCode": ""}, 6: {"StockCode": ""}}
    return csv_text([row(i, **broken.get(i, {})) for i in range(n)])


FIVE = {"transactions.csv": 5}
CASES: list[Case] = [
    # ------------------------------------------------------------ file system
    Case("plain-day", "filesystem", land("transactions.csv", good(5)), Pass(FIVE), spark=True),
    Case(
        "upper-case-suffix", "filesystem", land("TRANSACTIONS.CSV", good(5)), Pass({"TRANSACTIONS.CSV": 5}), spark=True
    ),
    Case(
        "mixed-case-gz-suffix",
        "filesystem",
        land("day.Csv.GZ", gzip.compress(good(5).encode())),
        Pass({"day.Csv.GZ": 5}),
        spark=True,
    ),
    Case(
        "two-files",
        "filesystem",
        both(land("a.csv", good(5)), land("b.csv", csv_text([row(i) for i in range(5, 9)]))),
        Pass({"a.csv": 5, "b.csv": 4}),
        spark=True,
    ),
    Case(
        "glob-question-mark-name",
        "filesystem",
        both(land("transactions.csv", good(5)), land("transaction?.csv", csv_text([]))),
        Pass({"transactions.csv": 5, "transaction?.csv": 0}),
        spark=True,
    ),
    Case(
        "glob-star-name",
        "filesystem",
        both(land("transactions.csv", good(5)), land("trans*.csv", csv_text([row(9)]))),
        Pass({"transactions.csv": 5, "trans*.csv": 1}),
        spark=True,
    ),
    Case(
        "glob-bracket-name",
        "filesystem",
        both(land("t.csv", good(5)), land("[t].csv", csv_text([]))),
        Fail("'[t].csv'"),
    ),
    Case(
        "glob-brace-name",
        "filesystem",
        both(land("t.csv", good(5)), land("{t,u}.csv", csv_text([]))),
        Fail("'{t,u}.csv'"),
    ),
    Case("colon-in-name", "filesystem", land("day 12:00.csv", good(5)), Fail("'day 12:00.csv'")),
    Case("backslash-in-name", "filesystem", land("a\\b.csv", good(5)), Fail("'a\\\\b.csv'")),
    Case("newline-in-name", "filesystem", land("a\nb.csv", good(5)), Fail("'a\\nb.csv'")),
    Case(
        "unicode-name", "filesystem", land("tränsactions ü.csv", good(5)), Pass({"tränsactions ü.csv": 5}), spark=True
    ),
    Case("symlink-outside", "filesystem", _outside, Fail("symbolic link")),
    Case(
        "symlink-etc-passwd",
        "filesystem",
        lambda f: ((f / "transactions.csv").symlink_to("/etc/passwd"), (f / MARKER).touch()),
        Fail("symbolic link"),
    ),
    Case(
        "symlink-dangling",
        "filesystem",
        lambda f: ((f / "transactions.csv").symlink_to(f / "nowhere"), (f / MARKER).touch()),
        Fail("symbolic link"),
    ),
    Case(
        "symlink-beside-real-file",
        "filesystem",
        with_entry(lambda f: (f / "copy.csv").symlink_to(f / "transactions.csv")),
        Fail("'copy.csv'"),
    ),
    Case("marker-is-symlink", "filesystem", _marker_link, Fail("'_SUCCESS'")),
    Case("day-folder-is-symlink", "filesystem", _day_is_link, Fail("day folder is a symbolic link")),
    Case("hard-link", "filesystem", both(_hardlink, lambda f: (f / MARKER).touch()), Fail("hard link")),
    Case("folder-named-csv", "filesystem", with_entry(lambda f: (f / "more.csv").mkdir()), Fail("a folder")),
    Case("nested-folder", "filesystem", with_entry(_nested), Fail("'more'")),
    Case("fifo", "filesystem", both(_fifo, lambda f: (f / MARKER).touch()), Fail("a FIFO")),
    Case("unix-socket", "filesystem", with_entry(_socket), Fail("a socket")),
    Case(
        "hidden-data-file",
        "filesystem",
        with_entry(lambda f: (f / ".transactions.csv").write_text(good(5))),
        Fail("'.transactions.csv'"),
    ),
    Case(
        "ignored-ds-store",
        "filesystem",
        with_entry(lambda f: (f / ".DS_Store").write_bytes(b"\x00\x01junk")),
        Pass(FIVE),
    ),
    Case(
        "unknown-file", "filesystem", with_entry(lambda f: (f / "notes.txt").write_text("hello")), Fail("'notes.txt'")
    ),
    Case(
        "backup-suffix",
        "filesystem",
        with_entry(lambda f: (f / "transactions.csv.bak").write_text(good(5))),
        Fail("'transactions.csv.bak'"),
    ),
    Case(
        "parquet-in-csv-day",
        "filesystem",
        with_entry(lambda f: (f / "t.parquet").write_bytes(b"PAR1xxxxPAR1")),
        Fail("'t.parquet'"),
    ),
    Case(
        "underscore-prefixed",
        "filesystem",
        with_entry(lambda f: (f / "_part.csv").write_text(good(5))),
        Fail("'_part.csv'"),
    ),
    Case("marker-only", "filesystem", lambda f: (f / MARKER).touch(), Pass({})),
    # ------------------------------------------------------------ encoding
    Case("latin-1", "encoding", land("t.csv", good(3, Description="CAFÉ CRÈME").encode("latin-1")), Fail("not UTF-8")),
    Case("utf-8-bom", "encoding", land("t.csv", "\ufeff" + good(5)), Fail("byte-order mark")),
    Case("nul-byte", "encoding", land("t.csv", good(5).replace("HOLDER 2", "HOLDER\x002")), Fail("NUL byte")),
    Case("utf-16", "encoding", land("t.csv", good(5).encode("utf-16")), Fail("'t.csv'")),
    Case(
        "mixed-encodings",
        "encoding",
        land(
            "t.csv",
            good(3).encode() + csv_text([row(4, Description="CRÈME")], header=[]).lstrip("\n").encode("latin-1"),
        ),
        Fail("not UTF-8"),
    ),
    Case("truncated-multibyte", "encoding", land("t.csv", good(3).encode() + "é".encode()[:1]), Fail("not UTF-8")),
    Case(
        "overlong-utf8",
        "encoding",
        land("t.csv", good(3).encode().replace(b"WHITE", b"WHIT\xc1\x85")),
        Fail("not UTF-8"),
    ),
    Case(
        "crlf",
        "encoding",
        land("t.csv", csv_text([row(i) for i in range(5)], end="\r\n")),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case("cr-only", "encoding", land("t.csv", csv_text([row(i) for i in range(5)], end="\r")), Pass({"t.csv": 5})),
    Case(
        "non-ascii-text",
        "encoding",
        land("t.csv", good(5, Description="CAFÉ ☕ 𝄞 日本")),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case("gzip-truncated", "encoding", land("t.csv.gz", gzip.compress(good(200).encode())[:-30]), Fail("truncated")),
    Case(
        "gzip-corrupt",
        "encoding",
        land("t.csv.gz", (lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:])(gzip.compress(good(200).encode()))),
        Fail("'t.csv.gz'"),
    ),
    Case(
        "gzip-trailing-garbage",
        "encoding",
        land("t.csv.gz", gzip.compress(good(5).encode()) + b"garbage after the end"),
        Fail("corrupt gzip"),
    ),
    Case(
        "gzip-multi-member",
        "encoding",
        land(
            "t.csv.gz",
            gzip.compress(good(5).encode())
            + gzip.compress(csv_text([row(i) for i in range(5, 10)])[len(csv_text([])) :].encode()),
        ),
        Pass({"t.csv.gz": 10}),
        spark=True,
    ),
    Case("gzip-name-plain-text", "encoding", land("t.csv.gz", good(5)), Fail("corrupt gzip")),
    Case("gzip-of-nothing", "encoding", land("t.csv.gz", gzip.compress(b"")), Fail("empty")),
    # ------------------------------------------------------------ CSV structure
    Case("stray-quote-mid-file", "structure", land("t.csv", _stray_quote(60, 10)), Fail("line 12")),
    Case("stray-quote-last-row", "structure", land("t.csv", _stray_quote(5, 4)), Fail("'t.csv'")),
    Case(
        "quote-inside-unquoted-field",
        "structure",
        land("t.csv", good(5).replace("HOLDER 3", 'HOLDER "3')),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case(
        "quoted-comma-and-newline",
        "structure",
        land("t.csv", good(5, Description="A, B\nSECOND LINE")),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case(
        "doubled-quotes",
        "structure",
        land("t.csv", good(5, Description='12" RULER "BIG"')),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case(
        "extra-field-in-row",
        "structure",
        land("t.csv", good(5).replace("HOLDER 2,", "HOLDER, 2,")),
        Fail("line 4 has 9 fields"),
    ),
    Case(
        "missing-field-in-row",
        "structure",
        land("t.csv", good(5).replace(",United Kingdom\n", "\n", 1)),
        Fail("has 7 fields"),
    ),
    Case("blank-lines", "structure", land("t.csv", good(5).replace("\n", "\n\n")), Pass({"t.csv": 5}), spark=True),
    Case("whitespace-line", "structure", land("t.csv", good(5) + "   \n"), Fail("has 1 fields")),
    Case("header-only", "structure", land("t.csv", csv_text([])), Pass({"t.csv": 0}), spark=True),
    Case("empty-file", "structure", land("t.csv", b""), Fail("empty")),
    Case("no-final-newline", "structure", land("t.csv", good(5).rstrip("\n")), Pass({"t.csv": 5}), spark=True),
    Case(
        "duplicate-header",
        "structure",
        land("t.csv", csv_text([row(i) + ["1"] for i in range(3)], header=[*HEADER, "Quantity"])),
        Fail("twice"),
    ),
    Case(
        "duplicate-header-other-case",
        "structure",
        land("t.csv", csv_text([row(i) + ["1"] for i in range(3)], header=[*HEADER, "quantity"])),
        Fail("twice"),
    ),
    Case(
        "blank-header-name",
        "structure",
        land("t.csv", csv_text([row(i) + ["1"] for i in range(3)], header=[*HEADER, " "])),
        Fail("no name"),
    ),
    Case(
        "reordered-columns",
        "structure",
        land("t.csv", csv_text(columns_swapped([row(i) for i in range(5)]), header=list(reversed(HEADER)))),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case(
        "extra-column",
        "structure",
        land("t.csv", csv_text([row(i) + ["x"] for i in range(5)], header=[*HEADER, "Notes"])),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case(
        "online-retail-ii-names",
        "structure",
        land(
            "t.csv",
            csv_text(
                [row(i) for i in range(5)],
                header=[
                    "Invoice",
                    "StockCode",
                    "Description",
                    "Quantity",
                    "InvoiceDate",
                    "Price",
                    "Customer ID",
                    "Country",
                ],
            ),
        ),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case(
        "both-namings",
        "structure",
        land("t.csv", csv_text([row(i) + ["1"] for i in range(3)], header=[*HEADER, "Invoice"])),
        Fail("ambiguous"),
    ),
    Case(
        "missing-country",
        "structure",
        land("t.csv", csv_text([row(i)[:-1] for i in range(5)], header=HEADER[:-1])),
        Pass({"t.csv": 5}, suite_fails="expect_column_to_exist\\(country\\)"),
        spark=True,
    ),
    Case(
        "missing-description",
        "structure",
        land("t.csv", csv_text([r[:2] + r[3:] for r in (row(i) for i in range(5))], header=HEADER[:2] + HEADER[3:])),
        Pass({"t.csv": 5}, suite_fails="expect_column_to_exist\\(description\\)"),
        spark=True,
    ),
    Case(
        "quoted-header",
        "structure",
        land("t.csv", good(5).replace("InvoiceNo", '"InvoiceNo"', 1)),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case(
        "files-disagree-on-columns",
        "structure",
        both(
            land("a.csv", good(3)),
            land("b.csv", csv_text([row(i) + ["x"] for i in range(3)], header=[*HEADER, "Notes"])),
        ),
        Pass({"a.csv": 3, "b.csv": 3}),
    ),
    # ------------------------------------------------------------ resource bounds
    Case(
        "gzip-bomb",
        "resource",
        land("t.csv.gz", zeros_gzip(16 << 20)),
        Fail("max_file_bytes"),
        limits={"max_file_bytes": 1 << 20},
    ),
    Case(
        "day-budget",
        "resource",
        both(land("a.csv", good(300)), land("b.csv", good(300))),
        Fail("max_day_bytes"),
        limits={"max_day_bytes": 60_000},
    ),
    Case(
        "too-many-columns",
        "resource",
        land(
            "t.csv",
            csv_text([row(i) + ["x"] * 100 for i in range(2)], header=[*HEADER, *[f"c{i}" for i in range(100)]]),
        ),
        Fail("max_columns"),
    ),
    Case("long-field", "resource", land("t.csv", good(3, Description="X" * 5000)), Fail("max_field_chars")),
    Case("long-line-no-newline", "resource", land("t.csv", csv_text([]) + "A" * 2_000_000), Fail("longer than")),
    Case(
        "record-spans-many-lines", "resource", land("t.csv", good(3, Description="L\n" * 20)), Fail("max_record_lines")
    ),
    # ------------------------------------------------------------ payloads (text; the suite decides)
    Case(
        "xss-in-quantity",
        "payload",
        land("t.csv", _payload(200, [7], Quantity="<img src=x onerror=alert(document.domain)>")),
        Pass({"t.csv": 200}, held=1),
        spark=True,
    ),
    Case(
        "formula-injection",
        "payload",
        land("t.csv", _payload(5, [1], Description="=cmd|' /C calc'!A0")),
        Pass({"t.csv": 5}),
        spark=True,
    ),
    Case(
        "slack-markup",
        "payload",
        land("t.csv", _payload(5, [2], Description="<!channel> <https://evil.example|click>")),
        Pass({"t.csv": 5}),
    ),
    Case(
        "path-traversal-stock-code",
        "payload",
        land("t.csv", _payload(5, [3], StockCode="../../etc/passwd")),
        Pass({"t.csv": 5}),
    ),
    Case(
        "full-width-digits", "payload", land("t.csv", _payload(200, [5], Quantity="１２")), Pass({"t.csv": 200}, held=1)
    ),
    Case(
        "huge-quantity",
        "payload",
        land("t.csv", _payload(200, [9], Quantity="99999999999999999999")),
        Pass({"t.csv": 200}, held=1),
    ),
    Case(
        "day-quarantine-budget",
        "payload",
        land("t.csv", _three_rules(200)),
        Pass({"t.csv": 200}, suite_fails="quarantine_max_day_share"),
    ),
    Case(
        "rows-outside-the-day",
        "payload",
        land("t.csv", _payload(200, [4], InvoiceDate="2011-12-06 09:00:00")),
        Pass({"t.csv": 200}, suite_fails="invoice_date"),
    ),
]


def build_day(tmp_path: Path, case: Case):
    """The case's day folder under settings whose data dir is ``tmp_path``; (settings, folder)."""
    from jobs.adapters.landing import day_dir
    from tests.conftest import settings_for

    settings = settings_for(tmp_path, landing=case.limits)
    folder = day_dir(settings.path("landing_dir"), DAY)
    folder.mkdir(parents=True)
    case.build(folder)
    return settings, folder
