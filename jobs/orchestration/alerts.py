"""Tell someone: on a failed task or a failed (or timed-out) DAG run, post a Slack-compatible
message (``{"text": ...}``) to the webhook in ``alerts.webhook_url`` (``RFM__ALERTS__WEBHOOK_URL``;
empty: nothing is posted).

The message names the DAG, the run date, the task, the reason (for a failed validation, every
failed expectation with its counts, from the day's validation report) and links to the task log
and the Data Docs. ``on_failure`` is the tasks' and the DAG's ``on_failure_callback``; a run past
``dag.run_timeout_minutes`` fails as ``timed_out`` and lands there too.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import date
from typing import Any

from jobs.config import Settings, load_settings

log = logging.getLogger(__name__)


def data_docs_url(settings: Settings) -> str:
    """The Data Docs index: the configured URL, else the local file."""
    if settings.alerts.data_docs_url:
        return settings.alerts.data_docs_url
    index = settings.path("validation_dir") / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    return index.as_uri()


def validation_failures(settings: Settings, run_date: date) -> list[str]:
    """The failed expectations (with counts) of the day's latest validation, if it failed."""
    from jobs.adapters.expectations import read_latest_report

    report = read_latest_report(settings, run_date)
    return list(report.failures) if report is not None and not report.success else []


def run_date_of(context: dict[str, Any]) -> str:
    return str(context.get("ds") or getattr(context.get("dag_run"), "logical_date", "") or "?")[:10]


def failure_message(context: dict[str, Any], settings: Settings) -> str:
    """The alert's text, from an Airflow callback context (task or DAG level)."""
    dag_run = context.get("dag_run")
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(dag_run, "dag_id", None) or settings.dag.dag_id
    ti = context.get("ti") or context.get("task_instance")
    task = getattr(ti, "task_id", None)
    run_date = run_date_of(context)
    reason = context.get("exception") or context.get("reason") or "failed"
    what = f"task *{task}*" if task else "the DAG run"
    lines = [f":rotating_light: *{dag_id}* {run_date}: {what} failed", f"Reason: {reason}"]
    if context.get("reason") == "timed_out" or "timed_out" in str(reason):
        lines[0] = (
            f":hourglass: *{dag_id}* {run_date}: the run missed its deadline ({settings.dag.run_timeout_minutes} min)"
        )
    try:
        failures = validation_failures(settings, date.fromisoformat(run_date))
    except ValueError:
        failures = []
    if failures and task in (None, "validate"):
        lines.append(f"Failed expectations ({len(failures)}):")
        lines.extend(f"• {failure}" for failure in failures)
    log_url = getattr(ti, "log_url", None)
    if log_url:
        lines.append(f"Task log: {log_url}")
    lines.append(f"Data Docs: {data_docs_url(settings)}")
    return "\n".join(lines)


def post(url: str, payload: dict[str, Any], timeout: float) -> int:
    """POST ``payload`` as JSON; returns the HTTP status."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (URL from config)
        return response.status


def on_failure(context: dict[str, Any]) -> None:
    """``on_failure_callback``: post the alert; never raises (a broken webhook must not hide the failure)."""
    settings = load_settings()
    url = settings.alerts.webhook_url
    if not url:
        return
    try:
        post(url, {"text": failure_message(context, settings)}, settings.alerts.timeout_seconds)
    except Exception:  # noqa: BLE001
        log.exception("could not post the failure alert to the webhook")
