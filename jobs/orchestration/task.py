"""What a DAG task calls: a step for the run date under its lease, with permanent errors made non-retryable."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from jobs.cli import quiet_third_party_loggers
from jobs.errors import PermanentError


def run_in_task(step: Callable[..., dict[str, Any]], run_date: str, **kwargs: Any) -> dict[str, Any]:
    """Run a step for ``run_date`` inside a task; a permanent error fails the task with no retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from jobs.adapters.lease import run_leased, step_name
    from jobs.adapters.spark import end_remote_session
    from jobs.config import load_settings
    from jobs.orchestration import lineage

    quiet_third_party_loggers()
    day = date.fromisoformat(run_date)
    settings = load_settings()
    try:
        result = run_leased(step, day, settings, **kwargs)
    except PermanentError as error:
        raise AirflowFailException(f"{type(error).__name__}: {error}") from error
    finally:
        end_remote_session()
    lineage.record(settings, step_name(step), day, result)  # the task's OpenLineage inputs and outputs
    return result


def with_fixed_k(settings: Any, k: int | None) -> Any:
    """``settings`` with ``clustering.k`` fixed to ``k`` (unchanged when ``k`` is None)."""
    if k is None:
        return settings
    return settings.model_copy(update={"clustering": settings.clustering.model_copy(update={"k": int(k)})})


def log_lines(lines: list[str]) -> None:
    """Write readable summary lines to the task log."""
    import logging

    log = logging.getLogger("rfm.summary")
    for line in lines:
        log.info(line)
