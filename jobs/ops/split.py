"""Split a whole export file into the landing zone: one folder per calendar day, each with its marker.

Rows keep their original order and column names; a row's day is the first ten characters of its
invoice date (``YYYY-MM-DD HH:MM:SS``). A day without rows still gets a header-only file and the
marker: a day without trading.

    python -m jobs.ops.split --source ../shared/data/online_retail.csv.gz --from 2011-08-10 --to 2011-08-14
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import pandas as pd

from jobs import storage
from jobs.adapters.landing import write_day
from jobs.config import Settings, load_settings
from jobs.definitions import days_between
from jobs.storage import Location


def read_export(path: Path) -> pd.DataFrame:
    """Every column of a .csv, .csv.gz or .parquet export as text: empty stays '', 'NA' stays 'NA'."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path).astype(str).fillna("")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def date_column(frame: pd.DataFrame, settings: Settings) -> str:
    """The frame's invoice-date column, among the names configured in ``columns.invoice_date``."""
    names = settings.columns["invoice_date"]
    found = next((name for name in names if name in frame.columns), None)
    if found is None:
        raise ValueError(f"none of the invoice date columns {names} in {list(frame.columns)}")
    return found


def land_days(
    frame: pd.DataFrame,
    landing_dir: Location,
    start: date,
    end: date,
    marker: str,
    fmt: str = "csv",
    date_column: str = "InvoiceDate",
) -> list[date]:
    """Write every calendar day from ``start`` to ``end`` (inclusive) with its rows and marker; return the days."""
    by_day = dict(tuple(frame.groupby(frame[date_column].astype(str).str[:10], sort=False)))
    days = days_between(start, end)
    for day in days:
        write_day(landing_dir, day, by_day.get(day.isoformat(), frame.iloc[0:0]), marker, fmt)
    return days


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the landing dir defaults to ``paths.landing_dir``."""
    parser = argparse.ArgumentParser(description="Split an export file into daily landing folders.")
    parser.add_argument("--source", type=Path, required=True, help=".csv, .csv.gz or .parquet export")
    day = {"type": date.fromisoformat, "metavar": "YYYY-MM-DD"}
    parser.add_argument("--from", dest="start", help="first day (default: the source's first)", **day)
    parser.add_argument("--to", dest="end", help="last day (default: the source's last)", **day)
    parser.add_argument("--landing-dir", help="a folder or s3://… (default: paths.landing_dir)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Split the source over [from, to] and print a one-line summary."""
    args = parse_args(argv)
    settings = load_settings()
    frame = read_export(args.source)
    column = date_column(frame, settings)
    keys = frame[column].str[:10]
    if frame.empty and (args.start is None or args.end is None):
        raise SystemExit(f"{args.source} has no rows: give --from and --to")
    start = args.start or date.fromisoformat(keys.min())
    end = args.end or date.fromisoformat(keys.max())
    landing_dir = (
        storage.location(args.landing_dir, settings.storage) if args.landing_dir else settings.path("landing_dir")
    )
    days = land_days(frame, landing_dir, start, end, settings.landing.marker, settings.landing.format, column)
    landed = keys.between(start.isoformat(), end.isoformat()).sum()
    print(f"{landed} rows, {len(days)} days ({start} .. {end}) from {args.source} -> {landing_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
