"""OpenLineage of the DAG tasks (jobs/orchestration/lineage.py): datasets with versions, transport from config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from jobs.config import REPO_ROOT
from jobs.orchestration.lineage import airflow_env, step_lineage, transport_config

DAY = date(2011, 12, 9)


def test_step_lineage_reads_and_writes_tables_with_their_versions(settings):
    table = lambda name: str(settings.table_path(name))  # noqa: E731
    clv = step_lineage(
        settings,
        "clv",
        DAY,
        {
            "silver_customer_state": 10,
            "gold_customer_segments": 13,
            "gold_segment_summary": 7,
            "gold_forecast_scorecard": 3,
            "gold_published": 5,
            "read_versions": {"silver_customer_state": 10, "gold_customer_segments": 12},
        },
    )
    assert [(r.path, r.version) for r in clv.inputs] == [
        (table("silver_customer_state"), 10),
        (table("gold_customer_segments"), 12),
    ], "bronze was not read"
    rerun = step_lineage(settings, "clv", DAY, {"read_versions": {"bronze_transactions": 9}})
    assert [(r.path, r.version) for r in rerun.inputs] == [(table("bronze_transactions"), 9)]
    assert [(r.path, r.version) for r in clv.outputs] == [
        (table("gold_customer_segments"), 13),
        (table("gold_segment_summary"), 7),
        (table("gold_forecast_scorecard"), 3),
        (table("gold_published"), 5),
        (table("run_audit"), None),
    ]
    ingest = step_lineage(settings, "ingest", DAY, {"bronze_transactions": 4, "silver_customer_state": 6})
    assert ingest.inputs[0].path.endswith("landing/date=2011-12-09") and ingest.inputs[0].version is None
    assert (table("silver_customer_state"), None) in [(r.path, r.version) for r in ingest.inputs], (
        "read and written: the result's version is the written one, not reported as read"
    )
    assert (table("bronze_transactions"), 4) in [(r.path, r.version) for r in ingest.outputs]


def test_transport_from_config(settings, tmp_path):
    assert transport_config(None, tmp_path) is None
    assert transport_config("http://127.0.0.1:5000", tmp_path) == {"type": "http", "url": "http://127.0.0.1:5000"}
    assert transport_config("lineage/events.jsonl", tmp_path)["log_file_path"] == str(tmp_path / "lineage/events.jsonl")
    assert airflow_env(settings) == {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}  # null in conf/: off
    env = airflow_env(settings, "/tmp/x.jsonl")
    assert json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"]) == {
        "type": "file",
        "log_file_path": "/tmp/x.jsonl",
        "append": True,
    }
    assert env["AIRFLOW__OPENLINEAGE__EXTRACTORS"] == "jobs.orchestration.lineage.StepLineageExtractor"


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def datasets(event: dict, side: str) -> dict[str, str | None]:
    return {d["name"]: d.get("facets", {}).get("version", {}).get("datasetVersion") for d in event.get(side, [])}


@pytest.mark.airflow
def test_tasks_emit_their_tables_and_versions_to_the_configured_transport(settings, tmp_path):
    """`airflow dags test` of a probe DAG (tests/lineage_dags) with the file transport from RFM__LINEAGE__TRANSPORT."""
    events_file = tmp_path / "openlineage.jsonl"
    home = tmp_path / "airflow"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "RFM__PATHS__DATA_DIR": str(settings.path("data_dir")),
        "RFM__LINEAGE__TRANSPORT": str(events_file),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "tests" / "lineage_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    code = (
        "import json; from jobs.config import load_settings; from jobs.orchestration.lineage import airflow_env;"
        "print(json.dumps(airflow_env(load_settings())))"
    )
    env.update(
        json.loads(
            subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
        )
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=600)
    run = subprocess.run(
        [airflow, "dags", "test", "lineage_probe", DAY.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    events = read_events(events_file)
    complete = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
    assert {"lineage_probe.cluster", "lineage_probe.label"} <= set(complete)
    assert {e["job"]["namespace"] for e in events} == {settings.lineage.namespace}
    table = lambda name: str(settings.table_path(name))  # noqa: E731
    cluster, label = complete["lineage_probe.cluster"], complete["lineage_probe.label"]
    assert datasets(cluster, "inputs") == {table("silver_customer_rfm"): "3"}
    assert datasets(cluster, "outputs") == {table("silver_customer_clusters"): "5"}
    assert datasets(label, "inputs") == {
        table("silver_customer_rfm"): "3",
        table("silver_customer_clusters"): "5",
        table("gold_customer_segments"): None,
    }
    assert datasets(label, "outputs") == {
        table("gold_customer_segments"): "8",
        table("gold_segment_summary"): "9",
        table("gold_segment_transitions"): "2",
        table("gold_published"): "4",
        table("run_audit"): None,
    }
    assert {d["namespace"] for e in (cluster, label) for d in e["inputs"] + e["outputs"]} == {"file"}
    # a task that ran no step: no datasets (no outlets declared either)
    assert not complete["lineage_probe.untracked"].get("outputs")
