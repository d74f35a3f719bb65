"""The production path, for real: the scheduler runs the nightly DAG on PostgreSQL, tasks log to an
MLflow server, every location is on an S3 server.

Started and stopped here, all on 127.0.0.1 (jobs/orchestration/services.py, as `make prod-local
STORAGE=s3`): SeaweedFS (the session's S3 server: landing, lake, reports, exports, scratch folders
and the MLflow artifacts under one prefix of its ``lake`` bucket), PostgreSQL (one database and
role for Airflow, one for MLflow), `mlflow server --artifacts-destination s3://…`, a Spark
standalone master and worker, a Spark Connect server holding the driver on that master (the
compose shape), and Airflow's api-server, scheduler, dag-processor and triggerer with the
LocalExecutor. The Airflow processes run with ``SPARK_HOME`` pointing nowhere, so a task that
tried to start a driver of its own would fail: every Spark call goes through the Connect server.

The days land as objects; history is backfilled from them up to 2011-12-07; the DAG's start and end dates (config, through
RFM__DAG__START_DATE / END_DATE) make catch-up schedule exactly the nights Thursday 2011-12-08 and
Friday 2011-12-09: the first night retrains and registers the first model, the second scores
with it (a night without trading through the DAG is test_end_to_end's Saturday). The test unpauses the DAG and waits for the **scheduled** runs; it asserts
them through the REST API v2, then reads the champion alias back through the MLflow server and
checks that `segment_export`, scheduled on the publish-record Asset that `clv` updates, exported
each night after clv, with the published gold rows and CLV columns. Chromium then opens the
Airflow grid and the nights compared in MLflow, as a user sees them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, datetime
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import requests

from harness.generate import generate_transactions
from jobs import storage
from jobs.adapters import registry, tracking
from jobs.config import REPO_ROOT, load_settings
from jobs.definitions import NIGHT_TYPE_TAG, TABLES, days_between
from jobs.ops.split import land_days
from jobs.orchestration.object_store import BucketDeployment
from jobs.orchestration.services import AirflowApi, ServerBusy, production_stack
from jobs.steps.export import read_manifest
from tests.conftest import settings_from_env
from tests.helpers import delta_rs_alone, listening_addresses, non_loopback, object_keys

pytestmark = [pytest.mark.e2e, pytest.mark.airflow, pytest.mark.s3]

HISTORY_START, HISTORY_END = date(2011, 11, 1), date(2011, 12, 7)
# a retrain and a score night (a night without trading is test_end_to_end's Saturday 12-10; the
# retrain cadence over more nights is test_replay_real's, on real data)
NIGHTS = days_between(date(2011, 12, 8), date(2011, 12, 9))
ORDER = ["wait_for_landing", "validate", "ingest", "cluster", "label", "clv", "eda"]
DAG_ID, EXPORT_DAG_ID = "rfm_segmentation", "segment_export"
WAIT_SECONDS = 3600  # an upper bound for a loaded CI machine, not a performance assertion


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def wait_for(what: str, check, timeout: float = WAIT_SECONDS, every: float = 5):
    """Poll ``check`` until it returns something; a slow or busy API is asked again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = check()
        except (requests.RequestException, ServerBusy):
            found = None
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def deployment(s3_server):
    """Every location of the set on the session's S3 server, under a fresh prefix; its keys in this
    process's environment while the module runs (the checks read the bucket)."""
    bucket = BucketDeployment(s3_server, f"s3://lake/{uuid.uuid4().hex}")
    with mock.patch.dict(os.environ, s3_server.env):
        yield bucket


@pytest.fixture(scope="module")
def prepared(deployment, tmp_path_factory):
    """Generated days landed as objects, history up to HISTORY_END loaded from them (in a child
    process: its JVM exits)."""
    root = tmp_path_factory.mktemp("scheduled")
    env = deployment.pipeline_env(root / "stack")
    settings = settings_from_env(env)
    frame = generate_transactions(customers=300, days=45, seed=11, end_date=NIGHTS[-1])
    land_days(frame, settings.path("landing_dir"), HISTORY_START, NIGHTS[-1], settings.landing.marker)
    source = str(settings.path("landing_dir"))
    backfill = [sys.executable, "-m", "jobs.ops.backfill", "--source", source, "--until", HISTORY_END.isoformat()]
    subprocess.run(backfill, env={**os.environ, **env}, check=True, timeout=1800, cwd=REPO_ROOT)
    return root, env


@pytest.fixture(scope="module")
def scheduled(prepared, deployment):
    """The stack up on the bucket, both DAGs unpaused, the scheduled nights and their exports done."""
    root, env = prepared
    pipeline_env = {
        "RFM__DAG__START_DATE": NIGHTS[0].isoformat(),
        "RFM__DAG__END_DATE": NIGHTS[-1].isoformat(),
        "RFM__DAG__CATCHUP": "true",
        "RFM__DAG__RETRIES": "1",
        "RFM__DAG__RETRY_DELAY_SECONDS": "5",
        "RFM__LANDING__SENSOR_POKE_SECONDS": "5",
        "RFM__CLUSTERING__K_RANGE": "[4, 5]",  # a short sweep: the test is about the path, not the search
        "RFM__LINEAGE__TRANSPORT": str(root / "openlineage.jsonl"),  # the file transport of OpenLineage
        "SPARK_HOME": str(root / "no-spark-here"),  # no task can start a driver: Spark Connect only
    }
    with production_stack(root / "stack", pipeline_env, spark_cluster=True, bucket=deployment) as stack:
        api = AirflowApi(stack.airflow)
        wait_for(
            "both DAGs parsed",
            lambda: {d["dag_id"] for d in api.get("/dags")["dags"]} >= {DAG_ID, EXPORT_DAG_ID},
            timeout=600,
            every=2,
        )
        api.unpause(EXPORT_DAG_ID)
        api.unpause(DAG_ID)

        def nights_done():
            runs = api.dag_runs(DAG_ID)
            failed = [r for r in runs if r["state"] == "failed"]
            if failed:
                raise AssertionError(f"failed runs: {failed}\n{failed_task_logs(api, failed[0], stack)}")
            return runs if len(runs) == len(NIGHTS) and all(r["state"] == "success" for r in runs) else None

        runs = wait_for("the scheduled nights", nights_done)
        listeners = listening_addresses(stack.pids())  # while the set is up, its tasks' children gone or not
        tasks = {r["dag_run_id"]: api.task_instances(DAG_ID, r["dag_run_id"]) for r in runs}

        def exports_done():
            done = [r for r in api.dag_runs(EXPORT_DAG_ID) if r["state"] in ("success", "failed")]
            exported = {m["snapshot_date"] for m in (read_manifest(settings_from_env(env), n) for n in NIGHTS) if m}
            return (
                done
                if len(exported) == len(NIGHTS)
                and not [r for r in api.dag_runs(EXPORT_DAG_ID) if r["state"] in ("queued", "running")]
                else None
            )

        exports = wait_for("the nights' exports", exports_done, timeout=900)
        settings = settings_from_env(env, mlflow={"tracking_uri": stack.mlflow_url})
        yield {
            "root": root,
            "deployment": deployment,
            "runs": runs,
            "tasks": tasks,
            "exports": exports,
            "settings": settings,
            "stack": stack,
            "api": api,
            "lineage": root / "openlineage.jsonl",
            "listeners": listeners,
        }
    shutil.rmtree(stack.postgres.folder, ignore_errors=True)  # under root it may be outside ``root``


def failed_task_logs(api: AirflowApi, run: dict, stack) -> str:
    """The log of the first failed task of ``run`` (for the assertion message)."""
    for ti in api.task_instances(DAG_ID, run["dag_run_id"]):
        if ti["state"] in ("failed", "upstream_failed") and ti["try_number"]:
            path = f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}"
            return json.dumps(api.get(path, full_content=True))[-6000:]
    return "(no failed task log)"


def test_the_scheduler_ran_exactly_the_configured_nights(scheduled):
    runs = sorted(scheduled["runs"], key=lambda r: r["logical_date"])
    assert [when(r["logical_date"]).date() for r in runs] == NIGHTS
    assert {r["run_type"] for r in runs} == {"scheduled"}, "catch-up runs are scheduled runs, not dags test"
    assert {r["state"] for r in runs} == {"success"}
    for run in runs:  # the run is named after its interval's end, when it was allowed to start
        assert run["dag_run_id"] == f"scheduled__{run['data_interval_end'].replace('Z', '+00:00')}"
        assert when(run["start_date"]) > when(run["run_after"]), "real start times (not 2011)"
    starts = [when(r["start_date"]) for r in runs]
    ends = [when(r["end_date"]) for r in runs]
    assert all(e <= s for e, s in zip(ends, starts[1:], strict=False)), "nights must not overlap"


def test_every_listener_of_the_set_is_on_loopback(scheduled):
    """PostgreSQL, MLflow, Spark (master, worker, the Connect server's driver RPC and block manager)
    and Airflow's components, with every child: each LISTEN socket is on 127.0.0.1."""
    listeners = scheduled["listeners"]
    names = " ".join(listeners)
    assert "postgres" in names and "java" in names, f"the set's servers were not seen: {listeners}"
    assert len(listeners) >= 5, listeners
    assert non_loopback(listeners) == {}, listeners


def test_secrets_at_rest_are_readable_by_their_owner_only(scheduled):
    stack = scheduled["stack"]
    home = stack.airflow.home
    secrets = [home / "fernet.key", home / "passwords.json", stack.postgres.folder / "roles.json"]
    for path in secrets:
        assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
    assert home.stat().st_mode & 0o077 == 0
    hba = (stack.postgres.folder / "data" / "pg_hba.conf").read_text()
    rules = [line.split() for line in hba.splitlines() if line.strip() and not line.startswith("#")]
    assert rules and {rule[-1] for rule in rules} == {"scram-sha-256"}, rules


def test_tasks_ran_in_order_each_in_its_own_process(scheduled):
    pids = set()
    for run_id, tis in scheduled["tasks"].items():
        by_id = {ti["task_id"]: ti for ti in tis}
        assert set(by_id) == set(ORDER), run_id
        assert {ti["state"] for ti in tis} == {"success"}, run_id
        for before, after in zip(ORDER, ORDER[1:], strict=False):
            assert when(by_id[before]["end_date"]) <= when(by_id[after]["start_date"]), f"{run_id}: {before}/{after}"
        run_pids = [by_id[t]["pid"] for t in ORDER]
        assert all(run_pids) and len(set(run_pids)) == len(ORDER), f"{run_id}: pids {run_pids}"
        pids |= set(run_pids)
    assert os.getpid() not in pids
    for proc in scheduled["stack"].processes:
        assert proc.process.pid not in pids, f"a task ran inside {proc.name}"


def test_the_nights_spark_work_ran_on_the_standalone_cluster(scheduled):
    """The Connect server is an application of the standalone master, with the worker's cores; in
    standalone mode the driver runs no task, so every night's Spark work (Delta writes included)
    ran in its executors on the worker, and the Delta classes reached them."""
    cluster = scheduled["stack"].spark_cluster
    apps = [a for a in cluster.state()["activeapps"] if a["name"] == f"{load_settings().spark.app_name}-connect"]
    assert len(apps) == 1 and apps[0]["cores"] >= 1, cluster.state()["activeapps"]
    executor_logs = list((cluster.work_dir / apps[0]["id"]).glob("*/stderr"))
    assert executor_logs, "no executor of the Connect server ran on the worker"
    logs = "".join(path.read_text(errors="replace") for path in executor_logs)
    assert "ClassNotFoundException" not in logs


# Run in its own process: a Connect client session marks the whole interpreter as remote (pyspark's is_remote).
LARGE_FRAME_ROUND_TRIP = """
import json, sys
from pyspark.sql.connect.session import SparkSession
from jobs.adapters.spark import from_pandas
spark = SparkSession.builder.remote(sys.argv[1]).create()
try:
    frame = spark.range(100_000).selectExpr("cast(id as string) as customer_id", "cast(id as double) as x").toPandas()
    out = {"chunks": frame["customer_id"].array._pa_array.num_chunks}
    try:
        spark.createDataFrame(frame, schema="customer_id string, x double").count()
        out["plain"] = "ok"
    except TypeError as error:
        out["plain"] = str(error)
    back = from_pandas(spark, frame, "customer_id string, x double")
    out["rows"] = back.count()
    out["mismatches"] = back.filter("cast(customer_id as double) != x").count()
    print(json.dumps(out))
finally:
    spark.stop()
"""


def test_a_large_pandas_frame_goes_back_to_spark_over_connect(scheduled):
    """clv hands its scored pandas frame back to Spark. From about 10 k customers, ``toPandas()``
    over Connect gives strings backed by a multi-chunk Arrow array, which pyspark 4.1.4's
    ``createDataFrame`` rejects (``make bench-pipeline FACTORS=10 CONNECT=1`` failed there);
    ``from_pandas`` hands them over as objects."""
    done = subprocess.run(
        [sys.executable, "-c", LARGE_FRAME_ROUND_TRIP, scheduled["stack"].spark_url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["chunks"] > 1, f"the frame is not multi-chunk, so it proves nothing: {out}"
    assert out["rows"] == 100_000 and out["mismatches"] == 0, out
    assert "ChunkedArray" in out["plain"], (
        f"plain createDataFrame now takes a multi-chunk column ({out}): pyspark has the SPARK-46776 fix, "
        "so jobs.adapters.spark.from_pandas can go"
    )


TASK_SESSION = """
import json
from jobs.adapters.spark import connect_session
from jobs.config import load_settings
spark = connect_session(load_settings())
try:
    print(json.dumps({"partitions": spark.conf.get("spark.sql.shuffle.partitions"), "rows": spark.range(10).count(),
                      "policies": [[p.max_retries, p.max_backoff] for p in spark.client.get_retry_policies()]}))
finally:
    spark.stop()
"""


def test_a_task_session_carries_its_session_conf_and_the_bounded_retry_policy(scheduled):
    """``connect_session`` installs the retry policy before its first call, then sets the conf's
    session-level keys through it: a value the server was not started with reaches the session."""
    spark_conf = load_settings().spark
    env = {
        **os.environ,
        "RFM__SPARK__REMOTE": scheduled["stack"].spark_url,
        "RFM__SPARK__CONF": json.dumps({"spark.sql.shuffle.partitions": 7}),
    }
    done = subprocess.run(
        [sys.executable, "-c", TASK_SESSION], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert spark_conf.conf["spark.sql.shuffle.partitions"] != 7, "the override must differ from the server's value"
    assert out["partitions"] == "7" and out["rows"] == 10, out
    assert out["policies"] == [[spark_conf.connect_max_retries, round(spark_conf.connect_max_backoff_seconds * 1000)]]


def test_tasks_logged_to_the_mlflow_server_and_the_champion_reads_back(scheduled):
    settings = scheduled["settings"]
    champion = registry.champion(settings)  # through http://127.0.0.1:<port>
    assert champion is not None and champion.version == "1"
    run_ids = scheduled["tasks"]
    for night, run_id in zip(NIGHTS, sorted(run_ids), strict=True):
        found = tracking.runs_for_date(settings, DAG_ID, night)
        assert len(found) == 1, f"{night}: {len(found)} MLflow runs"
        assert found[0].data.tags["airflow.run_id"] == run_id
        kind = "retrain" if night == NIGHTS[0] else "score"
        assert found[0].data.tags[NIGHT_TYPE_TAG] == kind, f"{night}: the first night trains, the others score"
    experiment = tracking.client(settings).get_experiment_by_name(settings.mlflow.experiment)
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), "artifacts go through the server"
    assert champion.run_id in {tracking.runs_for_date(settings, DAG_ID, NIGHTS[0])[0].info.run_id}


def test_segment_export_ran_after_each_complete_snapshot_with_the_published_rows(scheduled):
    from jobs.adapters.publish import published_versions
    from jobs.definitions import EXPORT_CLV_COLUMNS, EXPORT_COLUMNS

    settings = scheduled["settings"]
    exports = scheduled["exports"]
    assert exports and {r["state"] for r in exports} == {"success"}
    assert {r["run_type"] for r in exports} == {"asset_triggered"}
    published = published_versions(settings.table_path("gold_published"))
    clv_ends = {
        run_id: when(next(ti for ti in tis if ti["task_id"] == "clv")["end_date"])
        for run_id, tis in scheduled["tasks"].items()
    }
    for night, run_id in zip(NIGHTS, sorted(clv_ends), strict=True):
        manifest = read_manifest(settings, night)
        assert manifest is not None, f"{night} was not exported"
        assert datetime.fromisoformat(manifest["exported_at"]) >= clv_ends[run_id].replace(microsecond=0)
        version = published[night]["gold_customer_segments"]
        assert manifest["source_version"] == version, "the published version, written by clv"
        gold = storage.delta_table(settings.table_path("gold_customer_segments"), version).to_pandas(
            filters=[("snapshot_date", "=", night)]
        )
        assert manifest["customers"] == len(gold) > 100
        assert manifest["rows_per_scheme"] == {"cluster": len(gold), "rfm": len(gold)}
        assert manifest["columns"] == EXPORT_COLUMNS + EXPORT_CLV_COLUMNS, "the CLV columns are exported"
        folder = storage.location(manifest["path"], settings.storage)  # the version the pointer names
        exported = pd.concat([pd.read_parquet((folder / f["parquet"]).open("rb")) for f in manifest["files"]])
        assert len(exported) == 2 * len(gold) and exported["clv_12m"].notna().all()


def test_every_location_was_on_the_bucket_and_only_logs_and_service_state_are_local(scheduled):
    """The landing objects, the lake, the reports, the exports and the MLflow artifacts are keys on
    the S3 server; under the local folder: PostgreSQL, Airflow's home and logs, the Spark worker's
    work dir, the lineage file."""
    deployment, root = scheduled["deployment"], scheduled["root"]
    server = deployment.server
    landing = set(object_keys(server, deployment.root, "landing"))
    assert {f"date={n.isoformat()}/{m}" for n in NIGHTS for m in ("transactions.csv", "_SUCCESS")} <= landing
    reports = object_keys(server, deployment.root, "reports")
    assert {f"date={n.isoformat()}/report.html" for n in NIGHTS} <= set(reports)
    artifacts = object_keys(server, deployment.root, "mlflow")
    assert any(k.endswith("MLmodel") for k in artifacts) and any(k.endswith("report.html") for k in artifacts)
    assert object_keys(server, deployment.root, "tmp") == []  # scratch folders removed
    local = {p.name for p in (root / "stack").iterdir()}
    assert local <= {"postgres", "services", "airflow", "spark-worker"}, local
    validation = object_keys(server, deployment.root, "validation")
    for night in NIGHTS:
        assert f"results/date={night.isoformat()}/latest.json" in validation
        assert any(f"/{night.isoformat()}/" in k and k.endswith(".html") for k in validation)  # its Data Docs page
    written = [p for p in root.rglob("*") if p.is_file()]
    lake_like = [p for p in written if p.suffix in {".parquet", ".csv", ".png", ".html"} or "_delta_log" in p.parts]
    assert lake_like == [], lake_like[:10]


def test_the_lake_on_the_bucket_is_readable_by_delta_rs_alone(scheduled):
    deployment = scheduled["deployment"]
    uri = f"{deployment.root}/lake/{TABLES['gold_customer_segments']}"
    segments = delta_rs_alone(deployment.server, uri).to_pandas()
    per_night = segments.groupby(segments["snapshot_date"].astype(str)).size()
    for night in NIGHTS:
        manifest = read_manifest(scheduled["settings"], night)
        assert per_night[night.isoformat()] == manifest["customers"] > 100, night


def test_each_task_emitted_openlineage_events_with_its_tables_and_versions(scheduled):
    """The lineage graph of each night: landing -> validate; landing -> ingest -> bronze/silver ->
    cluster -> clusters -> label -> gold -> clv -> gold + publish record; versions on the Delta tables."""
    settings = scheduled["settings"]
    events = [json.loads(line) for line in scheduled["lineage"].read_text().splitlines() if line.strip()]
    table = lambda name: str(settings.table_path(name))  # noqa: E731
    landing = str(settings.path("landing_dir"))
    for run_id in scheduled["tasks"]:
        complete = {}
        for event in events:
            run_facets = event["run"].get("facets", {})
            dag_run = run_facets.get("airflow", {}).get("dagRun", {})
            if event["eventType"] == "COMPLETE" and dag_run.get("run_id") == run_id:
                complete[event["job"]["name"].removeprefix(f"{DAG_ID}.")] = event
        assert set(ORDER) <= set(complete), f"{run_id}: COMPLETE events of {sorted(complete)}"
        io = {
            task: (
                {d["name"]: d.get("facets", {}).get("version", {}).get("datasetVersion") for d in e.get("inputs", [])},
                {d["name"]: d.get("facets", {}).get("version", {}).get("datasetVersion") for d in e.get("outputs", [])},
            )
            for task, e in complete.items()
        }
        assert [name for name in io["validate"][0] if name.startswith(landing)], f"{run_id}: validate reads landing"
        assert [name for name in io["ingest"][0] if name.startswith(landing)]
        assert io["ingest"][1][table("bronze_transactions")] is not None
        assert io["ingest"][1][table("silver_customer_rfm")] is not None
        assert io["cluster"][0][table("silver_customer_rfm")] == io["ingest"][1][table("silver_customer_rfm")]
        assert io["cluster"][1][table("silver_customer_clusters")] is not None
        assert io["label"][0][table("silver_customer_clusters")] == io["cluster"][1][table("silver_customer_clusters")]
        assert set(io["label"][1]) == {
            table(n)
            for n in (
                "gold_customer_segments",
                "gold_segment_summary",
                "gold_segment_transitions",
                "gold_published",
                "run_audit",
            )
        }
        assert io["clv"][0][table("gold_customer_segments")] == io["label"][1][table("gold_customer_segments")]
        assert io["clv"][1][table("gold_published")] is not None


def test_chromium_renders_the_airflow_grid_and_the_mlflow_compare_view(scheduled, tmp_path):
    """Chromium against the running services: the nightly DAG's grid (behind the login) and the
    nights compared in MLflow. (The docs' screenshots come from a real replay: `make screenshots`.)"""
    from playwright.sync_api import sync_playwright

    stack, settings = scheduled["stack"], scheduled["settings"]
    token = requests.post(
        f"{stack.airflow.url}/auth/token",
        timeout=30,
        json={"username": "admin", "password": stack.airflow.admin_password},
    ).json()["access_token"]
    runs = [tracking.runs_for_date(settings, DAG_ID, night)[0] for night in NIGHTS]
    experiment = runs[0].info.experiment_id
    compare = tracking.compare_page(stack.mlflow_url, experiment, [r.info.run_id for r in runs])
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_cookies([{"name": "_token", "value": token, "url": stack.airflow.url}])
        page = context.new_page()
        page.goto(f"{stack.airflow.url}/dags/{DAG_ID}")
        page.get_by_text("eda").first.wait_for(timeout=120_000)  # the grid's task column
        page.wait_for_timeout(2000)
        page.screenshot(path=str(tmp_path / "airflow-grid.png"))
        page.goto(compare)
        page.get_by_text("silhouette").first.wait_for(timeout=120_000)  # a metric row of the comparison
        page.wait_for_timeout(2000)
        page.screenshot(path=str(tmp_path / "mlflow-compare.png"), full_page=True)
        browser.close()
    for name in ("airflow-grid.png", "mlflow-compare.png"):
        assert (tmp_path / name).stat().st_size > 20_000, name


def test_postgres_gives_each_service_its_own_database_and_role():
    """Separate roles: the Airflow role cannot open MLflow's database (CONNECT revoked from PUBLIC)."""
    import sqlalchemy as sa

    from jobs.orchestration.services import Postgres

    postgres = Postgres(Path(tempfile.mkdtemp(prefix="rfm-pg-"))).start()
    try:
        for db in ("airflow", "mlflow"):
            with sa.create_engine(postgres.url(db)).connect() as conn:
                assert conn.execute(sa.text("select current_user, current_database()")).one() == (db, db)
        intruder = postgres.url("mlflow").replace(
            f"mlflow:{postgres.passwords['mlflow']}", f"airflow:{postgres.passwords['airflow']}"
        )
        with pytest.raises(sa.exc.OperationalError, match="permission denied"):
            sa.create_engine(intruder).connect()
        listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{postgres.port}" in listening and f"0.0.0.0:{postgres.port}" not in listening
    finally:
        postgres.stop()
        shutil.rmtree(postgres.folder, ignore_errors=True)
