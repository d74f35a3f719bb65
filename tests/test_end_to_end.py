"""The real DAG, run by Airflow over generated days: a backfill run by Airflow's scheduler on a SQLite
metadata DB (`make run`'s path; jobs.orchestration.local.run_nights).

History is backfilled up to 2011-12-08; then the nights of Friday 2011-12-09 (a retrain: the first
champion) and Saturday 2011-12-10 (no trading, scored with the champion) run through the DAG;
Saturday is re-run (idempotence, with `make rerun`'s in-process path: the scheduler's re-run is
`test_make_run_twice`, a heavy test); finally a broken day must stop at validation with nothing
written.
"""

from __future__ import annotations

import os
from datetime import date

import pandas as pd
import pytest
from deltalake import DeltaTable

from harness.generate import generate_transactions
from jobs.adapters import tracking
from jobs.adapters.landing import write_day
from jobs.definitions import (
    DAG_RUN_TAG,
    GOLD_BUSINESS_COLUMNS,
    NIGHT_TYPE_TAG,
    SUPERSEDED_TAG,
    TABLES,
    TASK_TAG,
)
from jobs.ops.backfill import backfill
from jobs.ops.rerun import rerun
from jobs.ops.split import land_days
from jobs.orchestration.local import run_nights
from tests.conftest import settings_for
from tests.helpers import non_loopback, watching_listeners

pytestmark = pytest.mark.e2e

HISTORY_END = date(2011, 12, 8)
NIGHTS = [date(2011, 12, 9), date(2011, 12, 10)]
BUSINESS_COLUMNS = GOLD_BUSINESS_COLUMNS


def read_table(settings, name: str, day: date | None = None) -> pd.DataFrame:
    table = DeltaTable(str(settings.table_path(name)))
    filters = [("snapshot_date", "=", day)] if day else None
    return table.to_pandas(filters=filters)


def versions(settings) -> dict[str, int | None]:
    found = {}
    for name in TABLES:
        path = str(settings.table_path(name))
        found[name] = DeltaTable(path).version() if DeltaTable.is_deltatable(path) else None
    return found


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, spark):
    """A lake built by backfill + three real DAG nights (module-scoped: shared by the checks)."""
    settings = settings_for(tmp_path_factory.mktemp("e2e"))
    frame = generate_transactions(customers=400, days=60, seed=11, end_date=NIGHTS[-1])
    land_days(frame, settings.path("landing_dir"), date(2011, 10, 12), NIGHTS[-1], settings.landing.marker)
    backfill(settings.path("landing_dir"), HISTORY_END, settings=settings, spark=spark)
    with watching_listeners([os.getpid()]) as seen:  # this driver, the Connect server, Airflow, the tasks
        run_nights(settings, NIGHTS[0], NIGHTS[-1])
    LISTENERS.update(seen)
    return settings


LISTENERS: dict[str, set[str]] = {}


def test_every_listener_during_the_nights_was_on_loopback(pipeline):
    """Every LISTEN socket of this process's tree while the nights ran (sampled): the test's own
    Spark driver, the Spark Connect server (gRPC, driver RPC, block manager), Airflow's api-server
    and scheduler and the task processes: all on 127.0.0.1."""
    names = " ".join(LISTENERS)
    assert "java" in names and "airflow" in names, f"the night's servers were not seen: {LISTENERS}"
    assert non_loopback(LISTENERS) == {}, LISTENERS


def test_every_table_is_written_and_readable_without_spark(pipeline):
    for name, version in versions(pipeline).items():
        assert version is not None, f"table {name} was not written"
    bronze = DeltaTable(str(pipeline.table_path("bronze_transactions"))).to_pandas()
    assert bronze["transaction_date"].max() == date(2011, 12, 9), "Saturday has no rows, Friday is the last"


def test_each_night_labels_every_customer(pipeline):
    for night in NIGHTS:
        silver = read_table(pipeline, "silver_customer_rfm", night)
        gold = read_table(pipeline, "gold_customer_segments", night)
        assert len(silver) > 100, f"{night}: snapshot too small ({len(silver)})"
        assert sorted(gold["customer_id"]) == sorted(silver["customer_id"]), f"{night}: gold misses customers"
        assert gold["cluster_label"].notna().all() and gold["rfm_segment"].notna().all()
        assert set(gold["cluster_label"]) == {"VIP", "Loyal", "At-Risk", "Low-Value"}
        transitions = read_table(pipeline, "gold_segment_transitions", night)
        assert transitions.groupby("label_scheme")["customers"].sum().to_dict() == {
            "cluster": len(gold),
            "rfm": len(gold),
        }
        assert (gold["rfm_segment"] != "Unclassified").all()
        summary = read_table(pipeline, "gold_segment_summary", night)
        for scheme, rows in summary.groupby("label_scheme"):
            assert rows["customers"].sum() == len(gold), f"{night}/{scheme}: summary does not add up"


def test_each_night_scores_every_customers_value(pipeline):
    """The clv task ran after label: every gold customer has a predicted value, segments their means."""
    for night in NIGHTS:
        gold = read_table(pipeline, "gold_customer_segments", night)
        value_columns = ["p_alive", "p_purchase_90d", "expected_purchases_90d", "clv_12m", "at_risk_value"]
        assert gold[value_columns].notna().all().all(), night
        summary = read_table(pipeline, "gold_segment_summary", night)
        assert summary["mean_clv_12m"].notna().all(), night


def test_day_without_trading_still_advances_the_snapshot(pipeline):
    friday = read_table(pipeline, "silver_customer_rfm", NIGHTS[0]).set_index("customer_id").sort_index()
    saturday = read_table(pipeline, "silver_customer_rfm", NIGHTS[1]).set_index("customer_id").sort_index()
    assert list(saturday.index) == list(friday.index)
    assert (saturday["recency_days"] == friday["recency_days"] + 1).all()
    assert (saturday["monetary"] == friday["monetary"]).all() and (saturday["frequency"] == friday["frequency"]).all()


def test_one_mlflow_run_per_night_with_params_metrics_and_model(pipeline):
    client = tracking.client(pipeline)
    for night in NIGHTS:
        runs = tracking.runs_for_date(pipeline, pipeline.dag.dag_id, night)
        assert len(runs) == 1, f"{night}: {len(runs)} active MLflow runs"
        run = runs[0]
        assert run.data.params["algorithm"] == pipeline.clustering.algorithm and int(run.data.params["k"]) >= 4
        assert 0 < run.data.metrics["silhouette"] <= 1
        assert run.data.tags[TASK_TAG] == "cluster" and run.data.tags[DAG_RUN_TAG] != "cli"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        first_night = night == NIGHTS[0]
        assert run.data.tags[NIGHT_TYPE_TAG] == ("retrain" if first_night else "score")
        expected = {"clusters", "labels"} | ({"model", "sweep", "promotion"} if first_night else set())
        assert expected <= artifacts, f"{night}: artifacts {artifacts}"
        assert first_night == ("model" in artifacts), "only a retrain night logs a model"
        gold = read_table(pipeline, "gold_customer_segments", night)
        assert set(gold["mlflow_run_id"]) == {run.info.run_id}
        assert set(gold["model_version"]) == {run.data.params["model_version"]} == {"1"}


def test_each_night_has_an_eda_report_logged_to_its_mlflow_run(pipeline):
    for night in NIGHTS:
        run_id = tracking.runs_for_date(pipeline, pipeline.dag.dag_id, night)[0].info.run_id
        report = pipeline.path("reports_dir") / f"date={night}" / "report.html"
        logged = {a.path for a in tracking.client(pipeline).list_artifacts(run_id, "eda")}
        assert report.is_file() and "eda/report.html" in logged, f"{night}: report {report}, artifacts {logged}"


def test_rerunning_a_night_changes_no_business_column(pipeline, spark):
    night = NIGHTS[-1]
    before = read_table(pipeline, "gold_customer_segments", night)[BUSINESS_COLUMNS].sort_values("customer_id")
    summary_before = read_table(pipeline, "gold_segment_summary", night)
    old_run = tracking.runs_for_date(pipeline, pipeline.dag.dag_id, night)[0].info.run_id
    rerun(night, settings=pipeline, spark=spark)
    after = read_table(pipeline, "gold_customer_segments", night)[BUSINESS_COLUMNS].sort_values("customer_id")
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))
    key = ["label_scheme", "segment"]
    pd.testing.assert_frame_equal(
        summary_before.sort_values(key).reset_index(drop=True),
        read_table(pipeline, "gold_segment_summary", night).sort_values(key).reset_index(drop=True),
    )
    runs = tracking.runs_for_date(pipeline, pipeline.dag.dag_id, night)
    assert len(runs) == 1 and runs[0].info.run_id != old_run, "the re-run must supersede, not pile up"
    superseded = tracking.client(pipeline).get_run(old_run)
    assert superseded.info.lifecycle_stage == "deleted"
    assert superseded.data.tags[SUPERSEDED_TAG] == runs[0].info.run_id


def test_failed_validation_stops_the_night_and_writes_nothing(pipeline):
    bad_day = date(2011, 12, 11)
    rows = generate_transactions(customers=400, days=3, seed=11, end_date=date(2011, 12, 9))
    rows = rows[rows["InvoiceDate"].str.startswith("2011-12-09")].copy()
    rows["InvoiceDate"] = rows["InvoiceDate"].str.replace("2011-12-09", bad_day.isoformat())
    broken = len(rows) // 5  # far above the quarantine share of a row-level rule: the day fails
    rows.loc[rows.index[:broken], "Quantity"] = "0"
    write_day(pipeline.path("landing_dir"), bad_day, rows, pipeline.landing.marker)
    before = versions(pipeline)
    mlflow_runs_before = len(tracking.client(pipeline).search_runs([tracking.experiment_id(pipeline)]))
    with pytest.raises(RuntimeError, match=str(bad_day)):
        run_nights(pipeline, bad_day, bad_day)
    assert versions(pipeline) == before, "a failed validation must not write any table version"
    assert len(tracking.client(pipeline).search_runs([tracking.experiment_id(pipeline)])) == mlflow_runs_before
    from jobs.adapters.expectations import read_latest_report

    report = read_latest_report(pipeline, bad_day)
    assert report is not None and not report.success
    assert any("quantity" in failure and f"{broken} of" in failure for failure in report.failures), report.failures


def test_a_step_runs_alone_through_spark_submit(pipeline):
    """Airflow only orchestrates: the label step re-run by spark-submit gives the same gold rows."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from jobs.config import REPO_ROOT

    night = NIGHTS[1]
    before = read_table(pipeline, "gold_customer_segments", night)[BUSINESS_COLUMNS].sort_values("customer_id")
    venv_bin = Path(sys.executable).parent
    jars = subprocess.run(
        [sys.executable, "-m", "jobs.adapters.spark", "--jars"], check=True, capture_output=True, text=True
    )
    env = {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ['PATH']}",
        "RFM__PATHS__DATA_DIR": str(pipeline.path("data_dir")),
    }
    done = subprocess.run(
        [
            str(venv_bin / "spark-submit"),
            "--jars",
            jars.stdout.strip(),
            str(REPO_ROOT / "jobs" / "__main__.py"),
            "label",
            "--run-date",
            night.isoformat(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f'"run_date": "{night}"' in done.stdout
    after = read_table(pipeline, "gold_customer_segments", night)[BUSINESS_COLUMNS].sort_values("customer_id")
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))


def test_mlflow_opens_on_runs_named_after_the_night_with_descriptions(pipeline):
    """The experiment is a classic-ML one (experimentKind); each night's run is named
    '<night> <type>' and described (Airflow run, EDA report); models and versions are described."""
    from jobs.definitions import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, NOTE_TAG

    client = tracking.client(pipeline)
    experiment = client.get_experiment(tracking.experiment_id(pipeline))
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    for night in NIGHTS:
        run = tracking.runs_for_date(pipeline, pipeline.dag.dag_id, night)[0]
        assert run.info.run_name == f"{night} {run.data.tags[NIGHT_TYPE_TAG]}"
        note = run.data.tags[NOTE_TAG]
        assert str(night) in note and run.data.tags[DAG_RUN_TAG] in note and "eda/report.html" in note
    for name in (pipeline.model.registered_name, pipeline.clv.registered_name):
        model = client.get_registered_model(name)
        assert "@champion" in model.description, name
        version = client.get_model_version(name, "1")
        assert version.run_id in version.description and str(NIGHTS[0]) in version.description


def test_the_runs_name_their_night_and_reopening_airflow_adds_no_dag_version(pipeline):
    """Each backfill run's note names the night it processed; serializing the DAGs again as `make
    airflow` does (no launcher environment) finds the same DAG: still one version; segment_export
    was unpaused for the nights' events."""
    import sqlite3

    from jobs.orchestration.services import AirflowConfig, airflow_cli

    database = pipeline.path("airflow_home") / "airflow.db"

    def query(sql: str) -> list[tuple]:
        with sqlite3.connect(database) as db:
            return db.execute(sql).fetchall()

    notes = dict(
        query(
            "select r.run_id, n.content from dag_run r join dag_run_note n on n.dag_run_id = r.id "
            f"where r.dag_id = '{pipeline.dag.dag_id}' and r.run_type = 'backfill'"
        )
    )
    for night in NIGHTS:
        assert f"night {night}" in notes.values(), notes
    versions = f"select count(*) from dag_version where dag_id = '{pipeline.dag.dag_id}'"
    before = query(versions)[0][0]
    airflow_cli(AirflowConfig.sqlite(pipeline), "dags", "reserialize")
    assert query(versions)[0][0] == before == 1, "one DAG version: the launcher does not change the DAG"
    assert query("select is_paused from dag where dag_id = 'segment_export'") == [(0,)]


def task_logs(settings) -> dict[tuple[str, str], list[dict]]:
    """(run id, task id) -> the JSON records of the task's last attempt, from the Airflow log folder."""
    import json

    logs = {}
    folder = settings.path("airflow_home") / "logs" / f"dag_id={settings.dag.dag_id}"
    for run in sorted(folder.glob("run_id=*")):
        for task in sorted(run.glob("task_id=*")):
            last = max(task.glob("attempt=*.log"), key=lambda p: int(p.stem.split("=")[1]))
            records = []
            for line in last.read_text().splitlines():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    records.append({"level": "?", "event": line})
            logs[(run.name, task.name.split("=", 1)[1])] = records
    return logs


def test_successful_tasks_log_no_error_no_progress_bar_and_end_with_a_summary(pipeline):
    """A night's task logs, as the Airflow UI shows them: third-party stderr (MLflow's "Successfully
    registered model", progress bars, colour codes) is not filed as ERROR; every step task ends with
    its summary and the MLflow URL."""
    logs = task_logs(pipeline)
    nights = {run for run, _ in logs if "2011-12-10" in run or "2011-12-11" in run}  # backfill run ids: D+1
    assert len(nights) == 2, sorted(logs)
    for (run, task), records in logs.items():
        if run not in nights:
            continue
        events = [str(r.get("event", "")) for r in records]
        errors = [e[:200] for r, e in zip(records, events, strict=True) if r.get("level") in ("error", "critical")]
        assert not errors, f"{run}/{task}: ERROR lines in a successful task: {errors}"
        assert not [e for e in events if "\x1b[" in e or "\r" in e or "it/s]" in e], f"{run}/{task}: colour/progress"
        if task == "wait_for_landing":
            continue
        summary = [e for r, e in zip(records, events, strict=True) if r.get("logger") == "rfm.summary"]
        assert len(summary) >= 2, f"{run}/{task}: no summary lines"
        assert summary[-1].strip().startswith("MLflow: http"), f"{run}/{task}: no MLflow URL at the end"
        assert events.index(summary[-1]) > len(events) - 15, f"{run}/{task}: the summary is not at the end"
    registered = [
        e
        for (run, task), rs in logs.items()
        for r in rs
        if task == "cluster"
        for e in [str(r.get("event"))]
        if "registered model" in e
    ]
    assert registered, "MLflow's registration message is still in the log, at INFO"


@pytest.mark.heavy  # one more full night with a forced retrain (~5 min on an idle 2-core machine): make test-heavy
def test_every_dag_param_acts(pipeline):
    """Trigger the night of 12-10 (a score night) with force_retrain, full_recompute and k: it retrains
    at that k (MLflow) and recomputes the customer state from bronze in one overwrite (Delta history)."""
    import json
    import subprocess

    from jobs.definitions import PARAM_TAG_PREFIX
    from jobs.orchestration.services import AirflowConfig, venv_bin

    night = NIGHTS[-1]
    state = DeltaTable(str(pipeline.table_path("silver_customer_state")))
    before = state.version()
    conf = {"force_retrain": True, "full_recompute": True, "k": 5}
    done = subprocess.run(
        [venv_bin("airflow"), "dags", "test", pipeline.dag.dag_id, night.isoformat(), "-c", json.dumps(conf)],
        env=AirflowConfig.sqlite(pipeline).env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = tracking.runs_for_date(pipeline, pipeline.dag.dag_id, night)[0]
    assert run.data.tags[NIGHT_TYPE_TAG] == "retrain", "force_retrain: a score night retrained"
    from jobs.definitions import K_TAG, TRAINED_VERSION_TAG

    trained = tracking.client(pipeline).get_model_version(
        pipeline.model.registered_name, run.data.tags[TRAINED_VERSION_TAG]
    )
    assert trained.tags[K_TAG] == "5", (
        "k: the retrain fitted the fixed k (promoted or not, the night scores with the champion)"
    )
    assert run.data.tags[f"{PARAM_TAG_PREFIX}full_recompute"] == "True"
    assert run.info.run_name == f"{night} retrain"
    commits = [
        c for c in DeltaTable(str(pipeline.table_path("silver_customer_state"))).history() if c["version"] > before
    ]
    operations = {c["operation"] for c in commits}
    assert commits and "MERGE" not in operations, f"full_recompute: state rebuilt, not merged ({operations})"
    assert any(c.get("operationParameters", {}).get("mode") == "Overwrite" for c in commits), commits
