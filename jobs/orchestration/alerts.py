"""Tell someone: on a failed task or a failed (or timed-out) DAG run, post a Slack-compatible
message (``{"text": ...}``) to the webhook in ``alerts.webhook_url`` (``RFM__ALERTS__WEBHOOK_URL``;
empty: nothing is posted).

The message names the DAG, the run date, the task, the reason (the exception's type; for a failed
validation, every failed expectation with its counts, from the day's validation report; for a
failed label gate, every failed meaning check with its per-label figures) and links
to the task log and the Data Docs. ``on_failure`` is the tasks' and the DAG's
``on_failure_callback``; a run past ``dag.run_timeout_minutes`` fails as ``timed_out`` and lands
there too.

Landed data never reaches the chat (issue 27, item 6): the message carries counts, names and
links, never raw rows, cell values or exception text (which may quote them: the task log has
those), and every piece is escaped for Slack's markup (``&``, ``<``, ``>``), so a landed
``<!channel>`` or ``<https://evil|click>`` can only ever be shown as text.
"""

from __future__ import annotations

import logging
import re
from datetime import date
from typing import Any

from jobs import storage
from jobs.adapters.webhook import post, slack_escape
from jobs.config import Settings, load_settings
from jobs.definitions import DATA_DOCS_URL_PREFIX
from jobs.errors import LabelGateError

log = logging.getLogger(__name__)


def data_docs_url(settings: Settings) -> str:
    """The Data Docs index: the configured URL; else the local file, or for a site on a bucket
    the index as the Airflow API server serves it (``plugins/rfm_links.py``), absolute when
    Airflow's ``[api] base_url`` is known."""
    if settings.alerts.data_docs_url:
        return settings.alerts.data_docs_url
    from jobs.adapters.expectations import data_docs_site

    index = data_docs_site(settings) / "index.html"
    if storage.is_remote(index):
        return f"{airflow_base_url()}{DATA_DOCS_URL_PREFIX}/index.html"
    return index.as_uri()


def airflow_base_url() -> str:
    """Airflow's ``[api] base_url`` without its trailing slash ('' outside Airflow or unset)."""
    try:
        from airflow.configuration import conf

        return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")
    except Exception:  # noqa: BLE001 - an alert never fails for want of a link
        return ""


def validation_failures(settings: Settings, run_date: date) -> list[str]:
    """The failed expectations (with counts) of the day's latest validation, if it failed."""
    from jobs.adapters.expectations import read_latest_report

    report = read_latest_report(settings, run_date)
    return list(report.failures) if report is not None and not report.success else []


_RULE_SUFFIX = re.compile(r" \[rule [\w.-]+: \w+\]$")
_VALUES_FROM = (", e.g. ", " could not be evaluated (", ": observed ")


def without_values(failure: str) -> str:
    """A validation failure line (``jobs.adapters.expectations.describe_failure``) without the
    landed values it may quote: its examples, error text and observed value are cut off; the
    expectation, its counts and its ``[rule …]`` stay."""
    suffix = _RULE_SUFFIX.search(failure)
    head = failure[: suffix.start()] if suffix else failure
    for marker in _VALUES_FROM:
        if marker in head:
            head = head[: head.index(marker)] + (" could not be evaluated" if "evaluated" in marker else "")
    return head + (suffix.group(0) if suffix else "")


def reason_of(context: dict[str, Any]) -> str:
    """Why it failed, without the exception's message (which may quote landed values)."""
    exception = context.get("exception")
    if isinstance(exception, BaseException):
        return f"{type(exception).__name__} (the message is in the task log)"
    reason = str(exception or context.get("reason") or "failed")
    return reason if re.fullmatch(r"[\w .:-]{1,80}", reason) else "failed (see the task log)"


def label_gate_failures(context: dict[str, Any]) -> list[str]:
    """The failed label checks of a failed label gate (the task's exception or its cause): label
    names and aggregates, no customer's values."""
    exception = context.get("exception")
    for error in (exception, getattr(exception, "__cause__", None)):
        if isinstance(error, LabelGateError):
            return error.checks
    return []


def run_date_of(context: dict[str, Any]) -> str:
    return str(context.get("ds") or getattr(context.get("dag_run"), "logical_date", "") or "?")[:10]


def failure_message(context: dict[str, Any], settings: Settings) -> str:
    """The alert's text, from an Airflow callback context (task or DAG level)."""
    dag_run = context.get("dag_run")
    dag_id = getattr(context.get("dag"), "dag_id", None) or getattr(dag_run, "dag_id", None) or settings.dag.dag_id
    ti = context.get("ti") or context.get("task_instance")
    task = getattr(ti, "task_id", None)
    run_date = run_date_of(context)
    reason = reason_of(context)
    what = f"task *{slack_escape(task)}*" if task else "the DAG run"
    dag, day = slack_escape(dag_id), slack_escape(run_date)
    lines = [f":rotating_light: *{dag}* {day}: {what} failed", f"Reason: {slack_escape(reason)}"]
    if context.get("reason") == "timed_out" or "timed_out" in reason:
        lines[0] = f":hourglass: *{dag}* {day}: the run missed its deadline ({settings.dag.run_timeout_minutes} min)"
    try:
        failures = validation_failures(settings, date.fromisoformat(run_date))
    except ValueError:
        failures = []
    if failures and task in (None, "validate"):
        lines.append(f"Failed expectations ({len(failures)}):")
        lines.extend(f"• {slack_escape(without_values(failure))}" for failure in failures)
    checks = label_gate_failures(context)
    if checks:
        lines.append(f"Failed label checks ({len(checks)}), nothing published; readers keep the last good snapshot:")
        lines.extend(f"• {slack_escape(check)}" for check in checks)
    log_url = getattr(ti, "log_url", None)
    if log_url:
        lines.append(f"Task log: {slack_escape(log_url)}")
    lines.append(f"Data Docs: {slack_escape(data_docs_url(settings))}")
    return "\n".join(lines)


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
