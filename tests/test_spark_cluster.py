"""The same jobs on a real Spark standalone cluster: a master and one worker from the pip pyspark
on 127.0.0.1, and one night (validate, ingest, cluster, label) run unchanged in a subprocess with
``RFM__SPARK__MASTER`` pointing at it. The Delta jars reach the executors through ``spark.jars``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable

from jobs.config import REPO_ROOT
from jobs.tools.generate import generate_transactions
from jobs.tools.split import land_days
from tests.conftest import settings_for

pytestmark = [pytest.mark.spark, pytest.mark.heavy]

NIGHT = date(2011, 12, 9)
STARTUP_SECONDS = 180
NIGHT_SCRIPT = """
import sys
from datetime import date
from jobs.adapters.spark import get_spark
from jobs.steps.cluster import cluster_day
from jobs.steps.ingest import ingest_day
from jobs.steps.label import label_day
from jobs.steps.validate import validate_day
night = date.fromisoformat(sys.argv[1])
spark = get_spark()
validate_day(night)
ingest_day(night)
cluster_day(night)
label_day(night)
executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1  # the driver is in the map too
print("MASTER", spark.sparkContext.master, "EXECUTORS", executors, "APP", spark.sparkContext.applicationId)
"""


@dataclass(frozen=True)
class Cluster:
    url: str
    ui: str
    work_dir: Path


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


def master_state(ui: str) -> dict:
    with urllib.request.urlopen(f"{ui}/json/", timeout=5) as response:
        return json.load(response)


@pytest.fixture
def standalone_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A master and one worker (1 core, 1 GB) bound to 127.0.0.1, stopped afterwards."""
    import pyspark

    master_port, master_ui, worker_port, worker_ui = free_ports(4)
    env = {**os.environ, "SPARK_HOME": str(Path(pyspark.__file__).parent), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_NO_DAEMONIZE": "1"}  # fmt: skip
    url, ui = f"spark://127.0.0.1:{master_port}", f"http://127.0.0.1:{master_ui}"
    work_dir = tmp_path / "worker"
    logs = tmp_path / "cluster-logs"
    logs.mkdir()
    commands = [
        [str(spark_class()), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
         "--port", str(master_port), "--webui-port", str(master_ui)],
        [str(spark_class()), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1",
         "--port", str(worker_port), "--webui-port", str(worker_ui), "--cores", "1", "--memory", "1g",
         "--work-dir", str(work_dir)],
    ]  # fmt: skip
    processes = []
    try:
        for index, command in enumerate(commands):
            log = (logs / f"{index}.log").open("w")
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))  # fmt: skip
            if index == 0:
                wait_for(lambda: master_state(ui), "the master")
        wait_for(lambda: master_state(ui)["aliveworkers"] >= 1, "a worker to register")
        yield Cluster(url, ui, work_dir)
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def wait_for(check, what: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} did not come up in {STARTUP_SECONDS} s")


def test_one_night_runs_unchanged_on_a_standalone_cluster(tmp_path: Path, standalone_cluster) -> None:
    settings = settings_for(tmp_path / "run")
    frame = generate_transactions(customers=400, days=45, seed=11, end_date=NIGHT)
    land_days(frame, settings.path("landing_dir"), NIGHT - timedelta(days=44), NIGHT, settings.landing.marker)
    local = {**os.environ, "RFM__PATHS__DATA_DIR": str(tmp_path / "run")}
    # the history in local mode, in its own process (no second JVM alive during the cluster night)
    history = [sys.executable, "-m", "jobs.tools.backfill", "--source", str(settings.path("landing_dir")),
               "--until", (NIGHT - timedelta(days=1)).isoformat()]  # fmt: skip
    loaded = subprocess.run(history, env=local, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert loaded.returncode == 0, loaded.stderr[-4000:]

    env = {**local, "RFM__SPARK__MASTER": standalone_cluster.url, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": sys.executable}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", NIGHT_SCRIPT, NIGHT.isoformat()], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"MASTER {standalone_cluster.url} EXECUTORS 1" in done.stdout, done.stdout[-2000:]

    app_id = done.stdout.split("APP ")[-1].split()[0]
    completed = {app["id"] for app in master_state(standalone_cluster.ui)["completedapps"]}
    assert app_id in completed, "the night's application did not run on the cluster"
    executor_logs = list((standalone_cluster.work_dir / app_id).glob("*/stderr"))
    assert executor_logs, "no executor ran on the worker"
    assert "ClassNotFoundException" not in "".join(p.read_text(errors="replace") for p in executor_logs)
    filters = [("snapshot_date", "=", NIGHT)]
    silver = DeltaTable(str(settings.table_path("silver_customer_rfm"))).to_pandas(filters=filters)
    gold = DeltaTable(str(settings.table_path("gold_customer_segments"))).to_pandas(filters=filters)
    assert len(silver) > 100 and sorted(gold["customer_id"]) == sorted(silver["customer_id"])
    assert gold["cluster_label"].notna().all()
