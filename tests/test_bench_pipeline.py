"""``make bench-pipeline`` at tiny scale: the script runs and prints every figure (no timing asserted)."""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from harness import bench_night, bench_pipeline
from harness.generate import generate_transactions
from jobs.definitions import NIGHT_STEPS


def test_copies_offset_customers_and_suffix_invoices(tmp_path: Path) -> None:
    source = tmp_path / "source.csv"
    generate_transactions(customers=30, days=5, seed=2, end_date=date(2011, 12, 9)).to_csv(source, index=False)
    rows = bench_pipeline.build_copies(source, 3, tmp_path / "x3.csv")
    original = duckdb.sql(f"SELECT * FROM read_csv('{source}', all_varchar = true)").df()
    copies = duckdb.sql(f"SELECT * FROM read_csv('{tmp_path / 'x3.csv'}', all_varchar = true)").df()
    assert rows == 3 * len(original) == len(copies)
    assert set(copies["InvoiceNo"]) == {f"{i}{c}" for i in original["InvoiceNo"] for c in "012"}
    known = original["CustomerID"].dropna().astype(int)
    assert set(copies["CustomerID"].dropna().astype(int)) == {k + c * 100_000 for k in known for c in range(3)}
    assert set(copies["InvoiceDate"]) == set(original["InvoiceDate"])


def test_bench_at_factor_one_prints_every_figure(spark, tmp_path: Path, capsys) -> None:
    source = tmp_path / "source.csv"
    generate_transactions(customers=40, days=8, seed=4, end_date=date(2011, 12, 9)).to_csv(source, index=False)
    assert bench_pipeline.main(["--source", str(source), "--factor", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    table, figures = lines[-2], lines[-1]
    (result,) = json.loads(figures)
    assert result["customers"] == result["duckdb_customers"] > 0, "Spark and DuckDB RFM disagree on the customers"
    for key in (
        "spark_rfm_s",
        "duckdb_rfm_s",
        "spark_over_duckdb",
        "incremental_silver_s",
        "full_silver_s",
        "full_over_incremental",
        "silver_night_bytes",
        "state_bytes",
    ):
        assert result[key] > 0, key
    assert str(result["spark_over_duckdb"]) in table


def test_a_measured_process_reports_its_peak_memory_and_a_failure_shows_its_log(tmp_path: Path) -> None:
    """A child holding 300 MB for a second: its tree's peak RSS is at least that. A failing child:
    the error carries the end of its log (the bench's folder is deleted when the run ends)."""
    hold = "import time; block = bytearray(300 * 2**20); time.sleep(1)"
    measured = bench_night.run_measured([sys.executable, "-c", hold], dict(os.environ), tmp_path / "log")
    assert measured.peak_rss_bytes >= 300 * 2**20 and measured.seconds >= 1
    fail = "import sys; print('the cause', file=sys.stderr); raise SystemExit(3)"
    with pytest.raises(RuntimeError, match=f"exited 3; the end of {tmp_path / 'log'}:\n(.|\n)*the cause"):
        bench_night.run_measured([sys.executable, "-c", fail], dict(os.environ), tmp_path / "log")


def test_a_night_is_landed_with_its_rows_only(settings, tmp_path: Path) -> None:
    export = tmp_path / "x1.csv"
    generate_transactions(customers=30, days=5, seed=2, end_date=date(2011, 12, 9)).to_csv(export, index=False)
    expected = duckdb.sql(f"SELECT count(*) FROM read_csv('{export}') WHERE CAST(InvoiceDate AS DATE) = '2011-12-08'")
    landed = bench_night.land_day_from(export, date(2011, 12, 8), settings)
    day_dir = settings.path("landing_dir") / "date=2011-12-08"
    assert landed == expected.fetchall()[0][0] > 0
    assert (day_dir / settings.landing.marker).exists()
    written = duckdb.sql(f"SELECT InvoiceDate FROM read_csv('{day_dir}/*.csv', all_varchar = true)").df()
    assert len(written) == landed and written["InvoiceDate"].str.startswith("2011-12-08").all()


def test_the_curve_puts_each_tasks_factors_side_by_side() -> None:
    def figures(factor: int, scale: float) -> dict:
        keys = ["backfill"] + [f"{kind}_{task}" for kind in bench_night.NIGHT_KINDS for task in [*NIGHT_STEPS, "night"]]
        result = {f"{key}_s": 10.0 * scale for key in keys}
        result.update({f"{key}_peak_rss_bytes": 2**30 for key in keys if not key.endswith("_night")})
        return {**result, "factor": factor, "backfill_rows_per_s": 1000, "duckdb_read_rows_per_s": 50000}

    lines = bench_night.format_curve([figures(1, 1.0), figures(10, 2.5)]).splitlines()
    score_ingest = next(line for line in lines if line.startswith("score ingest"))
    assert score_ingest.split() == ["score", "ingest", "10.0", "1024", "25.0", "1024", "2.5"]
    assert "x10 1,000 (DuckDB reads 50,000)" in lines[-1]


def test_the_storage_table_puts_bucket_and_disk_side_by_side_with_the_requests() -> None:
    from harness.bench_pipeline import format_storage, storage_tasks

    result: dict = {"factor": 1}
    for _, key in storage_tasks():
        result[f"{key}_s"], result[f"s3_{key}_s"] = 10.0, 25.0
        if not key.endswith("_night"):
            result[f"s3_{key}_requests"] = {"PUT": {"count": 30, "seconds": 0.5}, "HEAD": {"count": 70, "seconds": 0.3}}
    lines = format_storage([result]).splitlines()
    score_label = next(line for line in lines if line.split()[:2] == ["score", "label"])
    assert score_label.split() == ["score", "label", "10.0", "25.0", "2.5", "100", "0.8", "HEAD", "70,", "PUT", "30"]
    score_night = next(line for line in lines if line.split()[:2] == ["score", "night"])
    assert score_night.split()[2:7] == ["10.0", "25.0", "2.5", str(6 * 100), "4.8"]  # the night's tasks summed


@pytest.mark.s3
def test_the_servers_request_counts_are_read_by_type(s3) -> None:
    from harness import bucket

    client = s3.client()
    before = bucket.request_counts(s3.metrics_url)
    for index in range(3):
        client.put_object(Bucket="lake", Key=f"counted/{index}", Body=b"x")
    client.list_objects_v2(Bucket="lake", Prefix="counted/")
    spent = bucket.requests_between(before, bucket.request_counts(s3.metrics_url))
    assert spent["PUT"]["count"] == 3 and spent["LIST"]["count"] == 1
    assert all(entry["seconds"] >= 0 for entry in spent.values())
