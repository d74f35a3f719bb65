"""The nightly path at ×N, each task as its own process (as the scheduler runs it): wall and peak RSS.

Part of ``make bench-pipeline`` (``harness.bench_pipeline --nights``). For one ×N export:

- **backfill**: ``python -m jobs.ops.backfill`` of the history up to the day before the first
  night, its rows per second next to DuckDB reading the same file;
- **nights**: the two days after it are landed (a retrain night that trains the first champion,
  then a scoring night), then every DAG task runs as ``python -m jobs <task> --run-date D``.

Each process tree (Python and its Spark JVM) is sampled every 0.2 s; its peak RSS is the largest
sum seen. With ``connect`` the nights' tasks are Spark Connect clients of one server started after
the backfill (``jobs.adapters.spark --serve``, as ``make prod-local`` and compose run them); the
server's peak RSS (the kernel's high-water mark of its processes) is reported beside the tasks'.
With a second ``Setup`` (``bench-pipeline --storage s3``: the locations on a bucket) each task runs
in both setups in turn, its figures' keys prefixed ``s3_``, with the S3 requests it made.
Timings never go into tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import psutil

from harness.bucket import requests_between
from jobs.adapters.landing import write_day
from jobs.config import Settings
from jobs.core.rules import sql_string
from jobs.definitions import NIGHT_STEPS
from jobs.orchestration.services import spark_connect_server

SAMPLE_SECONDS = 0.2
LOG_TAIL_CHARS = 6000
NIGHT_KINDS = ("retrain", "score")


@dataclass(frozen=True)
class Measured:
    """One process tree's wall time and peak resident memory."""

    seconds: float
    peak_rss_bytes: int


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a process and all its descendants now (those that exit meanwhile count 0)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def run_measured(command: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run ``command`` to its end, sampling its tree's RSS; a non-zero exit raises with the log's
    tail (the log lives in the bench's temporary folder, deleted when the run ends)."""
    with log.open("ab") as out:
        started = time.perf_counter()
        process = psutil.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = 0
        while process.poll() is None:
            try:
                peak = max(peak, tree_rss(process))
            except psutil.NoSuchProcess:
                break
            time.sleep(SAMPLE_SECONDS)
        code = process.wait()
        seconds = time.perf_counter() - started
    if code != 0:
        tail = log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        raise RuntimeError(f"{' '.join(command)} exited {code}; the end of {log}:\n{tail}")
    return Measured(round(seconds, 1), peak)


def duckdb_read_seconds(path: Path) -> tuple[float, int]:
    """DuckDB reading every row of the CSV as text: (seconds, rows)."""
    with duckdb.connect() as con:
        started = time.perf_counter()
        (rows,) = con.execute(
            f"SELECT count(*) FROM read_csv({sql_string(str(path))}, header = true, all_varchar = true)"
        ).fetchone()
        return time.perf_counter() - started, rows


def land_day_from(path: Path, day: date, settings: Settings) -> int:
    """The day's rows of the export CSV written to the landing folder with its marker; returns its rows."""
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT * FROM read_csv({sql_string(str(path))}, header = true, all_varchar = true) WHERE InvoiceDate LIKE ?",
            [f"{day.isoformat()}%"],
        ).df()
    write_day(settings.path("landing_dir"), day, rows, settings.landing.marker, "csv")
    return len(rows)


def peak_rss_of_tree(process: psutil.Process) -> int:
    """The sum of the kernel's resident high-water marks (VmHWM) of a process and its descendants."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            status = Path(f"/proc/{member.pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return total


Requests = Callable[[], dict[str, dict[str, Any]]]  # the S3 server's request counts so far, by type


@dataclass(frozen=True)
class Setup:
    """One way of running the nights: its settings, its tasks' environment, the prefix of its
    figures' keys and, on a bucket, the S3 server's request counts (read around each task)."""

    settings: Settings
    env: dict[str, str]
    prefix: str = ""
    requests: Requests | None = None


def task_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A task's environment: this one, the settings' data dir, and ``extra``."""
    return {**os.environ, "RFM__PATHS__DATA_DIR": str(settings.path("data_dir")), **(extra or {})}


def bench_nights(
    settings: Settings,
    export: Path,
    first_night: date,
    work: Path,
    connect: bool = False,
    beside: Setup | None = None,
) -> dict[str, Any]:
    """Backfill up to the day before ``first_night``, then that night (retrain) and the next (score);
    ``connect``: the nights' tasks as clients of one Spark Connect server. ``beside``: a second setup
    (the bucket) measured in turn with the first, task by task (each task on disk, then on the
    bucket), so a change of load on the machine falls on both sides of a ratio alike."""
    log = work / f"{export.stem}-nights.log"
    setups = [Setup(settings, task_env(settings))] + ([beside] if beside else [])
    if connect and beside:
        raise ValueError("a second setup runs its tasks with a driver each: not with --connect")
    history_end = first_night - timedelta(days=1)
    duck_s, duck_rows = duckdb_read_seconds(export)
    figures: dict[str, Any] = {
        "duckdb_read_rows_per_s": round(duck_rows / max(duck_s, 1e-9)),
        "driver": "spark-connect" if connect else "per task",
    }
    backfill = [sys.executable, "-m", "jobs.ops.backfill", "--source", str(export), "--until", history_end.isoformat()]
    for setup in setups:
        measured = measure(setup, backfill, log, figures, "backfill")
        figures[f"{setup.prefix}backfill_rows_per_s"] = round(duck_rows / measured.seconds)
    if not connect:
        run_nights(setups, export, first_night, log, figures)
        return figures
    with spark_connect_server(work / "services", setups[0].env) as server:
        try:
            remote = Setup(settings, {**setups[0].env, "RFM__SPARK__REMOTE": server.url})
            run_nights([remote], export, first_night, log, figures)
        finally:
            figures["connect_server_peak_rss_bytes"] = peak_rss_of_tree(psutil.Process(server.process.process.pid))
    return figures


def measure(setup: Setup, command: list[str], log: Path, figures: dict[str, Any], key: str) -> Measured:
    """Run ``command`` in ``setup``; its seconds, peak RSS (and S3 requests) into ``figures`` under ``key``."""
    before = setup.requests() if setup.requests else {}
    measured = run_measured(command, setup.env, log)
    figures[f"{setup.prefix}{key}_s"] = measured.seconds
    figures[f"{setup.prefix}{key}_peak_rss_bytes"] = measured.peak_rss_bytes
    if setup.requests:
        figures[f"{setup.prefix}{key}_requests"] = requests_between(before, setup.requests())
    return measured


def run_nights(setups: list[Setup], export: Path, first_night: date, log: Path, figures: dict[str, Any]) -> None:
    """Land and run the retrain night and the scoring night task by task (each task in every setup
    in turn), recording into ``figures``."""
    for kind, night in zip(NIGHT_KINDS, (first_night, first_night + timedelta(days=1)), strict=True):
        figures[f"{kind}_night"] = night.isoformat()
        for setup in setups:
            figures[f"{setup.prefix}{kind}_rows"] = land_day_from(export, night, setup.settings)
        for task in NIGHT_STEPS:
            for setup in setups:
                command = [sys.executable, "-m", "jobs", task, "--run-date", night.isoformat()]
                measured = measure(setup, command, log, figures, f"{kind}_{task}")
                print(
                    f"{setup.prefix or 'disk_'}{kind} night {night}: {task} {measured.seconds} s, "
                    f"peak RSS {measured.peak_rss_bytes / 1e6:,.0f} MB",
                    flush=True,
                )
        for setup in setups:
            figures[f"{setup.prefix}{kind}_night_s"] = round(
                sum(figures[f"{setup.prefix}{kind}_{task}_s"] for task in NIGHT_STEPS), 1
            )


def format_curve(results: list[dict[str, Any]]) -> str:
    """Per task: seconds and peak RSS (MB) at each factor, and seconds as a ratio to the first factor."""
    factors = [r["factor"] for r in results]
    header = f"{'task':<18}" + "".join(f"{'x' + str(f) + ' s':>10}{'MB':>7}" for f in factors)
    header += "".join(f"{'x' + str(f) + '/x' + str(factors[0]):>10}" for f in factors[1:])
    lines = [header]
    rows = [("backfill", "backfill")] + [
        (f"{kind} {task}", f"{kind}_{task}") for kind in NIGHT_KINDS for task in [*NIGHT_STEPS, "night"]
    ]
    for name, key in rows:
        line = f"{name:<18}"
        for r in results:
            rss = r.get(f"{key}_peak_rss_bytes")
            line += f"{r[f'{key}_s']:>10}{(round(rss / 2**20) if rss else ''):>7}"
        base = results[0][f"{key}_s"]
        line += "".join(f"{round(r[f'{key}_s'] / max(base, 1e-9), 2):>10}" for r in results[1:])
        lines.append(line)
    lines.append(
        "backfill rows/s: "
        + ", ".join(
            f"x{r['factor']} {r['backfill_rows_per_s']:,} (DuckDB reads {r['duckdb_read_rows_per_s']:,})"
            for r in results
        )
    )
    servers = [r for r in results if r.get("connect_server_peak_rss_bytes")]
    if servers:
        lines.append(
            "Spark Connect server peak RSS: "
            + ", ".join(f"x{r['factor']} {round(r['connect_server_peak_rss_bytes'] / 2**20)} MB" for r in servers)
        )
    return "\n".join(lines)
