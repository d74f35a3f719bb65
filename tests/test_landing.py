"""The landing zone's fingerprint and file checks (no Spark): what the gate pins and refuses."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pandas as pd
import pytest

from jobs.adapters.expectations import number_patterns
from jobs.adapters.landing import fingerprint
from jobs.errors import PermanentError, UnreadableFileError

CSV = "InvoiceNo,StockCode,Quantity\n536365,85123A,6\n536366,71053,2\n"


def test_fingerprint_fields_are_length_prefixed(tmp_path: Path) -> None:
    """The issue's pair: one file whose text holds the other file's name, against two files."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "one" / "a.csv").write_text("H\n1\nb.csvH\n2\n")
    (tmp_path / "two" / "a.csv").write_text("H\n1\n")
    (tmp_path / "two" / "b.csv").write_text("H\n2\n")
    one = fingerprint([tmp_path / "one" / "a.csv"])
    two = fingerprint([tmp_path / "two" / "a.csv", tmp_path / "two" / "b.csv"])
    assert one != two


def test_fingerprint_follows_names_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(CSV)
    first = fingerprint([path])
    assert fingerprint([path]) == first
    path.write_text(CSV.replace("6", "7"))
    assert fingerprint([path]) != first
    path.rename(tmp_path / "b.csv")
    (tmp_path / "b.csv").write_text(CSV)
    assert fingerprint([tmp_path / "b.csv"]) != first


def corrupt_gzip(data: bytes) -> bytes:
    broken = bytearray(data)
    broken[len(broken) // 2] ^= 0xFF
    return bytes(broken)


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("day.csv.gz", lambda: gzip.compress(CSV.encode() * 50)[:-25], "truncated"),
        ("day.csv.gz", lambda: corrupt_gzip(gzip.compress(CSV.encode() * 50)), "corrupt gzip data"),
        ("day.csv.gz", lambda: CSV.encode(), "corrupt gzip data"),
        ("day.csv", lambda: "Description\nCAFÉ\n".encode("latin-1"), "not UTF-8 text"),
        ("day.parquet", lambda: b"PAR1 half a parquet file", "no Parquet magic bytes"),
    ],
    ids=["truncated-gzip", "corrupt-gzip", "not-gzip", "latin-1-csv", "truncated-parquet"],
)
def test_an_unreadable_file_is_a_permanent_one_line_error(tmp_path: Path, name: str, content, why: str) -> None:
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(UnreadableFileError) as raised:
        fingerprint([path])
    message = str(raised.value)
    assert isinstance(raised.value, PermanentError)
    assert str(path) in message and why in message and "\n" not in message


def test_a_multi_member_gzip_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "day.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode()) + gzip.compress(b"536367,22423,1\n"))
    assert len(fingerprint([path])) == 64


def test_a_parquet_file_is_readable(tmp_path: Path) -> None:
    path = tmp_path / "day.parquet"
    pd.DataFrame({"Quantity": ["1"]}).to_parquet(path, index=False)
    assert len(fingerprint([path])) == 64


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        ("quantity_regex", ["6", "-12", " 24 ", "999999999"], ["６", "٣", "1.5", "", "1e3", "1234567890"]),
        (
            "price_regex",
            ["2.55", "-11062.06", "0", "999999999999999.999"],
            ["２.５５", "12345678901234567.5", "1000000000000000", "1.2345", ".5", "1e3"],
        ),
        ("customer_id_regex", ["17850", "13085.0"], ["１７８５０", "N/A", "17850x"]),
    ],
)
def test_number_patterns_mean_ascii_digits(settings, pattern: str, good: list[str], bad: list[str]) -> None:
    regex = re.compile(number_patterns(settings)[pattern])
    assert [v for v in good if not regex.search(v)] == []
    assert [v for v in bad if regex.search(v)] == []
