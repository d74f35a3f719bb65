"""The same jobs on a real Spark standalone cluster: a master and one worker from the pip pyspark
on 127.0.0.1, and one night (validate, ingest, cluster, label) run unchanged in a subprocess with
``RFM__SPARK__MASTER`` pointing at it. The Delta jars reach the executors through ``spark.jars``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable

from harness.generate import generate_transactions
from jobs.config import REPO_ROOT
from jobs.ops.split import land_days
from jobs.orchestration.services import SparkStandalone, start_spark_standalone
from tests.conftest import settings_for

pytestmark = [pytest.mark.spark, pytest.mark.heavy]

NIGHT = date(2011, 12, 9)
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


@pytest.fixture
def standalone_cluster(tmp_path: Path) -> Iterator[SparkStandalone]:
    """A master and one worker (1 core, 1 GB) bound to 127.0.0.1, stopped afterwards."""
    cluster = start_spark_standalone(tmp_path / "cluster", cores=1, memory="1g")
    try:
        yield cluster
    finally:
        cluster.stop()


def test_one_night_runs_unchanged_on_a_standalone_cluster(tmp_path: Path, standalone_cluster) -> None:
    settings = settings_for(tmp_path / "run")
    frame = generate_transactions(customers=400, days=45, seed=11, end_date=NIGHT)
    land_days(frame, settings.path("landing_dir"), NIGHT - timedelta(days=44), NIGHT, settings.landing.marker)
    local = {**os.environ, "RFM__PATHS__DATA_DIR": str(tmp_path / "run")}
    # the history in local mode, in its own process (no second JVM alive during the cluster night)
    history = [
        sys.executable,
        "-m",
        "jobs.ops.backfill",
        "--source",
        str(settings.path("landing_dir")),
        "--until",
        (NIGHT - timedelta(days=1)).isoformat(),
    ]
    loaded = subprocess.run(history, env=local, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert loaded.returncode == 0, loaded.stderr[-4000:]

    env = {
        **local,
        "RFM__SPARK__MASTER": standalone_cluster.url,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }
    done = subprocess.run(
        [sys.executable, "-c", NIGHT_SCRIPT, NIGHT.isoformat()],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"MASTER {standalone_cluster.url} EXECUTORS 1" in done.stdout, done.stdout[-2000:]

    app_id = done.stdout.split("APP ")[-1].split()[0]
    completed = {app["id"] for app in standalone_cluster.state()["completedapps"]}
    assert app_id in completed, "the night's application did not run on the cluster"
    executor_logs = list((standalone_cluster.work_dir / app_id).glob("*/stderr"))
    assert executor_logs, "no executor ran on the worker"
    assert "ClassNotFoundException" not in "".join(p.read_text(errors="replace") for p in executor_logs)
    filters = [("snapshot_date", "=", NIGHT)]
    silver = DeltaTable(str(settings.table_path("silver_customer_rfm"))).to_pandas(filters=filters)
    gold = DeltaTable(str(settings.table_path("gold_customer_segments"))).to_pandas(filters=filters)
    assert len(silver) > 100 and sorted(gold["customer_id"]) == sorted(silver["customer_id"])
    assert gold["cluster_label"].notna().all()
