"""Two nights with the lake, the EDA reports, the exports and the MLflow artifacts on a real S3
server (SeaweedFS on 127.0.0.1, the ``s3`` fixture), Spark writing Delta through ``s3a://``
(hadoop-aws), in one child process: its Spark driver loads hadoop-aws (the test process's shared
session does not) and reads the keys from its environment only.

History is backfilled up to 2011-12-08 and every step of the DAG runs, each under its lease, for
2011-12-09 and 12-10, then the export and the lake maintenance. Then: the lake is read from the
bucket by delta-rs alone; nothing of it is in the local data dir; two writers of one Spark
driver racing on one table both commit (the deployment's writers: one driver, the Spark Connect
server's; ``docs/operations.md``). The days land as objects; the validation results and Data Docs
are objects too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path
from unittest import mock

import deltalake
import pytest

from harness.generate import generate_transactions
from jobs.definitions import EXPORT_MANIFEST, TABLES
from jobs.ops.split import land_days
from jobs.steps.export import VERSIONS_DIR
from tests.conftest import s3_settings
from tests.helpers import delta_rs_alone as read_with_delta_rs_alone
from tests.helpers import object_keys

pytestmark = [pytest.mark.spark, pytest.mark.s3]

HISTORY_END = date(2011, 12, 8)
NIGHTS = [date(2011, 12, 9), date(2011, 12, 10)]
# the local-only folders: the SQLite tracking store (the scheduled path has PostgreSQL), the Airflow home
LOCAL_ALLOWED = {"mlflow", "airflow"}


def drive(nights: bool) -> None:
    """The child process. ``nights``: backfill, two nights of every step under its lease, export,
    maintain. Always: four writers of this driver racing on one table, then OPTIMIZE and VACUUM of
    it. Prints one JSON line of what it saw, with the seconds each part took."""
    import threading
    import time
    from dataclasses import asdict

    from pyspark.sql import functions as F

    from jobs.adapters import lake
    from jobs.adapters.lease import held_leases, step_lease
    from jobs.adapters.spark import get_spark
    from jobs.config import load_settings
    from jobs.definitions import NIGHT_STEPS
    from jobs.ops.backfill import backfill
    from jobs.ops.replay import run_step
    from jobs.steps.export import export_day
    from jobs.steps.maintain import file_count, maintain_lake, set_retention

    settings = load_settings()
    seconds: dict[str, float] = {}
    started = time.monotonic()

    def lap(name: str) -> None:
        nonlocal started
        seconds[name] = round(time.monotonic() - started, 1)
        started = time.monotonic()

    spark = get_spark(settings)
    lap("session")
    results: dict[str, dict] = {}
    maintained: list[dict] = []
    if nights:
        backfill(settings.path("landing_dir"), HISTORY_END, settings=settings, spark=spark)
        lap("backfill")
        for night in NIGHTS:
            for name in [*NIGHT_STEPS, "export"]:
                with step_lease(settings, name, night):
                    step = export_day if name == "export" else None
                    results[f"{name}:{night}"] = (
                        step(night, settings) if step else run_step(name, night, settings, spark)
                    )
                lap(f"{name}:{night}")
        with step_lease(settings, "maintain", NIGHTS[-1]):
            maintained = maintain_lake(NIGHTS[-1], settings, spark)["tables"]
        lap("maintain")

    race = settings.path("lake_dir") / "_race"
    rows = spark.range(100).withColumn("day", F.lit("2011-12-01").cast("date"))
    lake.replace_slice(rows, race, "day = DATE'2011-12-01'", "day")
    committed: list[int] = []

    def write(day: str) -> None:
        frame = spark.range(100).withColumn("day", F.lit(day).cast("date"))
        committed.append(lake.replace_slice(frame, race, f"day = DATE'{day}'", "day"))

    writers = [threading.Thread(target=write, args=(f"2011-12-0{d}",)) for d in range(2, 6)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    lap("race")
    before = file_count(spark, race)
    set_retention(spark, race, 0)
    lake.replace_slice(rows, race, "day = DATE'2011-12-01'", "day")  # one file no version reads any more
    spark.sql(f"OPTIMIZE {lake.sql_path(race)}")
    spark.sql(f"VACUUM {lake.sql_path(race)}")
    after = file_count(spark, race)
    lap("race-maintain")
    print(
        "RESULT "
        + json.dumps(
            {
                "seconds": seconds,
                "leases_left": [str(p) for p in held_leases(settings.path("lake_dir"))],
                "race_committed": sorted(committed),
                "race_days": lake.read(spark, race).select("day").distinct().count(),
                "race_files": {"before": asdict(before), "after": asdict(after)},
                "maintained": maintained,
                "eda": {k: v["report"] for k, v in results.items() if k.startswith("eda:")},
                "export": {k: v["path"] for k, v in results.items() if k.startswith("export:")},
                "customers": {k: v.get("customers") for k, v in results.items() if k.startswith("label:")},
            },
            default=str,
        ),
        flush=True,
    )
    spark.stop()


def run_child(server, root: Path, nights: bool) -> dict:
    """``drive`` in a child process with the data dir on the bucket, under a fresh prefix: the
    landing, the lake, reports, exports, scratch folders and MLflow artifacts. Local: the MLflow
    SQLite store (the scheduled path has PostgreSQL) and the Airflow home."""
    local = root / "local"
    hex_prefix = uuid.uuid4().hex
    prefix = f"s3://lake/{hex_prefix}"
    if nights:
        with mock.patch.dict(os.environ, server.env):
            landing = s3_settings(server, local, hex_prefix).path("landing_dir")
            frame = generate_transactions(customers=300, days=45, seed=5, end_date=NIGHTS[-1])
            land_days(frame, landing, date(2011, 10, 27), NIGHTS[-1], "_SUCCESS")
    env = {
        **os.environ,
        **server.env,
        "RFM__PATHS__DATA_DIR": prefix,
        "RFM__PATHS__MLFLOW_DIR": str(local / "mlflow"),
        "RFM__PATHS__AIRFLOW_HOME": str(local / "airflow"),
        "RFM__STORAGE__ENDPOINT_URL": server.endpoint_url,
        "RFM__MLFLOW__ARTIFACTS_DESTINATION": f"{prefix}/mlflow",
        "RFM__CLUSTERING__K": "4",  # one fit on the retrain night: the sweep is tested elsewhere
        "RFM__MAINTENANCE__MIN_RETENTION_HOURS": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", f"from tests.test_object_storage_nights import drive; drive({nights})"],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    print(f"seconds: {result['seconds']}")
    return {"prefix": prefix, "local": local, "result": result, "server": server}


@pytest.fixture(scope="module")
def bucket_writes(s3_server, tmp_path_factory):
    """Spark alone on the bucket: racing writers, OPTIMIZE, VACUUM (about a minute; in CI)."""
    return run_child(s3_server, tmp_path_factory.mktemp("s3-writes"), nights=False)


@pytest.fixture(scope="module")
def bucket_run(s3_server, tmp_path_factory):
    """Two whole nights on the bucket (many minutes on a busy machine: heavy, `make test-s3`)."""
    return run_child(s3_server, tmp_path_factory.mktemp("s3-nights"), nights=True)


def test_writers_of_one_driver_racing_on_one_table_all_commit(bucket_writes) -> None:
    result = bucket_writes["result"]
    assert result["race_committed"] == [1, 2, 3, 4]  # four commits after the first, none lost
    assert result["race_days"] == 5
    assert delta_rs_alone(bucket_writes, "_race").to_pandas().shape[0] == 500


def test_optimize_and_vacuum_run_on_the_bucket(bucket_writes) -> None:
    files = bucket_writes["result"]["race_files"]
    # OPTIMIZE compacted each day's files into one; VACUUM (retention 0) deleted every object no version reads
    assert files["after"]["files"] == files["after"]["active_files"] == 5 < files["before"]["files"]
    operations = [c["operation"] for c in delta_rs_alone(bucket_writes, "_race").history()]
    assert "OPTIMIZE" in operations and operations.count("WRITE") == 6


def delta_rs_alone(run, name: str, version: int | None = None) -> deltalake.DeltaTable:
    """The table read from the bucket with nothing but delta-rs and the server's address and keys."""
    return read_with_delta_rs_alone(run["server"], f"{run['prefix']}/lake/{TABLES.get(name, name)}", version)


def keys(run, under: str) -> list[str]:
    return object_keys(run["server"], run["prefix"], under)


def read_object(run, key: str) -> bytes:
    prefix = run["prefix"].removeprefix("s3://lake/")
    return run["server"].client().get_object(Bucket="lake", Key=f"{prefix}/{key}")["Body"].read()


@pytest.mark.heavy
def test_the_lake_on_the_bucket_is_readable_by_delta_rs_alone(bucket_run) -> None:
    segments = delta_rs_alone(bucket_run, "gold_customer_segments").to_pandas()
    assert set(segments["snapshot_date"].astype(str)) >= {n.isoformat() for n in NIGHTS}
    per_night = segments.groupby(segments["snapshot_date"].astype(str)).size()
    customers = bucket_run["result"]["customers"]
    for night in NIGHTS:
        assert per_night[night.isoformat()] == customers[f"label:{night}"] > 0
    assert segments["cluster_label"].notna().all() and segments["clv_12m"].notna().all()
    for name in ("bronze_transactions", "silver_customer_rfm", "gold_segment_summary", "gold_published", "run_audit"):
        assert delta_rs_alone(bucket_run, name).version() >= 0, name


@pytest.mark.heavy
def test_nothing_but_the_local_only_folders_is_written_locally(bucket_run) -> None:
    written = {p.name for p in bucket_run["local"].iterdir()} if bucket_run["local"].exists() else set()
    assert written <= LOCAL_ALLOWED, written - LOCAL_ALLOWED
    files = [p for p in bucket_run["local"].rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in {".parquet", ".csv", ".png", ".html"}]
    assert not any(bucket_run["local"].rglob("_delta_log"))


@pytest.mark.heavy
def test_the_landing_and_the_scratch_folders_were_on_the_bucket(bucket_run) -> None:
    landing = keys(bucket_run, "landing")
    for night in NIGHTS:
        assert {f"date={night.isoformat()}/transactions.csv", f"date={night.isoformat()}/_SUCCESS"} <= set(landing)
    customers = bucket_run["result"]["customers"]
    assert all(customers[f"label:{night}"] > 0 for night in NIGHTS)  # validated and ingested from those objects
    assert keys(bucket_run, "tmp") == []  # the backfill's and the model's scratch folders: removed


@pytest.mark.heavy
def test_reports_exports_and_mlflow_artifacts_are_objects_in_the_bucket(bucket_run) -> None:
    reports = keys(bucket_run, "reports")
    for night in NIGHTS:
        assert f"date={night.isoformat()}/report.html" in reports
        assert any(k.startswith(f"date={night.isoformat()}/") and k.endswith(".png") for k in reports)
    exports = keys(bucket_run, "exports")
    for night in NIGHTS:
        assert f"snapshot_date={night.isoformat()}/{EXPORT_MANIFEST}" in exports  # the published pointer
        pointer = json.loads(read_object(bucket_run, f"exports/snapshot_date={night.isoformat()}/{EXPORT_MANIFEST}"))
        folder = pointer["path"].removeprefix(bucket_run["prefix"] + "/exports/")  # a later export may replace it
        assert folder.startswith(f"{VERSIONS_DIR}/") and any(
            k.startswith(folder + "/") and k.endswith(".csv") for k in exports
        )
    artifacts = keys(bucket_run, "mlflow")
    assert any("eda" in k and k.endswith("report.html") for k in artifacts), artifacts[:20]
    assert any(k.endswith("MLmodel") for k in artifacts), artifacts[:20]


@pytest.mark.heavy
def test_leases_were_objects_and_are_all_released(bucket_run) -> None:
    assert bucket_run["result"]["leases_left"] == []


@pytest.mark.heavy
def test_maintenance_compacted_and_vacuumed_on_the_bucket(bucket_run) -> None:
    tables = {t["table"]: t for t in bucket_run["result"]["maintained"]}
    bronze = tables["bronze_transactions"]
    assert bronze["before"]["files"] > 0
    assert bronze["after"]["active_files"] <= bronze["before"]["active_files"]
    assert bronze["after"]["files"] <= bronze["before"]["files"]
    assert delta_rs_alone(bucket_run, "bronze_transactions").to_pandas().shape[0] > 0  # still readable
