"""What every DAG of the project shares: DAG arguments, task defaults (owner, retries with back-off, never skipping a
failed day, alerts) and per-task timeouts from ``conf/``. Checked for each DAG by tests/test_dags.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum

from jobs.config import Settings
from jobs.orchestration.alerts import on_failure


def task_defaults(settings: Settings) -> dict[str, Any]:
    """``default_args`` of every DAG: a failed task is retried with back-off, alerts, and blocks later runs."""
    return {
        "on_failure_callback": on_failure,
        "owner": settings.dag.owner,
        "depends_on_past": True,
        "retries": settings.dag.retries,
        "retry_delay": timedelta(seconds=settings.dag.retry_delay_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(seconds=settings.dag.max_retry_delay_seconds),
    }


def task_timeout(settings: Settings, task_id: str) -> timedelta:
    """The task's ``execution_timeout`` (``dag.task_timeout_minutes``)."""
    return timedelta(minutes=settings.dag.task_timeout_minutes[task_id])


def dag_defaults(settings: Settings, extra_tags: tuple[str, ...] = (), **task_overrides: Any) -> dict[str, Any]:
    """The ``DAG(...)`` arguments every DAG of the project shares: start date, one active run, tags,
    run deadline, failure alert and ``task_defaults`` (with ``task_overrides``)."""
    return {
        "start_date": pendulum.parse(settings.dag.start_date, tz="UTC"),
        "max_active_runs": 1,
        "tags": [*settings.dag.tags, *extra_tags],
        "dagrun_timeout": timedelta(minutes=settings.dag.run_timeout_minutes),
        "on_failure_callback": on_failure,
        "default_args": {**task_defaults(settings), **task_overrides},
    }
