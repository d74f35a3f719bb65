"""Shared fixtures: one Spark session per test process, settings pointed at temporary dirs."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pandas as pd
import pytest

# Before anything loads the configuration: nothing a test does may touch the real data dir.
os.environ.setdefault("RFM__PATHS__DATA_DIR", tempfile.mkdtemp(prefix="rfm-tests-"))

from jobs.config import REPO_ROOT, Settings, load_settings  # noqa: E402
from jobs.definitions import days_between  # noqa: E402

FAST_ONLY = os.environ.get("RFM_TESTS_FAST") == "1"
if FAST_ONLY:  # `make test-fast`: a test that starts Spark without the `spark` marker fails loudly
    from pyspark.sql import SparkSession

    def _refuse_spark(self, *args, **kwargs):
        raise RuntimeError("this test starts Spark: mark it with @pytest.mark.spark (make test-fast runs none)")

    SparkSession.Builder.getOrCreate = _refuse_spark
    # whole modules of Airflow tests: not even collected (collecting parses the DAGs)
    collect_ignore = ["test_dags.py", "test_end_to_end.py"]

REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


def settings_for(data_dir: Path, **sections: dict) -> Settings:
    """The configuration with every run output under ``data_dir`` and some sections overridden."""
    base = load_settings()
    update = {"paths": base.paths.model_copy(update={"data_dir": str(data_dir)})}
    for name, values in sections.items():
        update[name] = getattr(base, name).model_copy(update=values)
    return base.model_copy(update=update)


def settings_from_env(env: dict[str, str], **sections: dict) -> Settings:
    """The configuration a process with ``env`` loads: its ``RFM__PATHS__*`` and the storage
    endpoint (a ``BucketDeployment``'s), some sections overridden."""
    base = load_settings()
    paths = {key.removeprefix("RFM__PATHS__").lower(): v for key, v in env.items() if key.startswith("RFM__PATHS__")}
    update = {"paths": base.paths.model_copy(update=paths)}
    if "RFM__STORAGE__ENDPOINT_URL" in env:
        update["storage"] = base.storage.model_copy(update={"endpoint_url": env["RFM__STORAGE__ENDPOINT_URL"]})
    for name, values in sections.items():
        update[name] = getattr(base, name).model_copy(update=values)
    return base.model_copy(update=update)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data dir (landing, lake, validation, MLflow) is this test's tmp dir."""
    return settings_for(tmp_path)


# `make test` runs two workers (pytest-xdist, `--dist loadfile --no-loadscope-reorder`): a test
# module is one unit of work, so its module fixtures are built once; the modules sharing the real
# replay share a unit; the longest units start first, so neither worker idles at the end.
SHARED_UNITS = {"test_replay_real": "real_replay", "test_clv_step": "real_replay"}
LONGEST_FIRST = ["real_replay", "test_end_to_end", "test_scheduled_path", "test_fault_injection", "test_storage_outage"]


def unit_of(module: str) -> str:
    """The unit of work of a test module (its name), or of the modules sharing a fixture."""
    return SHARED_UNITS.get(module, module)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the Spark session carries the ``spark`` marker; the longest units first."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)
    rank = {unit: index for index, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(unit_of(item.path.stem), len(rank)))  # stable: the order otherwise kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile``, with the modules of one unit (``SHARED_UNITS``) on one worker. (Not
    ``xdist_group`` marks: xdist 3.8 cannot apply them under pytest 9, pytest-xdist#1386.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModuleUnits(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(Path(nodeid.split("::", 1)[0]).stem)

    return ModuleUnits(config, log)


@pytest.fixture(scope="session")
def spark():
    """The one Spark session of the test process (Delta enabled, from the project factory)."""
    from jobs.adapters.spark import get_spark

    session = get_spark(load_settings(), app_name="rfm-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    """The complete UCI Online Retail file, when ../shared/data has it."""
    if not REAL_DATA.is_file():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return REAL_DATA


REPLAY_FIRST_NIGHT, REPLAY_LAST_NIGHT = date(2011, 12, 6), date(2011, 12, 9)  # every step of the DAG
REPLAY_INGEST_FIRST_NIGHT = date(2011, 12, 2)  # eight real nights: 12-02 .. 12-09 (Saturday 12-03: no trading)
REPLAY_RETRAIN_EVERY_DAYS = 3  # conf's 7, shortened: a retrain with a champion within four nights


@pytest.fixture(scope="session")
def real_replay(spark, real_data_path, tmp_path_factory) -> tuple[Settings, pd.DataFrame]:
    """Eight real nights, night by night in this process (``jobs.ops.replay``): the history before
    them loaded in one commit; validate and ingest every night from 2011-12-02 (the RFM snapshots);
    every step of the DAG on the last four, 2011-12-06 (the first champion) through 12-09, a retrain
    night with a champion (the retrain cadence shortened to 3 days). ``make test-incremental-year`` checks every night of
    the year; these nights cover the same code paths in CI. Its lake and MLflow store, and one row per
    modelled night of what the steps reported. Shared by every module that needs a real
    multi-night lake (test_replay_real, test_clv_step: one xdist unit)."""
    from jobs.ops.replay import replay_nights

    settings = settings_for(tmp_path_factory.mktemp("replay"), model={"retrain_every_days": REPLAY_RETRAIN_EVERY_DAYS})
    modelled = set(days_between(REPLAY_FIRST_NIGHT, REPLAY_LAST_NIGHT))
    rows = replay_nights(
        settings,
        spark,
        real_data_path,
        REPLAY_INGEST_FIRST_NIGHT - timedelta(days=1),
        REPLAY_LAST_NIGHT,
        label_on=modelled,
    )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print("\n" + table.drop(columns="clv_params").round(4).to_string(index=False))
    return settings, table


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (SeaweedFS, `make s3-server`) on 127.0.0.1 for the session,
    with its own keys and a ``lake`` bucket; each test works under its own prefix (``s3``)."""
    import shutil

    from jobs.orchestration.object_store import s3_server as serve

    folder = Path(tempfile.mkdtemp(prefix="rfm-s3-"))
    with serve(folder, buckets=("lake",)) as server:
        yield server
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The session's S3 server, its keys in this test's environment (where the pipeline reads them)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


def s3_settings(server, data_dir: Path, prefix: str, **sections: dict) -> Settings:
    """Settings with every location under ``s3://lake/<prefix>/`` (landing, lake, validation results
    and Data Docs, reports, exports) and the MLflow artifacts on the bucket."""
    root = f"s3://lake/{prefix}"
    base = settings_for(data_dir, **sections)
    paths = base.paths.model_copy(
        update={
            "landing_dir": f"{root}/landing",
            "lake_dir": f"{root}/lake",
            "validation_dir": f"{root}/validation",
            "reports_dir": f"{root}/reports",
            "exports_dir": f"{root}/exports",
        }
    )
    storage = base.storage.model_copy(update={"endpoint_url": server.endpoint_url})
    mlflow = base.mlflow.model_copy(update={"artifacts_destination": f"{root}/mlflow"})
    return base.model_copy(update={"paths": paths, "storage": storage, "mlflow": mlflow})


@pytest.fixture
def receiver():
    """A webhook on 127.0.0.1: every POSTed JSON body lands in the returned list."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()
