"""``make bench``: the segment explorer's server times on the real data (×1) and at ×100.

Needs ``../shared/data/online_retail.csv.gz`` (UCI Online Retail): the ×1 lake is the real pipeline
run on it (backfill, then validate → ingest daily, cluster + label on a few snapshot dates), built
once under ``data/bench/x1`` and reused. The ×N lake copies each real snapshot N times with
jittered R/F/M (labels and scores kept, the summary recomputed) — no pipeline run ×N.

Each callback is timed through Flask's test client on ``/_dash-update-component`` (routing, the
callback, JSON encoding of the figure: the server's whole share), over a fixed set of filter
combinations; "cold" is a new reader (nothing cached), "warm" the same requests again. The page's
first render is timed in Chromium. Figures are printed as ms and as ratios ×N / ×1.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from app.data import CUSTOMER_COLUMNS, SegmentLake
from app.views import create_app
from jobs.config import REPO_ROOT, Settings, load_settings
from jobs.definitions import LABEL_SCHEMES

REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "online_retail.csv.gz"
LABELLED_DATES = [date(2011, 12, 2), date(2011, 12, 5), date(2011, 12, 7), date(2011, 12, 9)]
BACKFILL_UNTIL = date(2011, 11, 30)
COUNTRIES = [None, "United Kingdom", "Germany", "France"]


def settings_at(data_dir: Path) -> Settings:
    base = load_settings()
    return base.model_copy(update={"paths": base.paths.model_copy(update={"data_dir": str(data_dir)})})


def build_real_lake(data_dir: Path) -> None:
    """The real pipeline over the UCI file (``jobs.ops.replay``, in its own process: the app never
    imports Spark): history to BACKFILL_UNTIL, then day by day, labelled on LABELLED_DATES."""
    command = [
        sys.executable,
        "-m",
        "jobs.ops.replay",
        "--source",
        str(REAL_DATA),
        "--until",
        BACKFILL_UNTIL.isoformat(),
        "--to",
        LABELLED_DATES[-1].isoformat(),
        "--label-on",
        *(d.isoformat() for d in LABELLED_DATES),
    ]
    subprocess.run(command, check=True, env={**os.environ, "RFM__PATHS__DATA_DIR": str(data_dir)})


def scale_lake(source: Settings, target: Settings, factor: int, seed: int = 7) -> None:
    """Each source snapshot ``factor`` times: ids suffixed, R/F/M jittered, summary recomputed (summarise)."""
    rng = np.random.default_rng(seed)
    segments = DeltaTable(str(SegmentLake.from_settings(source).segments_path))
    target_lake = SegmentLake.from_settings(target)
    for part in segments.partitions():
        day = date.fromisoformat(part["snapshot_date"])
        real = segments.to_pyarrow_table(filters=[("snapshot_date", "=", day)])
        copies = pa.concat_tables([real] * factor)
        n, copy = copies.num_rows, np.repeat(np.arange(factor), real.num_rows)
        jitter = {
            "customer_id": pa.array(
                [f"{c}-{k:03d}" for c, k in zip(copies["customer_id"].to_pylist(), copy, strict=True)]
            ),
            "recency_days": pa.array(
                np.maximum(copies["recency_days"].to_numpy() + rng.integers(-3, 4, n), 0), pa.int32()
            ),
            "frequency": pa.array(
                np.maximum(np.rint(copies["frequency"].to_numpy() * rng.uniform(0.8, 1.25, n)), 1).astype("int64")
            ),
            "monetary": pa.array(
                np.round(copies["monetary"].to_numpy().astype(float) * rng.lognormal(0, 0.1, n), 3)
            ).cast(pa.decimal128(20, 3)),
        }
        for name, values in jitter.items():
            copies = copies.set_column(copies.schema.get_field_index(name), name, values)
        write_deltalake(
            target_lake.segments_path, copies.cast(real.schema), partition_by=["snapshot_date"], mode="append"
        )
        write_deltalake(target_lake.summary_path, summarise(copies), partition_by=["snapshot_date"], mode="append")


def summarise(segments: pa.Table) -> pa.Table:
    """gold/segment_summary of one snapshot's customers (checked against jobs.steps.label.segment_summary in the tests)."""
    parts = " UNION ALL ".join(
        f"""SELECT snapshot_date, '{scheme}' AS label_scheme, {column} AS segment, count(*) AS customers,
                   count(*) / sum(count(*)) OVER () AS customer_share, avg(recency_days) AS mean_recency_days,
                   avg(frequency) AS mean_frequency, avg(monetary::DOUBLE) AS mean_monetary,
                   sum(monetary)::DECIMAL(30, 3) AS monetary_total,
                   (sum(monetary) / sum(sum(monetary)) OVER ())::DOUBLE AS revenue_share
            FROM segments GROUP BY snapshot_date, {column}"""
        for scheme, column in LABEL_SCHEMES.items()
    )
    connection = duckdb.connect()
    connection.register("segments", segments)
    return connection.sql(parts).to_arrow_table()


class CallbackTimer:
    """POSTs Dash callback requests to the app through Flask's test client and times them."""

    def __init__(self, app: Any) -> None:
        self.client = app.server.test_client()
        self.callbacks = app.callback_map

    def call(self, output: str, values: dict[str, Any]) -> tuple[float, float]:
        """Server wall and CPU ms of callback ``output`` with ``values`` ({"id.prop": value}) as inputs and state."""
        spec = self.callbacks[output]

        def items(kind: str) -> list[dict]:
            return [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in spec[kind]]

        outputs = [dict(zip(("id", "property"), o.rsplit(".", 1), strict=True)) for o in output.strip(".").split("...")]
        body = {
            "output": output,
            "outputs": outputs if output.startswith("..") else outputs[0],
            "inputs": items("inputs"),
            "state": items("state"),
            "changedPropIds": [f"{i['id']}.{i['property']}" for i in spec["inputs"]],
        }
        response, elapsed = timed_ms(
            lambda: self.client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
        )
        if response.status_code not in (200, 204):
            raise RuntimeError(f"{output}: HTTP {response.status_code} {response.get_data(as_text=True)[:300]}")
        return elapsed


VIEW_CALLBACKS = {
    "overview": "..overview-cards.children...sizes-chart.figure..",
    "distributions": "distribution-chart.figure",
    "clusters": "cluster-chart.figure",
    "migration": "..migration-chart.figure...migration-table.children..",
    "customer page": "..customer-grid.getRowsResponse...customer-count.children..",
    "filter choices": "..segment.options...segment.value...country.options..",
}
DOWNLOAD = "download.data"


def filter_combinations(segment_lake: SegmentLake, count: int, seed: int = 11) -> list[dict[str, Any]]:
    """A fixed, shuffled set of filter values (every date, both schemes, segments, countries)."""
    dates = segment_lake.snapshot_dates()
    combos = []
    for day, scheme, country in itertools.product(dates, ("cluster", "rfm"), COUNTRIES):
        for segment in [None, *segment_lake.segments(scheme, day)[:2]]:
            earlier = [d for d in dates if d < day]
            combos.append(
                {
                    "snapshot-date.value": day.isoformat(),
                    "scheme.value": scheme,
                    "segment.value": segment,
                    "country.value": country,
                    "log-scale.value": ["log"],
                    "migration-from.value": earlier[-1].isoformat() if earlier else None,
                    "customer-grid.getRowsRequest": {
                        "startRow": 0,
                        "endRow": 100,
                        "filterModel": {},
                        "sortModel": [{"colId": "monetary", "sort": "desc"}],
                    },
                }
            )
    random.Random(seed).shuffle(combos)
    return combos[:count]


def time_callbacks(settings: Settings, combos: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """(wall, CPU) ms per view callback: cold (fresh reader, first request per combination) and warm (repeat)."""
    app = create_app(SegmentLake.from_settings(settings), settings.dashboard, warm_up=False)
    timer = CallbackTimer(app)
    times: dict[str, dict[str, list[tuple[float, float]]]] = {name: {"cold": [], "warm": []} for name in VIEW_CALLBACKS}
    for phase in ("cold", "warm"):
        for values in combos:
            for name, output in VIEW_CALLBACKS.items():
                times[name][phase].append(timer.call(output, values))
    deep_block = {"startRow": 5000, "endRow": 5100, "filterModel": {}, "sortModel": [{"colId": "recency_days"}]}
    deep = {**combos[0], "customer-grid.getRowsRequest": deep_block}
    times["customer page (rows 5000-5100)"] = {
        "warm": [timer.call(VIEW_CALLBACKS["customer page"], deep) for _ in range(10)]
    }
    everyone = {
        **combos[0],
        "segment.value": None,
        "country.value": None,
        "download-button.n_clicks": 1,
        "customer-grid.getRowsRequest": {"filterModel": {}, "sortModel": []},
    }
    times["CSV download (whole snapshot)"] = {"warm": [timer.call(DOWNLOAD, everyone) for _ in range(3)]}
    return times


def timed_ms(work: Callable[[], Any]) -> tuple[Any, tuple[float, float]]:
    """``work()``'s result and its (wall, CPU) ms; CPU is the whole process's, DuckDB's threads included."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, ((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000)


def time_reads(settings: Settings, repeats: int = 3) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """(wall, CPU) ms to read the view columns of the latest snapshot (partition-pruned, as the views do) and of all."""
    table = DeltaTable(str(settings.table_path("gold_customer_segments")))
    day = date.fromisoformat(max(p["snapshot_date"] for p in table.partitions()))
    reads = {
        "read 1 snapshot (partition-pruned)": lambda: table.to_pyarrow_table(
            filters=[("snapshot_date", "=", day)], columns=CUSTOMER_COLUMNS
        ),
        "read all snapshots (no pruning)": lambda: table.to_pyarrow_table(columns=CUSTOMER_COLUMNS),
    }
    return {name: {"read": [timed_ms(read)[1] for _ in range(repeats)]} for name, read in reads.items()}


def first_render_ms(settings: Settings, repeats: int = 3) -> float:
    """Median ms from navigation to the overview cards and the sizes chart drawn, in Chromium."""
    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    app = create_app(SegmentLake.from_settings(settings), settings.dashboard)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    durations = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        for _ in range(repeats):
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            page.wait_for_selector(".card")
            page.wait_for_function(
                "() => document.querySelector('#sizes-chart .js-plotly-plot')?._fullData?.length > 0"
            )
            durations.append((time.perf_counter() - start) * 1000)
            page.close()
        browser.close()
    server.shutdown()
    return statistics.median(durations)


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def report(results: dict[int, dict[str, Any]], factor: int) -> str:
    """Wall p50/p95 per callback at ×1 and ×factor with the p95 ratio, and the CPU p95 at ×factor."""
    base, scaled = results[1], results[factor]
    big = f"×{factor}"
    lines = [
        f"customers per snapshot: ×1 {base['customers']:,}, {big} {scaled['customers']:,}; "
        f"snapshots: {base['snapshots']}; requests per callback and phase: {base['requests']}",
        "",
        f"{'ms':<36}{'phase':<6}{'×1 p50':>9}{'×1 p95':>9}{big + ' p50':>10}{big + ' p95':>10}{'ratio p95':>10}"
        f"{big + ' CPU p95':>14}",
    ]
    for name, phases in base["callbacks"].items():
        for phase, small_times in phases.items():
            small, scaled_times = [w for w, _ in small_times], scaled["callbacks"][name][phase]
            wall, cpu = [w for w, _ in scaled_times], [c for _, c in scaled_times]
            lines.append(
                f"{name:<36}{phase:<6}{statistics.median(small):>9.1f}{p95(small):>9.1f}{statistics.median(wall):>10.1f}"
                f"{p95(wall):>10.1f}{p95(wall) / p95(small):>9.1f}×{p95(cpu):>14.1f}"
            )
    lines.append(
        f"{'page first render (Chromium, median)':<42}{base['render']:>18.0f}{scaled['render']:>20.0f}"
        f"{scaled['render'] / base['render']:>9.1f}×"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "data" / "bench", help="×1 and ×N lakes")
    parser.add_argument(
        "--real-lake-dir", type=Path, help="data dir of an existing real pipeline run (default: build one)"
    )
    parser.add_argument("--factor", type=int, default=100)
    parser.add_argument("--requests", type=int, default=24, help="filter combinations per callback and phase")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    real_dir = args.real_lake_dir or args.work_dir / "x1"
    real = settings_at(real_dir)
    if not SegmentLake.from_settings(real).has_data():
        if not REAL_DATA.is_file():
            print(
                f"make bench needs the real data at {REAL_DATA} (or --real-lake-dir with gold tables)", file=sys.stderr
            )
            return 2
        print(f"building the real lake under {real_dir} (the pipeline on the UCI file, once) …", flush=True)
        build_real_lake(real_dir)
    scaled = settings_at(args.work_dir / f"x{args.factor}")
    if not SegmentLake.from_settings(scaled).has_data():
        print(f"writing the ×{args.factor} lake under {args.work_dir / f'x{args.factor}'} …", flush=True)
        scale_lake(real, scaled, args.factor)
    results: dict[int, dict[str, Any]] = {}
    combos = filter_combinations(SegmentLake.from_settings(real), args.requests)
    for factor, settings in ((1, real), (args.factor, scaled)):
        segment_lake = SegmentLake.from_settings(settings)
        last = segment_lake.snapshot_dates()[-1]
        results[factor] = {
            "customers": segment_lake.snapshot(last).num_rows,
            "snapshots": len(segment_lake.snapshot_dates()),
            "requests": len(combos),
            "callbacks": {**time_callbacks(settings, combos), **time_reads(settings)},
            "render": first_render_ms(settings),
        }
        print(f"×{factor} measured", flush=True)
    print(report(results, args.factor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
