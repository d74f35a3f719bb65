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

import pandas as pd

from jobs.cli import night_steps
from jobs.config import Settings, load_settings
from jobs.definitions import (
    CLV_COLUMNS,
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


@dataclass(frozen=True)
class Scenario:
    """A prepared history: where its state lives and the night under test."""

    root: Path
    night: date
    warmup_nights: int
    steps: list[str]
    points: dict[str, list[str]]  # step -> the fault points it reached in the reference night

    @property
    def work(self) -> Path:
        return self.root / "work"

    def saved(self, step: str) -> Path:
        """The state saved before ``step`` of the night under test."""
        return self.root / "saved" / step

    def nights(self) -> list[date]:
        return [self.night - timedelta(days=n) for n in range(self.warmup_nights, -1, -1)]

    def settings(self) -> Settings:
        base = load_settings()
        return base.model_copy(update={"paths": base.paths.model_copy(update={"data_dir": str(self.work)})})


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


def save_state(work: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(work, target, symlinks=True)


def restore_state(source: Path, work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(source, work, symlinks=True)


def prepare(
    root: Path,
    night: date = date(2011, 12, 9),
    customers: int = 200,
    days: int = 40,
    warmup_nights: int = 1,
    steps: list[str] | None = None,
    seed: int = 7,
) -> Scenario:
    """Generate and load the history, run the warm-up nights, then the reference night (traced),
    in one process (``reference_night``): one Spark start-up for the whole scenario."""
    steps = steps or NIGHT_STEPS
    scenario = Scenario(root, night, warmup_nights, steps, {})
    work = scenario.work
    shutil.rmtree(root / "saved", ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
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
    ]
    require_ok(run_module(work, reference), "reference night")
    points = {step: trace_points(root / f"trace-{step}.txt") for step in steps}
    scenario = Scenario(root, night, warmup_nights, steps, points)
    gold(scenario.work).to_parquet(root / "reference_gold.parquet")
    problems = check(scenario)
    if problems:
        raise RuntimeError(f"the clean reference night fails its own checks: {problems}")
    return scenario


def trace_points(trace: Path) -> list[str]:
    """The fault points a traced step reached, in first-reached order, once each."""
    return list(dict.fromkeys(trace.read_text().split())) if trace.exists() else []


def reference_night(scenario: Scenario) -> None:
    """In this process: the backfill up to the first night, the warm-up nights, then the night under
    test step by step, the state saved before each step and the points it reaches traced
    (``after:<step>`` fired inside the step's lease, by ``run_one``, as its task fires it)."""
    from jobs.adapters.spark import get_spark
    from jobs.ops.backfill import backfill
    from jobs.ops.rerun import run_one

    settings = load_settings()
    spark = get_spark(settings)
    work = scenario.work
    backfill(work / "landing", scenario.nights()[0] - timedelta(days=1), settings=settings, spark=spark)
    for warmup in scenario.nights()[:-1]:
        for name in scenario.steps:
            run_one(night_steps()[name], warmup, settings, spark)
    for name in scenario.steps:
        save_state(work, scenario.saved(name))
        trace = scenario.root / f"trace-{name}.txt"
        trace.unlink(missing_ok=True)
        os.environ[FAULT_TRACE_ENV] = str(trace)
        run_one(night_steps()[name], scenario.night, settings, spark)
        del os.environ[FAULT_TRACE_ENV]


def gold(work: Path) -> pd.DataFrame:
    """The gold business columns of every snapshot, read with delta-rs."""
    from deltalake import DeltaTable

    table = DeltaTable(str(work / "lake" / "gold" / "customer_segments")).to_pandas()
    columns = [c for c in BUSINESS_COLUMNS if c in table.columns]
    return table[columns].sort_values(["snapshot_date", "customer_id"]).reset_index(drop=True)


def delta_tables(lake_dir: Path) -> list[Path]:
    return sorted(log.parent for log in lake_dir.rglob("_delta_log") if log.is_dir())


def check(scenario: Scenario) -> list[str]:
    """What is wrong with the state after a night (empty: it converged)."""
    from deltalake import DeltaTable

    from jobs.adapters import tracking
    from jobs.adapters.lease import held_leases
    from jobs.adapters.publish import published_versions

    settings = scenario.settings()
    problems = []
    lake_dir = settings.path("lake_dir")
    for path in delta_tables(lake_dir):
        try:
            DeltaTable(str(path)).to_pyarrow_table()
        except Exception as error:  # noqa: BLE001 - any reader error is the finding
            problems.append(f"delta-rs cannot read {path.relative_to(lake_dir)}: {error}")
    reference = pd.read_parquet(scenario.root / "reference_gold.parquet")
    try:
        pd.testing.assert_frame_equal(reference, gold(scenario.work), check_exact=False, rtol=1e-9)
    except AssertionError as error:
        problems.append(f"gold differs from the clean run: {str(error).splitlines()[0:3]}")
    dag_id = settings.dag.dag_id
    for night in scenario.nights():
        live = tracking.runs_for_date(settings, dag_id, night)
        if len(live) != 1:
            problems.append(f"{len(live)} live MLflow runs for {night}")
    client = tracking.client(settings)
    champion = str(client.get_model_version_by_alias(settings.model.registered_name, settings.model.alias).version)
    clusters = DeltaTable(str(settings.table_path("silver_customer_clusters"))).to_pandas()
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
    restore_state(scenario.saved(step), scenario.work)
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

    settings = load_settings()
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
    parser.add_argument("--output", type=Path, help="also write the markdown table here")
    parser.add_argument("--retry-steps", nargs="+", choices=NIGHT_STEPS, help=argparse.SUPPRESS)  # see recover
    parser.add_argument("--reference-steps", nargs="+", choices=NIGHT_STEPS, help=argparse.SUPPRESS)  # see prepare
    args = parser.parse_args(argv)
    if args.reference_steps:
        reference_night(Scenario(args.root, args.night, args.warmup_nights, args.reference_steps, {}))
        return 0
    if args.retry_steps:
        codes = retry_night(args.night, args.retry_steps)
        print(json.dumps(codes))
        return 0 if all(code == 0 for code in codes.values()) else 1
    import tempfile

    root = args.root or Path(tempfile.mkdtemp(prefix="rfm-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.reuse:
        scenario = Scenario(**scenario_fields(json.loads((root / "scenario.json").read_text()), root))
    else:
        scenario = prepare(root, args.night, args.customers, args.days, args.warmup_nights)
        (root / "scenario.json").write_text(
            json.dumps(
                {
                    "night": scenario.night.isoformat(),
                    "warmup_nights": scenario.warmup_nights,
                    "steps": scenario.steps,
                    "points": scenario.points,
                },
                indent=2,
            )
        )
    print(f"scenario ready in {time.perf_counter() - started:.0f} s under {root}", flush=True)
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


def scenario_fields(saved: dict, root: Path) -> dict:
    return {
        "root": root,
        "night": date.fromisoformat(saved["night"]),
        "warmup_nights": saved["warmup_nights"],
        "steps": saved["steps"],
        "points": saved["points"],
    }


if __name__ == "__main__":
    raise SystemExit(main())
