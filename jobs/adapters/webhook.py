"""The Slack-compatible webhook (``alerts.webhook_url``): a POST of ``{"text": ...}``.

Failure alerts (``jobs.orchestration.alerts``) and the warnings of a night that published
(``warn``; ``report_warnings`` also records them in the night's MLflow run) go the same way. Every piece of text is escaped for Slack's markup (``&``, ``<``,
``>``); callers pass counts, names, percentages and links, never landed values.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import date
from typing import Any

from jobs.adapters import tracking
from jobs.config import Settings
from jobs.definitions import WARNINGS_TAG

log = logging.getLogger(__name__)


def slack_escape(text: object) -> str:
    """``text`` as literal Slack text: its three control characters escaped (Slack's own rule)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def post(url: str, payload: dict[str, Any], timeout: float) -> int:
    """POST ``payload`` as JSON; returns the HTTP status."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (URL from config)
        return response.status


def warning_text(title: str, lines: list[str], links: dict[str, str]) -> str:
    """``:warning: title``, one bullet per line, then ``name: link`` lines; every piece escaped."""
    return "\n".join(
        [
            f":warning: {slack_escape(title)}",
            *(f"• {slack_escape(line)}" for line in lines),
            *(f"{slack_escape(name)}: {slack_escape(url)}" for name, url in links.items()),
        ]
    )


def warn(settings: Settings, title: str, lines: list[str], links: dict[str, str] | None = None) -> bool:
    """Post a warning (the run goes on): ``title``, its ``lines`` and ``links``. Nothing to say or no
    webhook configured: nothing posted. Never raises (a broken webhook is logged); True when posted."""
    url = settings.alerts.webhook_url
    if not url or not lines:
        return False
    try:
        post(url, {"text": warning_text(title, lines, links or {})}, settings.alerts.timeout_seconds)
    except Exception:  # noqa: BLE001 - a warning never fails the night that raised it
        log.exception("could not post the warning to the webhook")
        return False
    return True


def report_warnings(settings: Settings, run_id: str, run_date: date, step: str, warnings: list[str]) -> None:
    """A step's warnings about a night it published: in the night's MLflow run (tag
    ``rfm.warnings.<step>`` = how many, metric ``warnings_<step>``, ``warnings/<step>.json``), then
    posted (``warn``) with a link to the run when there is any. The night stays successful."""
    client = tracking.client(settings)
    client.set_tag(run_id, f"{WARNINGS_TAG}.{step}", str(len(warnings)))
    client.log_metric(run_id, f"warnings_{step}", float(len(warnings)))
    client.log_text(run_id, json.dumps(warnings, indent=2), f"warnings/{step}.json")
    if warnings:
        log.warning("%s %s: %d warning(s) after publishing: %s", step, run_date, len(warnings), warnings)
        link = tracking.run_url(settings, tracking.experiment_id(settings), run_id)
        title = f"{settings.dag.dag_id} {run_date}: {step} published with {len(warnings)} warning(s)"
        warn(settings, title, warnings, {"MLflow run": link})
