"""DAG conventions, checked for every DAG file (each failure names the DAG and its file)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jobs.config import REPO_ROOT

DAGS_DIR = REPO_ROOT / "dags"
pytestmark = pytest.mark.airflow
EXPECTED_ORDER = ["wait_for_landing", "validate", "ingest", "cluster", "label", "clv", "eda"]


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_no_import_errors(dag_bag):
    assert not dag_bag.import_errors, "\n".join(f"{f}: {e}" for f, e in dag_bag.import_errors.items())
    assert dag_bag.dags, f"no DAG found in {DAGS_DIR}"


def _each_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_DIR))
    return [pytest.param(dag, id=dag_id) for dag_id, dag in sorted(bag.dags.items())]


@pytest.fixture(params=_each_dag())
def dag(request):
    return request.param


@pytest.fixture(scope="module")
def nightly(dag_bag):
    from jobs.config import load_settings

    return dag_bag.dags[load_settings().dag.dag_id]


def where(dag) -> str:
    return f"DAG {dag.dag_id!r} in {Path(dag.fileloc).relative_to(REPO_ROOT)}"


def test_has_tags_and_docs(dag):
    assert dag.tags, f"{where(dag)} has no tags"
    assert dag.doc_md, f"{where(dag)} has no doc_md"


def test_every_task_calls_the_step_it_is_named_after(dag):
    import inspect
    import re

    from jobs.cli import steps

    table = steps()
    for task in dag.tasks:
        if task.task_id == "wait_for_landing":  # the sensor: no step
            continue
        assert task.task_id in table, f"{where(dag)}: task {task.task_id} is named after no step of jobs/steps"
        step = table[task.task_id]
        source = inspect.getsource(task.python_callable)
        calls = re.search(rf"run_in_task\(\s*{step.__name__}\b", source)
        assert f"from {step.__module__} import {step.__name__}" in source and calls, (
            f"{where(dag)}: task {task.task_id} does not import and call {step.__module__}.{step.__name__}"
        )


def test_the_nightly_tasks_are_the_night_steps_in_order(nightly):
    from jobs.definitions import NIGHT_STEPS

    assert EXPECTED_ORDER == ["wait_for_landing", *NIGHT_STEPS]


def test_owner_retries_and_backoff(dag):
    for task in dag.tasks:
        assert task.owner not in ("", "airflow"), f"{where(dag)}: task {task.task_id} has the default owner"
        assert task.retries >= 1, f"{where(dag)}: task {task.task_id} has no retries"
        assert task.retry_exponential_backoff, f"{where(dag)}: task {task.task_id} retries without back-off"


def test_runs_never_overlap_or_skip_a_failed_day(dag):
    assert dag.max_active_runs == 1, f"{where(dag)}: max_active_runs={dag.max_active_runs}"
    for task in dag.tasks:
        assert task.depends_on_past, f"{where(dag)}: task {task.task_id} does not depend on the past"


def test_daily_timetable_has_a_real_interval(nightly):
    dag = nightly
    """A scheduled run with logical date D covers [D, D+1) and runs once D is over."""
    from airflow.timetables.base import TimeRestriction

    start = dag.start_date
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=start, latest=None, catchup=True)
    )
    assert info is not None, f"{where(dag)}: timetable yields no run"
    assert info.data_interval.start == start, f"{where(dag)}: first interval starts {info.data_interval.start}"
    assert info.data_interval.end - info.data_interval.start == timedelta(days=1), f"{where(dag)}: not daily"
    assert info.run_after == info.data_interval.end, f"{where(dag)}: runs before its day is over"
    assert str(info.data_interval.start.tzinfo) in ("UTC", "Timezone('UTC')"), f"{where(dag)}: not UTC"


def test_task_order(nightly):
    dag = nightly
    assert [t.task_id for t in _topological(dag)] == EXPECTED_ORDER, f"{where(dag)}: unexpected task order"
    for upstream, downstream in zip(EXPECTED_ORDER, EXPECTED_ORDER[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}, (
            f"{where(dag)}: {downstream} not after {upstream}"
        )


def _topological(dag):
    order, seen = [], set()
    ready = [t for t in dag.tasks if not t.upstream_task_ids]
    while ready:
        task = ready.pop(0)
        order.append(task)
        seen.add(task.task_id)
        ready += [
            dag.get_task(d) for d in sorted(task.downstream_task_ids) if dag.get_task(d).upstream_task_ids <= seen
        ]
    return order


def test_sensor_waits_then_fails(nightly):
    dag = nightly
    sensor = dag.get_task("wait_for_landing")
    assert sensor.mode == "reschedule", f"{where(dag)}: the landing sensor holds a worker slot"
    assert 0 < sensor.timeout < timedelta(days=1).total_seconds(), f"{where(dag)}: sensor timeout {sensor.timeout}"


def test_permanent_errors_fail_without_retry():
    from airflow.sdk.exceptions import AirflowFailException

    from jobs.errors import DataValidationError
    from jobs.orchestration.task import run_in_task

    def broken_day(day):
        raise DataValidationError(f"bad rows on {day}")

    with pytest.raises(AirflowFailException, match="bad rows on 2011-12-09"):
        run_in_task(broken_day, "2011-12-09")
    assert run_in_task(lambda day: {"day": day.isoformat()}, "2011-12-09") == {"day": "2011-12-09"}


def test_transient_errors_are_left_to_retries():
    from jobs.orchestration.task import run_in_task

    def flaky(day):
        raise OSError("disk busy")

    with pytest.raises(OSError):
        run_in_task(flaky, datetime(2011, 12, 9).date().isoformat())


def test_every_task_has_a_timeout_and_the_run_a_deadline_and_failures_alert(dag):
    """Issue 12, item 14: a hung task fails (and is retried); a stalled night fails; both alert."""
    from jobs.config import load_settings
    from jobs.orchestration.alerts import on_failure

    settings = load_settings()
    assert dag.dagrun_timeout == timedelta(minutes=settings.dag.run_timeout_minutes), where(dag)
    assert on_failure in _callbacks(dag.on_failure_callback), f"{where(dag)}: the DAG run does not alert"
    for task in dag.tasks:
        assert on_failure in _callbacks(task.on_failure_callback), f"{where(dag)}: {task.task_id} does not alert"
        if task.task_id in settings.dag.task_timeout_minutes:
            expected = timedelta(minutes=settings.dag.task_timeout_minutes[task.task_id])
            assert task.execution_timeout == expected, f"{where(dag)}: {task.task_id} timeout"
    sensors = {t.task_id for t in dag.tasks} - set(settings.dag.task_timeout_minutes)
    assert sensors <= {"wait_for_landing"}, f"{where(dag)}: tasks without a configured timeout: {sensors}"


def _callbacks(value) -> list:
    return value if isinstance(value, list) else [value]


def test_every_table_is_an_asset_declared_by_the_tasks_that_write_it(nightly):
    from jobs.definitions import TABLES, TABLES_WRITTEN

    declared: dict[str, set[str]] = {}
    for task in nightly.tasks:
        for outlet in task.outlets:
            declared.setdefault(outlet.name, set()).add(task.task_id)
            assert outlet.uri.startswith("file:///") and outlet.uri.endswith(TABLES[outlet.name]), outlet.uri
    assert set(declared) == set(TABLES), f"tables without an Asset: {set(TABLES) - set(declared)}"
    for name, task_ids in declared.items():
        writers = {step for step, tables in TABLES_WRITTEN.items() if name in tables}
        assert task_ids == writers, f"{name} declared on {task_ids}"


def test_segment_export_is_scheduled_on_the_publish_record_only_clv_updates(dag_bag, nightly):
    """The export follows the complete snapshot: the publish record's event comes from clv (after the
    CLV columns), never from label, whose gold writes would trigger it before clv and race with it."""
    export = dag_bag.dags["segment_export"]
    scheduled_on = {asset.uri for asset in export.timetable.asset_condition.objects}
    updating = [t.task_id for t in nightly.tasks if {o.uri for o in t.outlets} & scheduled_on]
    assert updating == ["clv"]
    assert scheduled_on == {o.uri for o in nightly.get_task("clv").outlets if o.name == "gold_published"}
    assert [t.task_id for t in export.tasks] == ["export"]


def test_start_and_end_dates_come_from_config():
    """RFM__DAG__START_DATE / END_DATE bound the scheduled nights (a catch-up covers exactly them)."""
    import os
    import subprocess
    import sys

    code = (
        "from airflow.dag_processing.dagbag import DagBag; d = DagBag(dag_folder='dags').dags['rfm_segmentation'];"
        "print(d.start_date.date(), d.end_date.date())"
    )
    env = {**os.environ, "RFM__DAG__START_DATE": "2011-12-08", "RFM__DAG__END_DATE": "2011-12-10"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "2011-12-08 2011-12-10", out.stderr[-2000:]


def test_manual_runs_take_params(nightly):
    params = nightly.params
    assert params["force_retrain"] is False and params["full_recompute"] is False and params["k"] is None
    assert params.get_param("k").schema["type"] == ["null", "integer"]
    nightly.params.validate()  # the defaults are valid


def test_the_publish_event_names_the_snapshot_and_the_record_version():
    from jobs.orchestration.assets import published_event

    result = {"gold_published": 7, "gold_customer_segments": 12, "customers": 300}
    assert published_event("2011-12-09", result) == {"snapshot_date": "2011-12-09", "gold_published_version": 7}
