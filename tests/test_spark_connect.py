"""The same jobs as Spark Connect clients: a Spark Connect server (``jobs.adapters.spark --serve``)
holds the driver on 127.0.0.1; the backfill of the history, then two nights task by task, each
task its own process (``python -m jobs <task> --run-date D``) as the scheduler runs them: a
retrain night that registers the first model and a scoring night that loads it.

The backfill and the tasks run with ``SPARK_HOME`` pointing nowhere, so a task that tried to start its own driver
would fail: every Spark call went through the server. Each task's wall time is printed, never
asserted (``make bench-pipeline`` measures).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from deltalake import DeltaTable

from harness.generate import generate_transactions
from jobs.config import REPO_ROOT
from jobs.definitions import NIGHT_STEPS
from jobs.ops.split import land_days
from jobs.orchestration.services import spark_connect_server
from tests.conftest import settings_for

pytestmark = [pytest.mark.spark, pytest.mark.heavy]  # in CI, test_scheduled_path runs its tasks the same way

LAST_NIGHT = date(2011, 12, 9)
NIGHTS = (LAST_NIGHT - timedelta(days=1), LAST_NIGHT)


@pytest.fixture
def connect_server(tmp_path: Path) -> Iterator[str]:
    with spark_connect_server(tmp_path / "logs") as server:
        yield server.url


def run_task(task: str, night: date, env: dict[str, str]) -> tuple[float, dict]:
    """The task's wall time and the summary it printed."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "jobs", task, "--run-date", night.isoformat()],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"{task} {night} over Spark Connect:\n{done.stderr[-4000:]}"
    return time.perf_counter() - started, json.loads(done.stdout[done.stdout.index("{") :])


def test_two_nights_run_unchanged_as_spark_connect_clients(tmp_path: Path, connect_server: str) -> None:
    settings = settings_for(tmp_path / "run")
    frame = generate_transactions(customers=300, days=40, seed=5, end_date=LAST_NIGHT)
    land_days(frame, settings.path("landing_dir"), LAST_NIGHT - timedelta(days=39), LAST_NIGHT, settings.landing.marker)
    remote = {
        **os.environ,
        "RFM__PATHS__DATA_DIR": str(tmp_path / "run"),
        "RFM__SPARK__REMOTE": connect_server,
        "SPARK_HOME": str(tmp_path / "no-spark-here"),
    }
    history = [
        sys.executable,
        "-m",
        "jobs.ops.backfill",
        "--source",
        str(settings.path("landing_dir")),
        "--until",
        (NIGHTS[0] - timedelta(days=1)).isoformat(),
    ]
    loaded = subprocess.run(history, env=remote, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    assert loaded.returncode == 0, f"the backfill over Spark Connect:\n{loaded.stderr[-4000:]}"

    ran = {(night, task): run_task(task, night, remote) for night in NIGHTS for task in NIGHT_STEPS}
    print("\n".join(f"{night} {task:<9} {s:6.1f} s" for (night, task), (s, _) in ran.items()))
    retrain, scoring = (ran[(night, "cluster")][1] for night in NIGHTS)
    assert retrain["night_type"] == "retrain" and scoring["night_type"] == "score", (retrain, scoring)
    assert scoring["model_version"] == retrain["model_version"], "the scoring night loaded the registered model"

    filters = [("snapshot_date", "=", LAST_NIGHT)]
    silver = DeltaTable(str(settings.table_path("silver_customer_rfm"))).to_pandas(filters=filters)
    gold = DeltaTable(str(settings.table_path("gold_customer_segments"))).to_pandas(filters=filters)
    assert len(silver) > 100 and sorted(gold["customer_id"]) == sorted(silver["customer_id"])
    assert gold["cluster_label"].notna().all() and gold["clv_12m"].notna().all()
    assert gold["mlflow_run_id"].nunique() == 1
    assert (settings.path("reports_dir") / f"date={LAST_NIGHT}" / "report.html").is_file()
