"""The Slack-compatible webhook (``alerts.webhook_url``): a POST of ``{"text": ...}``.

Failure alerts (``jobs.orchestration.alerts``) and the warnings of a night that published
(``warn``) go the same way. Every piece of text is escaped for Slack's markup (``&``, ``<``,
``>``); callers pass counts, names, percentages and links, never landed values.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

from jobs.config import Settings

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
