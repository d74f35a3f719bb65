"""``make bench-pipeline``: how the silver step scales, measured in one run, printed as ratios.

``python -m harness.bench_pipeline --source FILE [--factor N ...] [--max-rows R]``

For each factor N it builds a ×N copy of the source (customer ids + i·100,000, the copy index
appended to invoice numbers, so ``C``/``A`` prefixes stay; dates unchanged) with DuckDB, then
times, on that same input and in this process:

- the Spark RFM transform (``compute_rfm`` over the typed rows, materialised) vs DuckDB's RFM
  over the same CSV;
- the nightly silver step of the last day: incremental (``load_snapshot``: one MERGE into the
  state, snapshot derived) vs the full recompute it replaces (``compute_rfm`` over bronze,
  written to silver), with the history before that day already in bronze and in the state;
- with ``--nights``, the nightly path as the scheduler runs it (``harness.bench_night``): the
  backfill and the last two days' nights, each task its own process, wall and peak RSS per task;
- with ``--storage s3`` too, the same backfill and nights with every location that can live on a
  bucket on a real S3 server (SeaweedFS on 127.0.0.1, ``harness.bucket``), each task run on disk and
  then on the bucket in turn: seconds, the ratio bucket / disk, and the S3 requests each task made
  (by type, with the seconds the server spent answering them).

Wall times depend on the machine and its load: compare the ratios of one run, not seconds
across runs. Timings never go into tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from harness import bucket
from harness.bench_night import NIGHT_KINDS, Setup, bench_nights, format_curve, task_env
from harness.check_incremental import typed_source
from jobs.adapters import lake
from jobs.adapters.customer_state import load_snapshot, rebuild_state
from jobs.adapters.spark import get_spark
from jobs.config import Rfm, Settings, load_settings
from jobs.core.rfm import compute_rfm
from jobs.core.rules import cancellation_sql, non_product_sql, purchase_sql, sql_string
from jobs.definitions import NIGHT_STEPS

CUSTOMER_OFFSET = 100_000


def build_copies(source: Path, factor: int, target: Path, max_rows: int | None = None) -> int:
    """Write the ×``factor`` CSV of ``source`` (first ``max_rows`` rows when given); returns its rows."""
    limit = f"LIMIT {int(max_rows)}" if max_rows else ""
    query = f"""
        COPY (
            WITH raw AS (SELECT * FROM read_csv({sql_string(str(source))}, header = true, all_varchar = true) {limit}),
            copies AS (SELECT range AS i FROM range({int(factor)}))
            SELECT InvoiceNo || CASE WHEN {int(factor)} = 1 THEN '' ELSE CAST(i AS VARCHAR) END AS InvoiceNo,
                   StockCode, Description, Quantity, InvoiceDate, UnitPrice,
                   CASE WHEN nullif(trim(CustomerID), '') IS NULL THEN NULL
                        ELSE CAST(CAST(CAST(CustomerID AS DOUBLE) AS BIGINT) + i * {CUSTOMER_OFFSET} AS VARCHAR)
                   END AS CustomerID,
                   Country
            FROM raw CROSS JOIN copies
        ) TO {sql_string(str(target))} (HEADER, DELIMITER ',')
    """
    with duckdb.connect() as con:
        con.execute(query)
        count = f"SELECT count(*) FROM read_csv({sql_string(str(target))}, header = true, all_varchar = true)"
        return con.execute(count).fetchone()[0]


def duckdb_rfm_sql(rules: Rfm, snapshot: date, path: Path) -> str:
    """RFM per customer as of ``snapshot`` over a CSV export, with the shared rule predicates."""
    dedup = "SELECT DISTINCT * FROM typed" if rules.drop_exact_duplicates else "SELECT * FROM typed"
    return f"""
        WITH raw AS (SELECT * FROM read_csv({sql_string(str(path))}, header = true, all_varchar = true)),
        typed AS (
            SELECT InvoiceNo AS invoice, StockCode AS stock_code, Description AS description,
                   CAST(Quantity AS INTEGER) AS quantity, CAST(UnitPrice AS DECIMAL(18, 3)) AS price,
                   coalesce(try_cast(InvoiceDate AS TIMESTAMP), try_strptime(InvoiceDate, '%m/%d/%Y %H:%M'))
                       AS invoice_date, nullif(trim(CustomerID), '') AS customer_id,
                   Country AS country
            FROM raw
        ),
        lines AS (
            SELECT *, quantity * price AS amount, CAST(invoice_date AS DATE) AS day FROM ({dedup})
            WHERE customer_id IS NOT NULL AND NOT coalesce({non_product_sql(rules)}, FALSE)
              AND CAST(invoice_date AS DATE) <= DATE '{snapshot.isoformat()}'
        )
        SELECT customer_id,
               date_diff('day', max(day) FILTER (WHERE {purchase_sql(rules)}), DATE '{snapshot.isoformat()}') AS recency,
               count(DISTINCT invoice) FILTER (WHERE {purchase_sql(rules)}) AS frequency,
               greatest(coalesce(sum(amount) FILTER (WHERE {purchase_sql(rules)}), 0)
                        + coalesce(sum(amount) FILTER (WHERE {cancellation_sql(rules)}), 0), 0) AS monetary
        FROM lines GROUP BY customer_id
        HAVING count(*) FILTER (WHERE {purchase_sql(rules)}) > 0
    """  # noqa: E501


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def bench_factor(
    spark: SparkSession, settings: Settings, source: Path, factor: int, work: Path, max_rows: int | None
) -> dict[str, Any]:
    """Every figure of one factor, measured on the same ×N input."""
    copy = work / f"x{factor}.csv"
    rows = build_copies(source, factor, copy, max_rows)
    typed = typed_source(spark, settings, copy).cache()
    last = typed.agg(F.max("transaction_date")).first()[0]
    typed.count()
    spark_s, customers = timed(lambda: compute_rfm(typed, last, settings.rfm).count())
    sql = duckdb_rfm_sql(settings.rfm, last, copy)
    with duckdb.connect() as con:
        duck_s, duck_rows = timed(lambda: len(con.execute(sql).fetchall()))

    bronze = settings.table_path("bronze_transactions")
    before = f"transaction_date < {lake.date_literal(last)}"
    lake.replace_slice(typed.filter(before), bronze, before, "transaction_date")
    rebuild_state(spark, settings, lake.read(spark, bronze))
    day = f"transaction_date = {lake.date_literal(last)}"
    lake.replace_slice(typed.filter(day), bronze, day, "transaction_date")
    incremental_s, _ = timed(lambda: load_snapshot(spark, settings, last))
    silver = settings.table_path("silver_customer_rfm")
    night_bytes = committed_bytes(silver)
    slice_of = f"snapshot_date = {lake.date_literal(last)}"
    full_s, _ = timed(
        lambda: lake.replace_slice(
            compute_rfm(lake.read(spark, bronze), last, settings.rfm), silver, slice_of, "snapshot_date"
        )
    )
    typed.unpersist()
    return {
        "factor": factor,
        "rows": rows,
        "customers": customers,
        "duckdb_customers": duck_rows,
        "night": last.isoformat(),
        "spark_rfm_s": round(spark_s, 2),
        "duckdb_rfm_s": round(duck_s, 2),
        "spark_over_duckdb": round(spark_s / max(duck_s, 1e-9), 2),
        "incremental_silver_s": round(incremental_s, 2),
        "full_silver_s": round(full_s, 2),
        "full_over_incremental": round(full_s / max(incremental_s, 1e-9), 2),
        "silver_night_bytes": night_bytes,
        "state_bytes": live_bytes(settings.table_path("silver_customer_state")),
    }


def committed_bytes(table: Path) -> int:
    """Bytes of the data files the table's latest commit wrote (one night's snapshot for silver)."""
    from deltalake import DeltaTable

    metrics = DeltaTable(str(table)).history(1)[0].get("operationMetrics", {})
    return int(metrics.get("numOutputBytes", 0))


def live_bytes(table: Path) -> int:
    """Bytes of the table's current data files."""
    from deltalake import DeltaTable

    return sum(DeltaTable(str(table)).get_add_actions(flatten=True).column("size_bytes").to_pylist())


def with_data_dir(settings: Settings, data_dir: Path) -> Settings:
    return settings.model_copy(update={"paths": settings.paths.model_copy(update={"data_dir": str(data_dir)})})


def run(
    source: Path,
    factors: list[int],
    max_rows: int | None = None,
    settings: Settings | None = None,
    spark: SparkSession | None = None,
    nights: bool = False,
    connect: bool = False,
    storage: str = "local",
) -> list[dict[str, Any]]:
    """Each factor in fresh lakes under a temporary data dir; one record per factor. ``storage="s3"``:
    the nights also on a bucket (their figures prefixed ``s3_``)."""
    base = settings or load_settings()
    spark = spark or get_spark(base)
    results = []
    with tempfile.TemporaryDirectory(prefix="rfm-bench-") as work:
        for factor in factors:
            result = bench_factor(
                spark, with_data_dir(base, Path(work) / f"lake-x{factor}"), source, factor, Path(work), max_rows
            )
            print(json.dumps(result), flush=True)  # the in-process figures, before the long part
            if nights:
                night_settings = with_data_dir(base, Path(work) / f"nights-x{factor}")
                first_night = date.fromisoformat(result["night"]) - timedelta(days=1)
                export = Path(work) / f"x{factor}.csv"
                with bucket_setup(base, Path(work), factor, storage) as beside:
                    result.update(bench_nights(night_settings, export, first_night, Path(work), connect, beside))
                print(json.dumps(result), flush=True)  # with the nights: a long run's figures so far
            results.append(result)
    return results


@contextmanager
def bucket_setup(base: Settings, work: Path, factor: int, storage: str) -> Iterator[Setup | None]:
    """With ``storage="s3"``: the nights' second setup, the locations on a fresh S3 server (the
    landing folder, validation results and the MLflow store's database stay local), figures
    prefixed ``s3_``; else None."""
    if storage != "s3":
        yield None
        return
    from jobs.orchestration.object_store import s3_server

    with s3_server(work / f"s3-x{factor}") as server:
        root = f"s3://lake/bench-x{factor}"
        settings = bucket.on_bucket(with_data_dir(base, work / f"nights-s3-x{factor}"), server.endpoint_url, root)
        env = task_env(settings, {**server.env, **bucket.bucket_env(root)})
        yield Setup(settings, env, "s3_", lambda: bucket.request_counts(server.metrics_url))


def storage_tasks() -> list[tuple[str, str]]:
    """(row name, figure key) of every task the bucket-vs-disk table compares."""
    return [("backfill", "backfill")] + [
        (f"{kind} {task}", f"{kind}_{task}") for kind in NIGHT_KINDS for task in [*NIGHT_STEPS, "night"]
    ]


def format_storage(results: list[dict[str, Any]]) -> str:
    """Per factor and task: seconds on local disk, on the bucket, their ratio, and the task's S3
    requests (count, and the seconds the server spent answering them)."""
    lines = []
    for r in results:
        if "s3_backfill_s" not in r:
            continue
        lines.append(
            f"x{r['factor']}: {'task':<18}{'disk s':>9}{'bucket s':>10}{'bucket/disk':>12}{'requests':>10}{'server s':>10}"
            "  requests by type"
        )
        for name, key in storage_tasks():
            disk, remote = r[f"{key}_s"], r[f"s3_{key}_s"]
            spent = r.get(f"s3_{key}_requests", {})
            if key.endswith("_night"):
                kind = key.removesuffix("_night")
                spent = {}
                for task in NIGHT_STEPS:
                    for request, entry in r.get(f"s3_{kind}_{task}_requests", {}).items():
                        total = spent.setdefault(request, {"count": 0, "seconds": 0.0})
                        total["count"] += entry["count"]
                        total["seconds"] += entry["seconds"]
            count = sum(e["count"] for e in spent.values())
            seconds = sum(e["seconds"] for e in spent.values())
            by_type = ", ".join(f"{t} {e['count']}" for t, e in sorted(spent.items(), key=lambda i: -i[1]["count"]))
            lines.append(
                f"{'':5}{name:<18}{disk:>9}{remote:>10}{round(remote / max(disk, 1e-9), 2):>12}{count:>10}"
                f"{round(seconds, 1):>10}  {by_type}"
            )
    return "\n".join(lines)


def format_table(results: list[dict[str, Any]]) -> str:
    """The figures side by side, one line per factor."""
    header = (
        f"{'factor':>6} {'rows':>10} {'customers':>9} {'spark RFM s':>11} {'duckdb s':>8} {'spark/duckdb':>12} "
        f"{'incr silver s':>13} {'full silver s':>13} {'full/incr':>9} {'silver B/night':>14} {'state B':>11}"
    )
    lines = [header]
    for r in results:
        lines.append(
            f"{r['factor']:>6} {r['rows']:>10} {r['customers']:>9} {r['spark_rfm_s']:>11} {r['duckdb_rfm_s']:>8} "
            f"{r['spark_over_duckdb']:>12} {r['incremental_silver_s']:>13} {r['full_silver_s']:>13} "
            f"{r['full_over_incremental']:>9} {r['silver_night_bytes']:>14} {r['state_bytes']:>11}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="export CSV (.csv or .csv.gz)")
    parser.add_argument("--factor", type=int, nargs="+", default=[1], help="copies of the source, e.g. 1 10")
    parser.add_argument("--max-rows", type=int, help="only the first R rows of the source (a quick check)")
    parser.add_argument("--nights", action="store_true", help="also the backfill and two nights, task by task")
    parser.add_argument("--connect", action="store_true", help="--nights: the tasks as Spark Connect clients")
    parser.add_argument(
        "--storage",
        choices=["local", "s3"],
        default="local",
        help="s3: --nights also with the locations on a real S3 server (make s3-server), beside the local run",
    )
    args = parser.parse_args(argv)
    if args.storage == "s3" and (not args.nights or args.connect):
        parser.error("--storage s3 compares the nights with a driver per task: add --nights, not --connect")
    results = run(
        args.source, args.factor, args.max_rows, nights=args.nights, connect=args.connect, storage=args.storage
    )
    print(format_table(results))
    if args.nights:
        print(format_curve(results))
    if args.storage == "s3":
        print(format_storage(results))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
