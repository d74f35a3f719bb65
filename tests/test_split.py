"""Splitting a whole export into daily landing folders: every day gets a folder, rows round-trip losslessly."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from harness.generate import generate_transactions, with_naming
from jobs.adapters.landing import data_files, has_arrived
from jobs.config import load_settings
from jobs.ops.split import land_days, main, read_export

MARKER = "_SUCCESS"
II_COLUMNS = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
REAL_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "online_retail.csv.gz"


@pytest.fixture()
def source() -> pd.DataFrame:
    """Three days of rows (2011-01-04 without any), with empty cells, 'NA' text, quotes, commas and spaces."""
    return pd.DataFrame(
        {
            "InvoiceNo": ["536400", "536399", "C536401", "536500", "536501", "536502"],
            "StockCode": ["85123A", "NA", "22423", "POST", "M", "21730"],
            "Description": ['WHITE "HEART", HOLDER', "", "REGENCY CAKESTAND 3 TIER ", "POSTAGE", "NA", "null"],
            "Quantity": ["6", "1", "-2", "1", "1", "12"],
            "InvoiceDate": [
                "2011-01-03 10:05:00",
                "2011-01-03 09:00:00",
                "2011-01-03 11:30:00",
                "2011-01-05 08:00:00",
                "2011-01-05 08:00:00",
                "2011-01-05 17:45:00",
            ],
            "UnitPrice": ["2.55", "0.00", "12.75", "18.00", "1.00", "4.25"],
            "CustomerID": ["17850", "", "17850", "12662", "", "N/A"],
            "Country": ["United Kingdom", "United Kingdom", "United Kingdom", "Germany", "", "France"],
        }
    )


def landed_frame(landing_dir: Path, start: date, end: date, fmt: str | None = None) -> pd.DataFrame:
    """All landed rows from start to end, day by day, as one frame (format: the configured one)."""
    fmt = fmt or load_settings().landing.format
    days = [start + timedelta(days=offset) for offset in range((end - start).days + 1)]
    return pd.concat([read_export(f) for day in days for f in data_files(landing_dir, day, fmt)], ignore_index=True)


@pytest.mark.parametrize("name", ["export.csv", "export.csv.gz", "export.parquet"])
def test_read_export_is_lossless(tmp_path: Path, source: pd.DataFrame, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".parquet"):
        source.to_parquet(path, index=False)
    else:
        source.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_export(path), source)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_land_days_writes_every_day_and_round_trips(tmp_path: Path, source: pd.DataFrame, fmt: str) -> None:
    start, end = date(2011, 1, 2), date(2011, 1, 6)
    assert land_days(source, tmp_path, start, end, MARKER, fmt) == [start + timedelta(days=i) for i in range(5)]
    for offset in range(5):
        day = start + timedelta(days=offset)
        assert has_arrived(tmp_path, day, MARKER)
        assert len(data_files(tmp_path, day, fmt)) == 1
    (empty_file,) = data_files(tmp_path, date(2011, 1, 4), fmt)
    empty = read_export(empty_file)
    assert empty.empty and list(empty.columns) == list(source.columns)
    pd.testing.assert_frame_equal(landed_frame(tmp_path, start, end, fmt), source)


def test_land_days_skips_rows_outside_the_range(tmp_path: Path, source: pd.DataFrame) -> None:
    assert land_days(source, tmp_path, date(2011, 1, 5), date(2011, 1, 5), MARKER) == [date(2011, 1, 5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2011-01-05"]
    landed = landed_frame(tmp_path, date(2011, 1, 5), date(2011, 1, 5), "csv")
    pd.testing.assert_frame_equal(landed, source.iloc[3:].reset_index(drop=True))


def test_cli_defaults_to_the_source_dates(tmp_path: Path, source: pd.DataFrame, capsys) -> None:
    path = tmp_path / "export.csv.gz"
    source.to_csv(path, index=False)
    landing = tmp_path / "landing"
    assert main(["--source", str(path), "--landing-dir", str(landing)]) == 0
    assert capsys.readouterr().out.startswith("6 rows, 3 days (2011-01-03 .. 2011-01-05)")
    assert sorted(p.name for p in landing.iterdir()) == ["date=2011-01-03", "date=2011-01-04", "date=2011-01-05"]
    pd.testing.assert_frame_equal(landed_frame(landing, date(2011, 1, 3), date(2011, 1, 5)), source)


def test_cli_keeps_online_retail_ii_names(tmp_path: Path, capsys) -> None:
    end = date(2011, 12, 9)
    source = with_naming(generate_transactions(customers=80, days=10, seed=2, end_date=end), "ii")
    path = tmp_path / "retail_ii.parquet"
    source.to_parquet(path, index=False)
    landing = tmp_path / "landing"
    start = end - timedelta(days=11)  # two days before the first generated one: empty folders
    argv = ["--source", str(path), "--from", start.isoformat(), "--to", end.isoformat(), "--landing-dir", str(landing)]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith(f"{len(source)} rows, 12 days")
    marker = load_settings().landing.marker
    assert all(has_arrived(landing, start + timedelta(days=i), marker) for i in range(12))
    landed = landed_frame(landing, start, end)
    assert list(landed.columns) == II_COLUMNS
    pd.testing.assert_frame_equal(landed, source)


@pytest.mark.realdata
@pytest.mark.skipif(not REAL_FILE.is_file(), reason=f"{REAL_FILE} is missing")
def test_real_file_splits_into_days(tmp_path: Path, capsys) -> None:
    start, end = date(2011, 8, 10), date(2011, 8, 14)
    argv = ["--source", str(REAL_FILE), "--from", start.isoformat(), "--to", end.isoformat()]
    assert main([*argv, "--landing-dir", str(tmp_path)]) == 0
    raw = pd.read_csv(REAL_FILE, usecols=["InvoiceDate"], dtype=str)
    expected = pd.to_datetime(raw["InvoiceDate"]).dt.date.value_counts()
    settings = load_settings()
    for offset in range(5):
        day = start + timedelta(days=offset)
        assert has_arrived(tmp_path, day, settings.landing.marker)
        (file,) = data_files(tmp_path, day, settings.landing.format)
        assert len(read_export(file)) == expected.get(day, 0), day
    assert expected.get(date(2011, 8, 13), 0) == 0  # a Saturday: folder and marker, no rows
    assert expected[date(2011, 8, 12)] > 0
