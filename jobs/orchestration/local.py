"""The project's Airflow commands for a developer's machine (SQLite metadata DB, standalone).

``python -m jobs.orchestration nights --from D1 --to D2``  run the real DAG night by night
``python -m jobs.orchestration replay --source F --from D1 --to D2``  backfill to D1-1, land
    D1..D2 from the source, then run the DAG night by night, as the scheduler would
``python -m jobs.orchestration airflow``  Airflow's components on SQLite (UI/API on 127.0.0.1:8080)
``python -m jobs.orchestration prod-local``  the production path on loopback: PostgreSQL, MLflow
    server, Airflow scheduler/dag-processor/triggerer/api-server (``make prod-local``)
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from jobs.config import Settings, load_settings
from jobs.definitions import days_between
from jobs.orchestration import object_store
from jobs.orchestration import services as svc


def run_night(settings: Settings, day: date) -> None:
    """``airflow dags test`` of the real DAG for ``day``; raises if the run did not succeed."""
    config = svc.AirflowConfig.sqlite(settings)
    result = svc.airflow_cli(config, "dags", "test", settings.dag.dag_id, day.isoformat(), capture=False, check=False)
    out = svc.airflow_cli(config, "dags", "state", settings.dag.dag_id, day.isoformat()).stdout.strip()
    state = out.splitlines()[-1] if out else "none"  # the latest run whose logical date is ``day``
    if result.returncode != 0 or state != "success":
        raise RuntimeError(f"DAG run for {day} ended {state!r} (exit {result.returncode})")


RUNNERS = ("backfill", "dags-test")


def run_nights(settings: Settings, first: date, last: date, runner: str = "backfill") -> list[date]:
    """The real DAG for each night from ``first`` to ``last``, in order.

    ``backfill`` (default): an Airflow backfill run by a scheduler, so the UI shows real start
    times and the run type ``backfill``. ``dags-test``: ``airflow dags test`` night by night in
    one process (faster to debug; its runs start at their logical date in the UI).

    When later days than ``first`` are loaded already this is a re-run (the second ``make run``):
    it must reach the latest loaded day, and runs under a rerun intent (``jobs.adapters.audit``).
    """
    from jobs.adapters.audit import begin_rerun, end_rerun, latest_loaded_day

    svc.airflow_cli(svc.AirflowConfig.sqlite(settings), "db", "migrate", capture=False)
    latest = latest_loaded_day(settings)
    rerunning = latest is not None and latest > first
    if rerunning and last < latest:
        raise SystemExit(
            f"nights {first}..{last} would leave {last + timedelta(days=1)}..{latest} computed "
            f"from the old days: run through {latest} (make rerun FROM={first})"
        )
    if rerunning:
        begin_rerun(settings, first, last)
    nights = days_between(first, last)
    if runner == "backfill":
        scheduler_backfill(settings, first, last)
    else:
        for night in nights:
            print(f"== night {night} ==", flush=True)
            run_night(settings, night)
    if rerunning:
        end_rerun(settings)
    return nights


def scheduler_backfill(settings: Settings, first: date, last: date) -> None:
    """Backfill ``first``..``last`` (one night at a time), run by Airflow's scheduler on the SQLite DB.

    The api-server (on a free loopback port) starts alone: it cancels a backfill an interrupted
    run left active, unpauses the DAG and creates the backfill (SQLite refuses that while a
    scheduler writes). Then the scheduler runs it; the DAG is paused again at the end. The scheduler
    runs with ``[scheduler] use_job_schedule`` off, so it creates no scheduled run meanwhile (not an
    ``end_date`` in the DAG: that would change the serialized DAG, a new DAG version per run).
    ``segment_export`` is unpaused too and stays so: the nights' publish events wait for it
    (``make run``/``make replay`` export them right away with ``jobs.ops.exports``). The tasks are
    clients of a Spark Connect server started for the run (one driver, not one per task). Raises
    RuntimeError naming the night when a run fails.
    """
    home = settings.path("airflow_home")
    extra = {"RFM__PATHS__DATA_DIR": str(settings.path("data_dir")), "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
    with spark_connect_for_tasks(settings, home / "services", extra) as remote:
        backfill_with_scheduler(settings, first, last, {**extra, "RFM__SPARK__REMOTE": remote})


@contextmanager
def spark_connect_for_tasks(settings: Settings, logs: Path, env: dict[str, str]) -> Iterator[str]:
    """A Spark Connect server for the tasks of a run, stopped afterwards; yields its URL. With
    ``spark.remote`` configured already, that server is used and nothing is started."""
    if settings.spark.remote:
        yield settings.spark.remote
        return
    print("Starting a Spark Connect server for the tasks ...", flush=True)
    with svc.spark_connect_server(logs, env) as server:
        yield server.url


def backfill_with_scheduler(settings: Settings, first: date, last: date, extra: dict[str, str]) -> None:
    """``scheduler_backfill`` with the tasks' environment ``extra``."""
    home = settings.path("airflow_home")
    config = svc.AirflowConfig.sqlite(settings, svc.free_port(), extra)
    dag_id = settings.dag.dag_id
    svc.airflow_cli(config, "dags", "reserialize")  # the DAG as this checkout defines it, without a dag-processor
    print(
        f"Backfill of {dag_id} {first} .. {last}: starting Airflow's api-server and scheduler "
        f"(logs: {home / 'services'}) ...",
        flush=True,
    )
    procs = svc.start_airflow(config, home / "services", ("api-server",), migrate=False)
    try:
        api = svc.AirflowApi(config)
        clear_leftovers(api, dag_id)
        api.unpause(dag_id)
        api.unpause(EXPORT_DAG_ID)
        try:
            api.request(
                "POST",
                "/backfills",
                json={
                    "dag_id": dag_id,
                    "from_date": f"{first}T00:00:00Z",
                    "to_date": f"{last}T00:00:00Z",
                    "reprocess_behavior": "completed",
                    "max_active_runs": 1,
                },
            )
            procs.append(svc.start_component(config, "scheduler", home / "services"))
            svc.wait_healthy(config, procs, ("scheduler",))
            follow_backfill(api, dag_id, first, last, procs)
            wait_backfill_completed(api, dag_id)
        finally:
            svc.stop(*procs[1:])  # the scheduler first: then nothing else writes to SQLite
            del procs[1:]
            api.request("PATCH", f"/dags/{dag_id}", json={"is_paused": True})
    finally:
        svc.stop(*procs)


def clear_leftovers(api: Any, dag_id: str) -> None:
    """What an interrupted run left: cancel its active backfill, mark its unfinished runs failed (re-run next)."""
    for active in api.get("/backfills", dag_id=dag_id, limit=100)["backfills"]:
        if not active["completed_at"]:
            api.request("PUT", f"/backfills/{active['id']}/cancel")
    for state in ("running", "queued"):
        for run in api.get(f"/dags/{dag_id}/dagRuns", state=state, limit=1000)["dag_runs"]:
            api.request("PATCH", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}", json={"state": "failed"})


EXPORT_DAG_ID = "segment_export"


def wait_backfill_completed(api: Any, dag_id: str, timeout: float = 90, every: float = 3) -> bool:
    """Keep the scheduler up until it marks the backfill completed (it checks every 30 s), so the
    UI does not show "Backfill in progress" for nights that are done. False, with a line, on timeout."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            backfills = api.get("/backfills", dag_id=dag_id, limit=100)["backfills"]
            if all(b["completed_at"] for b in backfills):
                return True
        except (requests.RequestException, svc.ServerBusy):
            pass
        time.sleep(every)
    print(f"the backfill of {dag_id} is done but not yet marked completed after {timeout:.0f} s", flush=True)
    return False


def name_the_night(api: Any, dag_id: str, run: dict[str, Any], night: date) -> None:
    """The run's note says which night it processed (its id names the end of its data interval:
    ``backfill__2011-12-10`` processes the night of 2011-12-09). A busy SQLite: tried again later."""
    import requests

    from jobs.orchestration.services import ServerBusy

    try:
        api.request("PATCH", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}", json={"note": f"night {night}"})
    except (requests.RequestException, ServerBusy):
        pass


def follow_backfill(api: Any, dag_id: str, first: date, last: date, procs: list[Any]) -> None:
    """Print each night as it ends; return when all succeeded, raise when one failed or a process died."""
    import time

    import requests

    nights, reported = days_between(first, last), set()
    while True:
        for proc in procs:
            if not proc.running():
                raise RuntimeError(f"{proc.name} exited during the backfill:\n{svc.log_tail(proc.log)}")
        try:
            runs = api.get(
                f"/dags/{dag_id}/dagRuns",
                run_type="backfill",
                logical_date_gte=f"{first}T00:00:00Z",
                logical_date_lte=f"{last}T00:00:00Z",
                limit=1000,
            )["dag_runs"]
        except (requests.RequestException, svc.ServerBusy):  # a busy SQLite or machine: ask again
            time.sleep(3)
            continue
        states = {date.fromisoformat(r["logical_date"][:10]): r for r in runs}
        for night in nights:
            run = states.get(night)
            if run and not run.get("note"):
                name_the_night(api, dag_id, run, night)
            if run and run["state"] in ("success", "failed") and night not in reported:
                reported.add(night)
                print(f"== night {night}: {run['state']} ({run['start_date']} -> {run['end_date']}) ==", flush=True)
                if run["state"] == "failed":
                    raise RuntimeError(f"DAG run for {night} ended 'failed' ({run['dag_run_id']}); see the Airflow UI")
        if len(reported) == len(nights):
            return
        time.sleep(3)


def replay(settings: Settings, source: Path, first: date, last: date, runner: str = "backfill") -> list[date]:
    """Backfill the source up to ``first``-1, land ``first``..``last``, run those nights."""
    from jobs.ops.backfill import backfill
    from jobs.ops.split import date_column, land_days, read_export

    backfill(source, first - timedelta(days=1), settings=settings)
    frame = read_export(source)
    land_days(
        frame,
        settings.path("landing_dir"),
        first,
        last,
        settings.landing.marker,
        settings.landing.format,
        date_column(frame, settings),
    )
    return run_nights(settings, first, last, runner)


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the set as cleanly as Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        signal.pause()
    except KeyboardInterrupt:
        print("\nstopping ...", flush=True)


def standalone(settings: Settings) -> None:
    """Airflow's api-server, scheduler, dag-processor and triggerer on the SQLite DB, all on loopback.

    Not ``airflow standalone``: its scheduler and triggerer start task-log servers on every
    interface (ports 8793/8794, no setting changes the address). Here they run with
    ``--skip-serve-logs`` and the api-server reads the task logs from ``$AIRFLOW_HOME/logs``.
    """
    home = settings.path("airflow_home")
    config = svc.AirflowConfig.sqlite(settings)
    print("Starting Airflow (api-server, scheduler, dag-processor, triggerer) ...", flush=True)
    procs = svc.start_airflow(config, home / "services")
    try:
        print(
            f"Airflow UI/API: {config.url} — user {svc.ADMIN_USER!r}, password {config.admin_password!r} "
            f"(kept in {home / 'admin-password'}). Logs: {home / 'services'}. Ctrl-C stops it.",
            flush=True,
        )
        wait_for_interrupt()
    finally:
        svc.stop(*procs)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def prod_local(
    settings: Settings, airflow_port: int, mlflow_port: int, spark_cluster: bool = False, on_bucket: bool = False
) -> None:
    """Start the production set on loopback over this data dir, print how to use it, stop it on Ctrl-C
    (``spark_cluster``: the Spark Connect server on a standalone master and worker; ``on_bucket``:
    every location on a SeaweedFS S3 server started here, ``s3://lake/rfm``)."""
    folder = settings.local_path("data_dir") / "prod-local"
    password = svc.persisted_secret(folder / "airflow-admin-password")
    with ExitStack() as stack:
        bucket, pipeline_env = None, {"RFM__PATHS__DATA_DIR": str(settings.path("data_dir"))}
        if on_bucket:
            print(f"Starting the S3 server (SeaweedFS) under {folder / 's3'} ...", flush=True)
            server = stack.enter_context(object_store.s3_server(folder / "s3", buckets=("lake",)))
            bucket, pipeline_env = object_store.BucketDeployment(server, "s3://lake/rfm"), {}
        print(f"Starting PostgreSQL, MLflow and Airflow under {folder} (a minute or two) ...", flush=True)
        prod = svc.production_stack(
            folder, pipeline_env, password, airflow_port, mlflow_port, spark_cluster=spark_cluster, bucket=bucket
        )
        described = stack.enter_context(prod).describe()
        if bucket:
            exports = " ".join(f"{k}={v}" for k, v in bucket.pipeline_env(folder).items())
            described += f"\nEvery location is on {bucket.root}; to land days or backfill by hand: export {exports}"
        print(described, "\nDAGs start paused: unpause them in the UI. Ctrl-C stops everything.", flush=True)
        wait_for_interrupt()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    nights = commands.add_parser("nights", help="run the DAG night by night")
    replay_cmd = commands.add_parser("replay", help="backfill, land and run nights from a source file")
    replay_cmd.add_argument("--source", required=True, type=Path)
    for sub in (nights, replay_cmd):
        sub.add_argument("--from", dest="first", required=True, type=date.fromisoformat)
        sub.add_argument("--to", dest="last", required=True, type=date.fromisoformat)
        sub.add_argument("--runner", choices=RUNNERS, default="backfill", help="how the nights run (default: backfill)")
    commands.add_parser("airflow", help="start Airflow (SQLite) on 127.0.0.1:8080")
    prod = commands.add_parser("prod-local", help="PostgreSQL + MLflow server + Airflow components on loopback")
    prod.add_argument("--airflow-port", type=int, default=8080)
    prod.add_argument("--mlflow-port", type=int, default=5000)
    prod.add_argument("--spark-cluster", action="store_true", help="run Spark on a standalone master and worker")
    prod.add_argument("--storage", choices=["local", "s3"], default="local", help="s3: every location on an S3 server")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "airflow":
        standalone(settings)
    elif args.command == "prod-local":
        prod_local(settings, args.airflow_port, args.mlflow_port, args.spark_cluster, args.storage == "s3")
    elif args.command == "nights":
        run_nights(settings, args.first, args.last, args.runner)
    else:
        replay(settings, args.source, args.first, args.last, args.runner)
    return 0
