"""The failure alert (issue 12, item 14) and the warnings of a published night (issue 28, item 7), end
to end: they post Slack-compatible JSON to a webhook receiver on 127.0.0.1 (``receiver``, conftest)."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest

from jobs.adapters import webhook
from jobs.adapters.expectations import ValidationReport, _write_json, day_results_dir
from jobs.errors import LabelGateError
from jobs.orchestration import alerts

D = date(2011, 12, 9)


def use(monkeypatch, settings, url: str | None):
    configured = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"webhook_url": url})})
    monkeypatch.setattr(alerts, "load_settings", lambda: configured)
    return configured


def task_context(task_id: str, exception: Exception) -> dict:
    ti = SimpleNamespace(task_id=task_id, log_url=f"http://127.0.0.1:8080/dags/rfm_segmentation/runs/r/tasks/{task_id}")
    return {
        "dag": SimpleNamespace(dag_id="rfm_segmentation"),
        "ds": D.isoformat(),
        "ti": ti,
        "task_instance": ti,
        "exception": exception,
    }


def test_a_failed_validation_posts_the_failed_expectations(monkeypatch, settings, receiver) -> None:
    url, received = receiver
    settings = use(monkeypatch, settings, url)
    failures = ["expect_column_values_to_not_be_null(quantity): 3 of 120 rows broke it, e.g. [None]"]
    report = ValidationReport(D.isoformat(), False, 120, 0.1, "sha256:x", failures)
    _write_json(day_results_dir(settings, D) / "latest.json", report.__dict__)

    alerts.on_failure(task_context("validate", RuntimeError("DataValidationError: validation failed")))

    assert len(received) == 1 and set(received[0]) == {"text"}
    text = received[0]["text"]
    assert "rfm_segmentation" in text and D.isoformat() in text and "validate" in text
    assert "RuntimeError" in text and "validation failed" not in text  # the type, not the message
    assert "quantity): 3 of 120 rows" in text and "[None]" not in text
    assert "/tasks/validate" in text and "data_docs" in text and "index.html" in text


def test_a_missed_deadline_posts_too(monkeypatch, settings, receiver) -> None:
    url, received = receiver
    use(monkeypatch, settings, url)
    dag_run = SimpleNamespace(dag_id="rfm_segmentation", logical_date=D)
    alerts.on_failure({"dag_run": dag_run, "reason": "timed_out", "ds": D.isoformat()})
    assert "missed its deadline" in received[0]["text"]


def test_no_webhook_no_post_and_a_broken_one_does_not_raise(monkeypatch, settings, receiver) -> None:
    _, received = receiver
    use(monkeypatch, settings, None)
    alerts.on_failure(task_context("cluster", RuntimeError("boom")))
    assert received == []
    use(monkeypatch, settings, "http://127.0.0.1:9/nothing-listens-here")
    alerts.on_failure(task_context("cluster", RuntimeError("boom")))  # logged, not raised


PAYLOADS = ["<!channel>", "<https://evil.example/x|open the report>", "<img src=x onerror=alert(1)>", "a & b"]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_landed_values_never_reach_the_chat_and_its_markup_is_escaped(monkeypatch, settings, receiver, payload) -> None:
    """A landed cell holding Slack markup: the failure line quotes it as an example and the
    exception message repeats it. The alert carries the expectation, its counts and links, not the
    value; and nothing in the text opens a Slack control sequence."""
    url, received = receiver
    settings = use(monkeypatch, settings, url)
    failures = [
        f"expect_column_values_to_match_regex(quantity): 1 of 120 rows broke it, e.g. day.csv row 7: {payload!r} "
        "[rule quantity_format: quarantine]",
        f"expect_column_max_to_be_between(price): could not be evaluated ({payload}) [rule price_range: fail]",
        f"expect_column_max_to_be_between(price): observed {payload}",
    ]
    report = ValidationReport(D.isoformat(), False, 120, 0.1, "sha256:x", failures)
    _write_json(day_results_dir(settings, D) / "latest.json", report.__dict__)
    context = task_context("validate", RuntimeError(f"validation failed: {payload}"))
    context["dag"] = SimpleNamespace(dag_id="rfm_<!here>")

    alerts.on_failure(context)

    text = received[0]["text"]
    bare = payload.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert payload not in text and bare not in text
    assert "<" not in text and ">" not in text  # no link, mention or command can open
    assert "rfm_&lt;!here&gt;" in text
    assert "1 of 120 rows broke it [rule quantity_format: quarantine]" in text
    assert "could not be evaluated [rule price_range: fail]" in text
    assert "Failed expectations (3)" in text and "/tasks/validate" in text


def test_slack_escape_is_slacks_rule() -> None:
    assert alerts.slack_escape("<!channel> & <a|b>") == "&lt;!channel&gt; &amp; &lt;a|b&gt;"


def gate_failure() -> RuntimeError:
    """What the label task raises on a failed gate: Airflow's exception, the ``LabelGateError`` its cause."""
    checks = [
        "At-Risk: median recency_days 40.00 is not the highest (Low-Value: 225.00)",
        "Loyal: no customer carries it (4 clusters, 4 labels)",
    ]
    try:
        try:
            raise LabelGateError(D, checks)
        except LabelGateError as error:
            raise RuntimeError(f"LabelGateError: {error}") from error
    except RuntimeError as wrapped:
        return wrapped


def test_a_failed_label_gate_posts_each_failed_check(monkeypatch, settings, receiver) -> None:
    url, received = receiver
    use(monkeypatch, settings, url)
    alerts.on_failure(task_context("label", gate_failure()))
    text = received[0]["text"]
    assert "task *label* failed" in text and "RuntimeError" in text
    assert "Failed label checks (2), nothing published" in text
    assert "• At-Risk: median recency_days 40.00 is not the highest (Low-Value: 225.00)" in text
    assert "• Loyal: no customer carries it (4 clusters, 4 labels)" in text
    assert "/tasks/label" in text
    alerts.on_failure(task_context("cluster", RuntimeError("boom")))
    assert "label checks" not in received[1]["text"], "other failures carry no label checks"


def test_a_warning_posts_its_lines_escaped_and_links(settings, receiver) -> None:
    url, received = receiver
    settings = settings.model_copy(update={"alerts": settings.alerts.model_copy(update={"webhook_url": url})})
    lines = ["cluster segment <!channel>: 10.0 % -> 20.0 % (+10.0 points)", "a & b"]
    assert webhook.warn(
        settings,
        "rfm_segmentation 2011-12-09: published with 2 warning(s)",
        lines,
        {"MLflow run": "http://m/r?a=1&b=2"},
    )
    text = received[0]["text"]
    assert text.startswith(":warning: rfm_segmentation 2011-12-09: published with 2 warning(s)\n")
    assert "• cluster segment &lt;!channel&gt;: 10.0 % -&gt; 20.0 % (+10.0 points)" in text and "• a &amp; b" in text
    assert "MLflow run: http://m/r?a=1&amp;b=2" in text
    assert "<" not in text and ">" not in text
    assert not webhook.warn(settings, "nothing", []), "no lines: nothing posted"
    assert len(received) == 1


def test_no_webhook_or_a_broken_one_posts_no_warning_and_does_not_raise(settings, receiver) -> None:
    _, received = receiver
    assert not webhook.warn(settings, "t", ["a line"])  # webhook_url null in conf
    broken = settings.model_copy(
        update={"alerts": settings.alerts.model_copy(update={"webhook_url": "http://127.0.0.1:9/nothing-listens-here"})}
    )
    assert not webhook.warn(broken, "t", ["a line"])
    assert received == []
