"""Fault injection: kill a night with SIGKILL at chosen points, run it again, check it converged.

``python -m harness.fault_injection [--points ...] [--output FILE]`` (``make fault-injection``).

1. **Scenario** (``prepare``): a short generated history (``harness.generate``), loaded by the
   backfill up to the night before the warm-up nights; the warm-up nights run clean (the first
   trains the champion); then the **night under test**, a retrain night
   (``model.retrain_every_days = 1``, k fixed so the sweep is one fit), runs clean once as the
   reference, step by step with ``RFM_FAULT_TRACE`` set: the fault points each step reaches are
   the matrix. The lake + MLflow store is saved before every step. All of this runs in one
   process (one Spark start-up).
2. **Trial** (``run_trial``), per (step, point): restore the state saved before the step (the
   night ran clean up to it), run the step in its own process (``python -m jobs <step> --run-date
   D``, as a task runs it) with ``RFM_FAULT_POINT`` set (it must die with SIGKILL, return code
   -9), then run the night again **from the failed step** to the end, as Airflow's retry of the
   failed task and then its downstream tasks would, without a fault (in one process: the lake,
   not the process, carries what the crash left).
3. **Checks** (``check``): every Delta table reads with delta-rs; the gold business columns equal
   the reference run's; one live MLflow night run per night; the champion alias on the version
   ``silver/customer_clusters`` records for the night; one ``rfm-clv`` version trained on the
   night, holding its alias; the night published; no lease left.

The state always lives at the same path (``<root>/work``), so the absolute paths MLflow stores
(artifact locations) stay valid when a saved state is restored.

**Storage outage** (``--storage-outage``, ``run_outage_trial``): the same scenario with every
location that can live on a bucket on a real S3 server (SeaweedFS on 127.0.0.1, started here; its
state is the local folder plus the ``s3://lake/faults/work`` prefix, saved and restored by copies on
the bucket). Per step, the state before it is restored and the step runs in its own process with
its first fault point armed to *pause* (``RFM_FAULT_PAUSE``): when the step reaches it, the
harness stops the server and lets the step go on. The step must fail within
``OUTAGE_FAIL_WITHIN_SECONDS``, retryable (exit 75, not 2), with one line naming the endpoint and
the location it could not reach. Then the server starts again on the same data, the night runs
again from the step, and ``check`` must pass as after a kill.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from harness.bucket import bucket_env
from jobs import storage
from jobs.cli import EXIT_PERMANENT_FAILURE, EXIT_STORAGE_UNAVAILABLE, night_steps
from jobs.config import Settings
from jobs.definitions import (
    CLV_COLUMNS,
    FAULT_PAUSE_ENV,
    FAULT_POINT_ENV,
    FAULT_TRACE_ENV,
    GOLD_BUSINESS_COLUMNS,
    NIGHT_STEPS,
    TRAINED_ON_TAG,
)

BUSINESS_COLUMNS = [
    *GOLD_BUSINESS_COLUMNS,
    *CLV_COLUMNS.values(),
]
KILLED = -9  # subprocess return code of a process ended by SIGKILL
STEP_TIMEOUT_SECONDS = 1200
BUCKET_ROOT = "s3://lake/faults"  # --storage-outage: the state under <root>/work (harness.bucket), saves beside it
OUTAGE_FAIL_WITHIN_SECONDS = 120  # a step meeting a stopped server must have failed by then


@dataclass(frozen=True)
class Scenario:
    """A prepared history: where its state lives and the night under test."""

    root: Path
    night: date
    warmup_nights: int
    steps: list[str]
    points: dict[str, list[str]]  # step -> the fault points it reached in the reference night
    bucket: str | None = None  # BUCKET_ROOT when the locations are on a bucket (``outage_env`` in os.environ)

    @property
    def work(self) -> Path:
        return self.root / "work"

    def saved(self, step: str) -> Path:
        """The state saved before ``step`` of the night under test."""
        return self.root / "saved" / step

    def nights(self) -> list[date]:
        return [self.night - timedelta(days=n) for n in range(self.warmup_nights, -1, -1)]

    def settings(self) -> Settings:
        """The steps' configuration (read afresh from the environment: the bucket's locations when set)."""
        base = Settings()
        return base.model_copy(update={"paths": base.paths.model_copy(update={"data_dir": str(self.work)})})

    def bucket_state(self, name: str) -> storage.Location:
        """A state's part on the bucket: ``work`` (what the steps use) or ``saved/<step>``."""
        return storage.location(f"{self.bucket}/{name}", self.settings().storage)


def outage_env(root: str = BUCKET_ROOT) -> dict[str, str]:
    """The environment putting every bucket-capable location and the MLflow artifacts under
    ``<root>/work`` (``harness.bucket``; with the server's ``S3Server.env``, the steps' configuration)."""
    return bucket_env(f"{root}/work")


@dataclass
class Trial:
    """One kill and its recovery."""

    step: str
    point: str
    killed: bool
    retry_codes: dict[str, int]
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        if not self.killed:
            return "point not reached"
        failed = {step: code for step, code in self.retry_codes.items() if code != 0}
        if failed:
            return f"retry failed: {failed}"
        return "converged" if not self.problems else "; ".join(self.problems)


def step_env(work: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a step process: the scenario's data dir, k fixed, a retrain every night."""
    env = {key: value for key, value in os.environ.items() if key not in (FAULT_POINT_ENV, FAULT_TRACE_ENV)}
    env.update({"RFM__PATHS__DATA_DIR": str(work), "RFM__CLUSTERING__K": "4", "RFM__MODEL__RETRAIN_EVERY_DAYS": "1"})
    return {**env, **(extra or {})}


def run_module(work: Path, args: list[str], extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        env=step_env(work, extra),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_SECONDS,
    )


def run_step(work: Path, step: str, night: date, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m jobs <step> --run-date <night>`` in its own process."""
    return run_module(work, ["jobs", step, "--run-date", night.isoformat()], extra)


def require_ok(done: subprocess.CompletedProcess, what: str) -> None:
    if done.returncode != 0:
        raise RuntimeError(f"{what} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def save_state(scenario: Scenario, step: str) -> None:
    """Save the state (local folder, and its part on the bucket) as it is before ``step``."""
    copy_tree(scenario.work, scenario.saved(step))
    if scenario.bucket:
        copy_tree(scenario.bucket_state("work"), scenario.bucket_state(f"saved/{step}"))


def restore_state(scenario: Scenario, step: str) -> None:
    """Put back the state saved before ``step`` (what a failed trial left is dropped)."""
    copy_tree(scenario.saved(step), scenario.work)
    if scenario.bucket:
        copy_tree(scenario.bucket_state(f"saved/{step}"), scenario.bucket_state("work"))


def remove_tree(location: storage.Location) -> None:
    """Delete every object under a prefix on the bucket (folder markers included)."""
    fs, root = location.fs, location.path.rstrip("/")
    keys = fs.find(root, withdirs=True)
    if keys:
        fs.rm(keys, recursive=True)


def copy_tree(source: storage.Location, target: storage.Location) -> None:
    """Replace ``target`` by a copy of ``source``: local folders, or prefixes on one bucket (copied
    object by object on the server, many at a time)."""
    if not storage.is_remote(source):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, symlinks=True)
        return
    remove_tree(target)
    fs, old, new = source.fs, source.path.rstrip("/"), target.path.rstrip("/")
    # objects only: the folder markers s3a leaves (``_delta_log/_staged_commits/``) are listed too
    keys = [key for key in fs.find(old) if not key.endswith("/")]
    if keys:
        fs.copy(keys, [new + key[len(old) :] for key in keys])


def prepare(
    root: Path,
    night: date = date(2011, 12, 9),
    customers: int = 200,
    days: int = 40,
    warmup_nights: int = 1,
    steps: list[str] | None = None,
    seed: int = 7,
    bucket: str | None = None,
    save_before: list[str] | None = None,
) -> Scenario:
    """Generate and load the history, run the warm-up nights, then the reference night (traced),
    in one process (``reference_night``): one Spark start-up for the whole scenario. ``bucket``:
    the locations are on a bucket (``bucket_env`` and the server's env in ``os.environ``);
    ``save_before``: the steps a trial will start from (default: all; a save on a bucket is a copy)."""
    steps = steps or NIGHT_STEPS
    scenario = Scenario(root, night, warmup_nights, steps, {}, bucket)
    work = scenario.work
    shutil.rmtree(root / "saved", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    if bucket:
        remove_tree(scenario.bucket_state("work"))
        remove_tree(scenario.bucket_state("saved"))
    landing = work / "landing"
    generate = [
        "harness.generate",
        "--customers",
        str(customers),
        "--days",
        str(days),
        "--seed",
        str(seed),
        "--end-date",
        night.isoformat(),
        "--landing-dir",
        str(landing),
    ]
    require_ok(run_module(work, generate), "generate")
    reference = [
        "harness.fault_injection",
        "--root",
        str(root),
        "--night",
        night.isoformat(),
        "--warmup-nights",
        str(warmup_nights),
        "--reference-steps",
        *steps,
        "--save-before",
        *(save_before if save_before is not None else steps),
        *(["--bucket", bucket] if bucket else []),
    ]
    require_ok(run_module(work, reference), "reference night")
    points = {step: trace_points(root / f"trace-{step}.txt") for step in steps}
    scenario = Scenario(root, night, warmup_nights, steps, points, bucket)
    gold(scenario.settings()).to_parquet(root / "reference_gold.parquet")
    problems = check(scenario)
    if problems:
        raise RuntimeError(f"the clean reference night fails its own checks: {problems}")
    return scenario


def trace_points(trace: Path) -> list[str]:
    """The fault points a traced step reached, in first-reached order, once each."""
    return list(dict.fromkeys(trace.read_text().split())) if trace.exists() else []


def reference_night(scenario: Scenario, save_before: list[str]) -> None:
    """In this process: the backfill up to the first night, the warm-up nights, then the night under
    test step by step, the state saved before each step of ``save_before`` and the points each step
    reaches traced (``after:<step>`` fired inside the step's lease, by ``run_one``, as its task fires it)."""
    from jobs.adapters.spark import get_spark
    from jobs.ops.backfill import backfill
    from jobs.ops.rerun import run_one

    settings = scenario.settings()
    spark = get_spark(settings)
    backfill(settings.path("landing_dir"), scenario.nights()[0] - timedelta(days=1), settings=settings, spark=spark)
    for warmup in scenario.nights()[:-1]:
        for name in scenario.steps:
            run_one(night_steps()[name], warmup, settings, spark)
    for name in scenario.steps:
        if name in save_before:
            save_state(scenario, name)
        trace = scenario.root / f"trace-{name}.txt"
        trace.unlink(missing_ok=True)
        os.environ[FAULT_TRACE_ENV] = str(trace)
        run_one(night_steps()[name], scenario.night, settings, spark)
        del os.environ[FAULT_TRACE_ENV]


def gold(settings: Settings) -> pd.DataFrame:
    """The gold business columns of every snapshot, read with delta-rs."""
    table = storage.delta_table(settings.table_path("gold_customer_segments")).to_pandas()
    columns = [c for c in BUSINESS_COLUMNS if c in table.columns]
    return table[columns].sort_values(["snapshot_date", "customer_id"]).reset_index(drop=True)


def delta_tables(lake_dir: storage.Location) -> list[str]:
    """The Delta tables under ``lake_dir`` (local or on a bucket), as paths relative to it."""
    fs, root = storage.filesystem(lake_dir)
    root = root.rstrip("/")
    if not fs.exists(root):
        return []
    tables = {path.split("/_delta_log/")[0] for path in fs.find(root) if "/_delta_log/" in path}
    return sorted(table[len(root) + 1 :] for table in tables)


def check(scenario: Scenario) -> list[str]:
    """What is wrong with the state after a night (empty: it converged)."""
    from jobs.adapters import tracking
    from jobs.adapters.lease import held_leases
    from jobs.adapters.publish import published_versions

    settings = scenario.settings()
    problems = []
    lake_dir = settings.path("lake_dir")
    for table in delta_tables(lake_dir):
        try:
            storage.delta_table(lake_dir / table).to_pyarrow_table()
        except Exception as error:  # noqa: BLE001 - any reader error is the finding
            problems.append(f"delta-rs cannot read {table}: {error}")
    reference = pd.read_parquet(scenario.root / "reference_gold.parquet")
    try:
        pd.testing.assert_frame_equal(reference, gold(settings), check_exact=False, rtol=1e-9)
    except AssertionError as error:
        problems.append(f"gold differs from the clean run: {str(error).splitlines()[0:3]}")
    dag_id = settings.dag.dag_id
    for night in scenario.nights():
        live = tracking.runs_for_date(settings, dag_id, night)
        if len(live) != 1:
            problems.append(f"{len(live)} live MLflow runs for {night}")
    client = tracking.client(settings)
    champion = str(client.get_model_version_by_alias(settings.model.registered_name, settings.model.alias).version)
    clusters = storage.delta_table(settings.table_path("silver_customer_clusters")).to_pandas()
    recorded = set(clusters.loc[clusters["snapshot_date"] == scenario.night, "model_version"])
    if recorded != {champion}:
        problems.append(f"alias on version {champion}, silver/customer_clusters records {sorted(recorded)}")
    if "clv" in scenario.steps:
        trained = client.search_model_versions(
            f"name = '{settings.clv.registered_name}' and tag.`{TRAINED_ON_TAG}` = '{scenario.night.isoformat()}'"
        )
        clv_alias = str(client.get_model_version_by_alias(settings.clv.registered_name, settings.clv.alias).version)
        if [str(v.version) for v in trained] != [clv_alias]:
            problems.append(f"rfm-clv versions of the night {[v.version for v in trained]}, alias on {clv_alias}")
    published = published_versions(settings.table_path("gold_published")) or {}
    if scenario.night not in published:
        problems.append(f"{scenario.night} is not published")
    leases = held_leases(lake_dir)
    if leases:
        problems.append(f"leases held: {[p.name for p in leases]}")
    return problems


def inject(scenario: Scenario, step: str, point: str) -> bool:
    """Restore the state saved before ``step`` and run it with ``point`` armed; whether it was killed."""
    restore_state(scenario, step)
    return run_step(scenario.work, step, scenario.night, {FAULT_POINT_ENV: point}).returncode == KILLED


def recover(scenario: Scenario, step: str) -> dict[str, int]:
    """Run the night again from ``step`` to its end, no fault (a retry of the failed task, then its
    downstream tasks), in one process: one Spark start-up instead of one per step. Each step holds
    its lease as its task would. The exit code of each step run (stops at the first failure)."""
    steps = scenario.steps[scenario.steps.index(step) :]
    done = run_module(
        scenario.work, ["harness.fault_injection", "--night", scenario.night.isoformat(), "--retry-steps", *steps]
    )
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {step: done.returncode}


def retry_night(night: date, steps: list[str]) -> dict[str, int]:
    """In this process: ``steps`` in order for ``night``; the exit code of each (stops at the first failure)."""
    import traceback

    from jobs.adapters.spark import get_spark
    from jobs.cli import EXIT_PERMANENT_FAILURE
    from jobs.errors import PermanentError
    from jobs.ops.rerun import run_one

    settings = Settings()
    spark = get_spark(settings)
    codes: dict[str, int] = {}
    for name in steps:
        try:
            run_one(night_steps()[name], night, settings, spark)
            codes[name] = 0
        except PermanentError:
            traceback.print_exc()
            codes[name] = EXIT_PERMANENT_FAILURE
        except Exception:  # noqa: BLE001 - any failure ends the retry; its trace goes to stderr
            traceback.print_exc()
            codes[name] = 1
        if codes[name] != 0:
            break
    return codes


def run_trial(scenario: Scenario, step: str, point: str) -> Trial:
    """Kill ``step`` of the night at ``point``, run the night again from ``step``, check."""
    started = time.perf_counter()
    killed = inject(scenario, step, point)
    trial = Trial(step, point, killed, recover(scenario, step) if killed else {})
    if killed and all(code == 0 for code in trial.retry_codes.values()):
        trial.problems = check(scenario)
    trial.seconds = time.perf_counter() - started
    return trial


@dataclass
class OutageTrial:
    """One storage outage in the middle of a step, and its recovery."""

    step: str
    point: str
    paused: bool  # the step reached the point and the server was stopped there
    exit_code: int | None = None  # None: still running OUTAGE_FAIL_WITHIN_SECONDS after the stop (killed)
    failed_after_seconds: float = 0.0  # from the server's stop to the step's exit
    error_line: str = ""  # what the step printed as its failure ("FAILED ...")
    retry_codes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def outcome(self) -> str:
        if not self.paused:
            return "point not reached"
        if self.exit_code is None:
            return f"still running {OUTAGE_FAIL_WITHIN_SECONDS} s after the stop"
        if self.exit_code != EXIT_STORAGE_UNAVAILABLE:
            kind = {0: "succeeded", EXIT_PERMANENT_FAILURE: "failed as permanent"}.get(self.exit_code, "failed")
            return f"{kind} (exit {self.exit_code}), not retryable-unavailable: {self.error_line or 'no FAILED line'}"
        failed = {step: code for step, code in self.retry_codes.items() if code != 0}
        if failed:
            return f"retry failed: {failed}"
        return "converged" if not self.problems else "; ".join(self.problems)


def run_outage_trial(scenario: Scenario, server: Any, step: str, point: str) -> OutageTrial:
    """Restore the state before ``step``, run it in its own process with ``point`` armed to pause;
    once it pauses there, stop the S3 server and let it go on: it must fail, retryable, in bounded
    time. Then start the server again (same data), run the night again from ``step``, check."""
    started = time.perf_counter()
    restore_state(scenario, step)
    handshake, log = scenario.root / "paused", scenario.root / f"outage-{step}.log"
    handshake.unlink(missing_ok=True)
    extra = {FAULT_POINT_ENV: point, FAULT_PAUSE_ENV: str(handshake)}
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobs", step, "--run-date", scenario.night.isoformat()],
            env=step_env(scenario.work, extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STEP_TIMEOUT_SECONDS
        while not handshake.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        trial = OutageTrial(step, point, paused=handshake.exists())
        if not trial.paused:
            process.kill()
            process.wait()
            trial.seconds = time.perf_counter() - started
            return trial
        server.stop()
        stopped = time.monotonic()
        try:
            handshake.unlink()  # the step goes on, against a stopped server
            try:
                trial.exit_code = process.wait(OUTAGE_FAIL_WITHIN_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            trial.failed_after_seconds = round(time.monotonic() - stopped, 1)
        finally:
            server.start()
    lines = log.read_text(errors="replace").splitlines()
    trial.error_line = next((line for line in reversed(lines) if line.startswith("FAILED")), "")
    if trial.exit_code == EXIT_STORAGE_UNAVAILABLE:
        trial.retry_codes = recover(scenario, step)
        if all(code == 0 for code in trial.retry_codes.values()):
            trial.problems = check(scenario)
    trial.seconds = time.perf_counter() - started
    return trial


def outage_markdown(trials: list[OutageTrial]) -> str:
    """One row per outage: where the step was when the server stopped, how it failed, the retry."""
    rows = [
        "| step | paused at | exit | failed after s | error | outcome | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in trials:
        error = t.error_line.replace("|", "\\|")
        rows.append(
            f"| {t.step} | `{t.point}` | {t.exit_code} | {t.failed_after_seconds} | {error} | {t.outcome} | {t.seconds:.0f} |"
        )
    converged = sum(t.outcome == "converged" for t in trials)
    rows.append(f"\n{converged} of {len(trials)} outage trials failed retryable and converged on the retry.")
    return "\n".join(rows)


def all_points(scenario: Scenario) -> list[tuple[str, str]]:
    return [(step, point) for step in scenario.steps for point in scenario.points.get(step, [])]


def markdown(trials: list[Trial]) -> str:
    """The matrix: one row per (step, point), with the trials run and their outcome."""
    rows = ["| step | fault point | trials | outcome | seconds |", "|---|---|---|---|---|"]
    for t in trials:
        rows.append(f"| {t.step} | `{t.point}` | 1 | {t.outcome} | {t.seconds:.0f} |")
    converged = sum(t.outcome == "converged" for t in trials)
    rows.append(f"\n{converged} of {len(trials)} trials converged.")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="scenario folder (default: a new temporary one)")
    parser.add_argument("--reuse", action="store_true", help="reuse the scenario prepared in --root")
    parser.add_argument("--night", type=date.fromisoformat, default=date(2011, 12, 9))
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--warmup-nights", type=int, default=1)
    parser.add_argument("--points", nargs="*", help="only these fault points (default: every point reached)")
    parser.add_argument(
        "--storage-outage",
        action="store_true",
        help="the locations on a real S3 server; per step, stop the server at its first point (or --points) "
        "instead of a kill: the step must fail retryable, the re-run converge",
    )
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    parser.add_argument("--retry-steps", nargs="+", choices=NIGHT_STEPS, help=argparse.SUPPRESS)  # see recover
    parser.add_argument("--reference-steps", nargs="+", choices=NIGHT_STEPS, help=argparse.SUPPRESS)  # see prepare
    parser.add_argument("--save-before", nargs="*", choices=NIGHT_STEPS, help=argparse.SUPPRESS)  # see prepare
    parser.add_argument("--bucket", help=argparse.SUPPRESS)  # see prepare
    args = parser.parse_args(argv)
    if args.reference_steps:
        scenario = Scenario(args.root, args.night, args.warmup_nights, args.reference_steps, {}, args.bucket)
        reference_night(scenario, args.save_before if args.save_before is not None else args.reference_steps)
        return 0
    if args.retry_steps:
        codes = retry_night(args.night, args.retry_steps)
        print(json.dumps(codes))
        return 0 if all(code == 0 for code in codes.values()) else 1
    import tempfile

    root = args.root or Path(tempfile.mkdtemp(prefix="rfm-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    if not args.storage_outage:
        return run_matrix(args, root, None)
    from jobs.orchestration.object_store import s3_server

    with s3_server(root / "s3") as server:
        os.environ.update({**server.env, **outage_env()})
        return run_matrix(args, root, server)


def run_matrix(args: argparse.Namespace, root: Path, server: Any) -> int:
    """Prepare (or reuse) the scenario, then a kill trial per point, or with ``server`` an outage
    trial per step; print the markdown table."""
    started = time.perf_counter()
    bucket = BUCKET_ROOT if server else None
    if args.reuse:
        scenario = Scenario(**scenario_fields(json.loads((root / "scenario.json").read_text()), root))
        if scenario.bucket != bucket:
            raise SystemExit(f"{root} was prepared {'with' if scenario.bucket else 'without'} the bucket")
    else:
        scenario = prepare(root, args.night, args.customers, args.days, args.warmup_nights, bucket=bucket)
        (root / "scenario.json").write_text(
            json.dumps(
                {
                    "night": scenario.night.isoformat(),
                    "warmup_nights": scenario.warmup_nights,
                    "steps": scenario.steps,
                    "points": scenario.points,
                    "bucket": scenario.bucket,
                },
                indent=2,
            )
        )
    print(f"scenario ready in {time.perf_counter() - started:.0f} s under {root}", flush=True)
    if server:
        trials: list[Any] = []
        for step, point in outage_points(scenario, args.points):
            trial = run_outage_trial(scenario, server, step, point)
            print(f"{step:8} {point:40} {trial.outcome} ({trial.seconds:.0f} s): {trial.error_line}", flush=True)
            trials.append(trial)
        table = outage_markdown(trials)
    else:
        trials = []
        for step, point in all_points(scenario):
            if args.points and point not in args.points:
                continue
            trial = run_trial(scenario, step, point)
            print(f"{step:8} {point:40} {trial.outcome} ({trial.seconds:.0f} s)", flush=True)
            trials.append(trial)
        table = markdown(trials)
    print(table)
    if args.output:
        args.output.write_text(table + "\n")
    return 0 if all(t.outcome == "converged" for t in trials) else 1


def outage_points(scenario: Scenario, points: list[str] | None) -> list[tuple[str, str]]:
    """Where each step meets the outage: its first point (the points named, when given)."""
    if points:
        return [(step, point) for step, point in all_points(scenario) if point in points]
    return [(step, scenario.points[step][0]) for step in scenario.steps if scenario.points.get(step)]


def scenario_fields(saved: dict, root: Path) -> dict:
    return {
        "root": root,
        "night": date.fromisoformat(saved["night"]),
        "warmup_nights": saved["warmup_nights"],
        "steps": saved["steps"],
        "points": saved["points"],
        "bucket": saved.get("bucket"),
    }


if __name__ == "__main__":
    raise SystemExit(main())
