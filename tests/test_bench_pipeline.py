"""``make bench-pipeline`` at tiny scale: the script runs and prints every figure (no timing asserted)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb

from jobs.tools import bench_pipeline
from jobs.tools.generate import generate_transactions


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
    for key in ("spark_rfm_s", "duckdb_rfm_s", "spark_over_duckdb", "incremental_silver_s", "full_silver_s",
                "full_over_incremental", "silver_night_bytes", "state_bytes"):  # fmt: skip
        assert result[key] > 0, key
    assert str(result["spark_over_duckdb"]) in table
