"""What a night's validation costs with a year of results on the bucket (issue 29), against local.

``python -m harness.bench_validation_bucket [--days 365] [--nights 3] [--local]``

On a fresh SeaweedFS (``make s3-server``) on 127.0.0.1, or with ``--local`` in a local
validation dir: ``--days`` days are validated in one runner and the site is built once (what a
backfill does), then ``--nights`` nights run as ``validate_day`` does after Spark (open the
runner, check the day, build its page and the index, close), each timed by phase. The suite
runs on pandas frames shaped as ``validation_frame`` makes them; no Spark.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from jobs.adapters.expectations import SuiteRunner, check_day
from jobs.config import Settings, load_settings


def day_frame(day: date, rows: int = 5, quantity_raw: str = "6") -> pd.DataFrame:
    """A passing day's validation frame (parsed values beside their text, the row key, the
    flags); the first row's quantity text is ``quantity_raw``."""
    times = [pd.Timestamp(day) + pd.Timedelta(hours=9, minutes=i) for i in range(rows)]
    frame = pd.DataFrame(
        {
            "invoice": [f"5400{i:02d}" for i in range(rows)],
            "stock_code": "85123A",
            "description": "T-LIGHT HOLDER",
            "quantity": 6,
            "quantity_raw": "6",
            "invoice_date": times,
            "invoice_date_raw": [str(t) for t in times],
            "price": 2.55,
            "price_raw": "2.55",
            "customer_id": "17850",
            "customer_id_raw": "17850",
            "country": "France",
            "is_adjustment": False,
            "amount_overflow": None,
            "source_file": "part-1.csv",
            "source_row": range(1, rows + 1),
        }
    )
    frame.loc[0, "quantity_raw"] = quantity_raw
    return frame


def bench(settings: Settings, days: int, nights: int, label: str) -> None:
    first = date(2010, 12, 1)
    history = [first + timedelta(days=i) for i in range(days)]
    started = time.monotonic()
    with SuiteRunner(settings) as runner:
        for day in history:
            check_day(runner, day_frame(day, rows=50), day, "bench")
        checked = time.monotonic()
        runner.build_data_docs()
    print(
        f"{label}: {days} days checked in {checked - started:.1f} s, "
        f"full build and publish {time.monotonic() - checked:.1f} s"
    )
    for n in range(nights):
        day = history[-1] + timedelta(days=n + 1)
        frame = day_frame(day, rows=50)
        t0 = time.monotonic()
        runner = SuiteRunner(settings)
        t1 = time.monotonic()
        check_day(runner, frame, day, "bench")
        t2 = time.monotonic()
        runner.build_data_docs([day])
        t3 = time.monotonic()
        runner.close()
        t4 = time.monotonic()
        print(
            f"{label} night {day}: open {t1 - t0:.2f} s, check {t2 - t1:.2f} s, build+publish {t3 - t2:.2f} s, "
            f"close {t4 - t3:.2f} s, total {t4 - t0:.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--nights", type=int, default=3)
    parser.add_argument("--local", action="store_true", help="a local validation dir instead of the bucket")
    args = parser.parse_args()
    base = load_settings()
    scratch = Path(tempfile.mkdtemp(prefix="rfm-bench-"))
    paths = base.paths.model_copy(update={"data_dir": str(scratch / "data")})
    try:
        if args.local:
            bench(base.model_copy(update={"paths": paths}), args.days, args.nights, "local")
            return
        from jobs.orchestration.object_store import s3_server

        with s3_server(scratch / "s3", buckets=("lake",)) as server:
            os.environ.update(server.env)
            paths = paths.model_copy(update={"validation_dir": f"s3://lake/{uuid.uuid4().hex}/validation"})
            storage = base.storage.model_copy(update={"endpoint_url": server.endpoint_url})
            bench(base.model_copy(update={"paths": paths, "storage": storage}), args.days, args.nights, "bucket")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
