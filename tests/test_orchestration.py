"""Airflow glue without Airflow running: UI links, task-log summaries, params plumbing, services helpers."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from datetime import date

import pytest

from jobs.config import REPO_ROOT
from jobs.orchestration.links import data_docs_url, mlflow_run_url, mlflow_ui_base
from jobs.orchestration.services import HOST, free_port, start, stop
from jobs.orchestration.summaries import cluster_lines, label_lines
from jobs.orchestration.task import with_fixed_k
from tests.conftest import settings_for

CLUSTER_RESULT = {
    "run_date": "2011-12-08",
    "night_type": "retrain",
    "plan": "no champion yet",
    "model_version": "1",
    "k": 4,
    "silhouette": 0.4123,
    "mlflow_run_id": "abc",
    "promotion": {"promoted": True, "reason": "no champion yet", "new_version": "1"},
}


def test_mlflow_links_follow_the_tracking_server_or_the_configured_ui(tmp_path):
    local = settings_for(tmp_path)
    assert mlflow_ui_base(local) == "http://127.0.0.1:5000", "sqlite store: the `make mlflow-ui` address"
    server = settings_for(tmp_path, mlflow={"tracking_uri": "http://127.0.0.1:5123/"})
    assert mlflow_run_url(server, "7", "r1") == "http://127.0.0.1:5123/#/experiments/7/runs/r1"
    public = settings_for(tmp_path, mlflow={"tracking_uri": "http://mlflow:5000", "ui_url": "https://ml.example"})
    assert mlflow_ui_base(public) == "https://ml.example"


def test_mlflow_pages_open_the_runs_tab_and_compare_named_runs():
    from jobs.adapters.tracking import compare_page, runs_page

    base = "http://127.0.0.1:5123"
    assert runs_page(base, "7") == "http://127.0.0.1:5123/#/experiments/7/runs"
    assert compare_page(base, "7", ["a", "b"]) == (
        "http://127.0.0.1:5123/#/compare-runs?runs=%5B%22a%22%2C%20%22b%22%5D&experiments=%5B%227%22%5D"
    )


def test_data_docs_link_is_the_days_latest_page_under_the_plugin_prefix(tmp_path):
    settings = settings_for(tmp_path)
    site = settings.path("validation_dir") / "gx" / "uncommitted" / "data_docs" / "local_site" / "validations"
    assert data_docs_url(settings, date(2011, 12, 9)) is None
    for run_time in ("20261129T100000Z", "20261129T110000Z"):
        page = site / "transactions" / "2011-12-09" / run_time / "batch.html"
        page.parent.mkdir(parents=True)
        page.write_text("<html/>")
    (site / "transactions" / "2011-12-08" / "x").mkdir(parents=True)
    assert data_docs_url(settings, date(2011, 12, 9)) == (
        "/data-docs/validations/transactions/2011-12-09/20261129T110000Z/batch.html"
    )


def test_cluster_summary_says_what_was_chosen_and_why():
    sweep = [{"k": 5, "silhouette": 0.38, "chosen": False}, {"k": 4, "silhouette": 0.41, "chosen": True}]
    lines = cluster_lines(CLUSTER_RESULT, sweep, "highest silhouette among eligible k")
    assert 5 <= len(lines) <= 10
    assert lines[0] == "night 2011-12-08: retrain (no champion yet)"
    assert lines[1].startswith("  k=4") and lines[1].endswith("<- chosen") and "k=5" in lines[2]
    assert "version 1 promoted (no champion yet)" in "\n".join(lines)
    idle = {
        "previous_snapshot": "2011-12-07",
        "idle_customers": 4000,
        "champion_changes": 9,
        "candidate_changes": 170,
        "relabelled": 165,
        "relabelled_share": 0.04125,
    }
    refused = {
        **CLUSTER_RESULT,
        "promotion": {"promoted": False, "reason": "relabels 4.12%", "new_version": "2", "idle": idle},
    }
    text = "\n".join(cluster_lines(refused, sweep, None))
    assert "version 2 not promoted (relabels 4.12%)" in text
    assert "idle customers since 2011-12-07: 4000; label changes by ageing (champion) 9" in text
    assert "disagree on 165 (4.12%)" in text
    score_night = {**CLUSTER_RESULT, "night_type": "score", "promotion": None}
    assert len(cluster_lines(score_night, [], None)) == 2


def test_label_summary_lists_the_mapping():
    result = {
        "run_date": "2011-12-08",
        "customers": 300,
        "model_version": "1",
        "previous_snapshot": None,
        "cluster_labels": {"0": "VIP", "1": "Loyal", "2": "At-Risk", "3": "Low-Value"},
        "label_note": "ranked by centroid value",
        "stability": {"label_stability": 0.97, "note": "x"},
    }
    lines = label_lines(result)
    assert "  cluster 0 -> VIP" in lines and "  why: ranked by centroid value" in lines
    assert lines[-1] == "  stability: label_stability=0.970" and 5 <= len(lines) <= 10
    retrained = {
        **result,
        "idle_change_cause": "model change (version 1 -> 2; ...)",
        "stability": {"label_changes_cluster": 12.0},
    }
    assert "  idle customers' label changes 12 by: model change (version 1 -> 2; ...)" in label_lines(retrained)
    warned = {**result, "warnings": ["cluster segment VIP: 10.0 % -> 20.0 % (+10.0 points)"]}
    assert label_lines(warned)[-1] == "  warning: cluster segment VIP: 10.0 % -> 20.0 % (+10.0 points)"


def test_a_fixed_k_overrides_only_the_clustering_settings(tmp_path):
    settings = settings_for(tmp_path)
    assert with_fixed_k(settings, None) is settings
    assert with_fixed_k(settings, 5).clustering.k == 5 and settings.clustering.k is None


def test_a_stopped_process_group_leaves_no_child(tmp_path):
    """Stopping a service stops the workers it forked (its whole process group)."""
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
    proc = start("sleeper", [sys.executable, "-c", code], tmp_path / "sleeper.log", {})
    pgid = proc.process.pid
    time.sleep(1)
    assert subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.count("\n") == 2
    stop(proc)
    done = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    assert done.stdout.strip() == "", f"left over: {done.stdout}"


def test_a_service_that_exits_before_answering_fails_with_its_log(tmp_path):
    code = "import sys; print('no config here'); sys.exit(3)"
    with pytest.raises(RuntimeError, match="no config here"):
        start("broken", [sys.executable, "-c", code], tmp_path / "broken.log", {}, port=free_port(), timeout=30)


def test_secrets_are_written_for_their_owner_only(tmp_path):
    from jobs.orchestration.services import AirflowConfig, persisted_secret

    password = persisted_secret(tmp_path / "deep" / "admin-password")
    assert (tmp_path / "deep" / "admin-password").stat().st_mode & 0o777 == 0o600
    assert persisted_secret(tmp_path / "deep" / "admin-password") == password
    config = AirflowConfig(tmp_path / "home", "sqlite:///x.db", free_port(), password)
    env = config.env()
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("dags")
    assert (tmp_path / "home").stat().st_mode & 0o777 == 0o700
    for name in ("fernet.key", "passwords.json"):
        assert (tmp_path / "home" / name).stat().st_mode & 0o777 == 0o600, name


def test_free_port_is_on_loopback():
    port = free_port()
    with socket.socket() as sock:
        sock.bind((HOST, port))  # still free, and bindable on 127.0.0.1
    assert HOST == "127.0.0.1"


@pytest.mark.airflow
def test_the_links_plugin_loads_with_both_links():
    code = (
        "import sys; sys.path.insert(0, 'plugins'); import rfm_links as m; p = m.RfmLinksPlugin; "
        "print(sorted(l.name for l in p.global_operator_extra_links), p.fastapi_apps[0]['url_prefix'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "['Data Docs', 'MLflow run'] /data-docs", out.stderr[-2000:]


class FakeApi:
    """Answers the dag-run polls of follow_backfill from a script of states (a busy answer first)."""

    def __init__(self, script):
        self.script, self.notes = list(script), {}

    def request(self, method, path, **kwargs):
        self.notes[path.rsplit("/", 1)[1]] = kwargs["json"]["note"]

    def get(self, path, **params):
        from jobs.orchestration.services import ServerBusy

        answer = self.script.pop(0)
        if answer == "busy":
            raise ServerBusy("GET: 503 database is locked")
        runs = [
            {
                "logical_date": f"{day}T00:00:00Z",
                "state": state,
                "dag_run_id": f"backfill__{day}",
                "start_date": "s",
                "end_date": "e",
            }
            for day, state in answer.items()
        ]
        return {"dag_runs": runs}


class Alive:
    name = "airflow scheduler"

    def running(self):
        return True


def test_following_a_backfill_reports_each_night_and_stops_at_a_failure(monkeypatch, capsys):
    from jobs.orchestration import local

    monkeypatch.setattr("time.sleep", lambda s: None)
    api = FakeApi(
        [
            "busy",
            {"2011-12-08": "running"},
            {"2011-12-08": "success", "2011-12-09": "running"},
            {"2011-12-08": "success", "2011-12-09": "success"},
        ]
    )
    local.follow_backfill(api, "rfm", date(2011, 12, 8), date(2011, 12, 9), [Alive()])
    out = capsys.readouterr().out
    assert "== night 2011-12-08: success" in out and "== night 2011-12-09: success" in out
    assert api.notes == {"backfill__2011-12-08": "night 2011-12-08", "backfill__2011-12-09": "night 2011-12-09"}
    failing = FakeApi([{"2011-12-08": "success", "2011-12-09": "failed"}])
    with pytest.raises(RuntimeError, match="2011-12-09"):
        local.follow_backfill(failing, "rfm", date(2011, 12, 8), date(2011, 12, 9), [Alive()])


class BackfillsApi:
    """Answers GET /backfills with the scripted completed_at values, one per call (the last one for ever)."""

    def __init__(self, script: list) -> None:
        self.script = script

    def get(self, path: str, **params):
        assert path == "/backfills" and params["dag_id"] == "rfm"
        from jobs.orchestration.services import ServerBusy

        answer = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if answer == "busy":
            raise ServerBusy("GET: 503 database is locked")
        return {"backfills": [{"id": 1, "completed_at": answer}]}


def test_the_scheduler_stays_up_until_the_backfill_is_marked_completed(monkeypatch, capsys):
    """Otherwise the Airflow UI shows "Backfill in progress" for nights that are done."""
    from jobs.orchestration import local

    monkeypatch.setattr("time.sleep", lambda s: None)
    api = BackfillsApi(["busy", None, None, "2026-12-04T11:51:00Z"])
    assert local.wait_backfill_completed(api, "rfm")
    assert api.script == ["2026-12-04T11:51:00Z"], "asked until the backfill was completed"
    stuck = BackfillsApi([None])
    assert not local.wait_backfill_completed(stuck, "rfm", timeout=0.05, every=0)
    assert "not yet marked completed" in capsys.readouterr().out


def test_spark_drivers_bind_to_loopback_unless_told_otherwise(monkeypatch):
    from jobs.adapters.spark import loopback_driver, server_command

    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    assert loopback_driver() == {"spark.driver.bindAddress": HOST, "spark.driver.host": HOST}
    command = " ".join(server_command(settings_for_repo(), HOST, 15002))
    assert f"spark.driver.bindAddress={HOST}" in command and f"spark.driver.host={HOST}" in command
    monkeypatch.setenv("SPARK_LOCAL_IP", "spark-connect")  # compose: executors call the driver back by name
    assert loopback_driver()["spark.driver.host"] == "spark-connect"


def settings_for_repo():
    from jobs.config import load_settings

    return load_settings()


def test_only_loopback_listeners_pass_the_check():
    from tests.helpers import non_loopback

    listeners = {"java (1)": {"::ffff:127.0.0.1:7077", "127.0.0.1:1", "[::1]:2"}, "x (2)": {"0.0.0.0:8793"}}
    assert non_loopback(listeners) == {"x (2)": {"0.0.0.0:8793"}}
    assert non_loopback({"java (3)": {"::ffff:10.1.2.3:40000", "::1:5"}}) == {"java (3)": {"::ffff:10.1.2.3:40000"}}


def test_library_stderr_becomes_info_records_without_colour_or_progress_redraws(caplog):
    """What MLflow prints to stderr inside a task (registration messages, progress bars, coloured
    warnings) reaches the task log as INFO lines of third_party.stderr, one per line, plain."""
    import logging

    from jobs.orchestration.task import STDERR_LOGGER, plain_task_output

    with caplog.at_level(logging.INFO, logger=STDERR_LOGGER), plain_task_output():
        print("Successfully registered model 'rfm-segmentation'.", file=sys.stderr)
        sys.stderr.write("\rDownloading artifacts:   0%|   | 0/2\rDownloading artifacts: 100%|███| 2/2\n")
        sys.stderr.write("\x1b[1;33mcoloured\x1b[0m and a half")
    records = [r for r in caplog.records if r.name == STDERR_LOGGER]
    assert [r.getMessage() for r in records] == [
        "Successfully registered model 'rfm-segmentation'.",
        "Downloading artifacts: 100%|███| 2/2",
        "coloured and a half",
    ]
    assert {r.levelname for r in records} == {"INFO"}


def test_a_summary_that_cannot_be_written_is_a_warning_not_a_failed_task(tmp_path, caplog):
    """The step has succeeded: a result the summary cannot read must not fail (and retry) the task."""
    from jobs.orchestration.task import summary_lines

    with caplog.at_level(logging.WARNING, logger="rfm.summary"):
        lines = summary_lines(settings_for(tmp_path), "cluster", {"run_date": "2011-12-09"})
    assert lines == ["cluster 2011-12-09: done (summary unavailable)"]
    assert "no summary for cluster: KeyError" in caplog.text


def test_every_step_ends_with_what_it_did_and_the_mlflow_url(tmp_path):
    from jobs.orchestration.summaries import export_lines, step_lines

    settings = settings_for(tmp_path)
    lines = step_lines(
        settings,
        "ingest",
        {
            "run_date": "2011-12-09",
            "rows_in": 120,
            "quarantined": 2,
            "excluded": 3,
            "customers": 40,
            "bronze_transactions": 7,
            "silver_customer_rfm": 4,
        },
    )
    assert lines[0] == "ingest 2011-12-09: read 120 rows (2 quarantined; not purchases: 3); snapshot of 40 customers"
    assert "bronze_transactions v7" in lines[1] and "silver_customer_rfm v4" in lines[1]
    assert lines[-1].startswith("  MLflow: http://127.0.0.1:5000/#/experiments/"), lines
    run = step_lines(
        settings, "eda", {"run_date": "2011-12-09", "report": "r.html", "charts": ["a"], "mlflow_run_id": "abc"}
    )
    assert run[-1].endswith("/runs/abc")
    excluded = step_lines(
        settings, "ingest", {"run_date": "2011-12-09", "excluded": {"duplicate": 2, "cancellation": 0}}
    )
    assert "not purchases: duplicate 2)" in excluded[0]
    manifest = {
        "snapshot_date": "2011-12-09",
        "customers": 40,
        "files": [1, 2],
        "path": "/x",
        "campaigns": [{"campaign": "win-back", "rows": 5}],
    }
    assert export_lines([manifest], caught_up=1) == [
        "exported snapshot 2011-12-09: 40 customers, 2 segment files, campaigns: win-back 5 -> /x",
        "  1 of them caught up (published while no export ran)",
    ]
