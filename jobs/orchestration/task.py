"""What a DAG task calls: a step for the run date under its lease, with permanent errors made non-retryable,
third-party console output kept out of the log's ERROR level, and a few summary lines at the end."""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from datetime import date
from typing import Any

from jobs.cli import quiet_third_party_loggers
from jobs.errors import PermanentError

# A task log is read by a person: no progress bars, no colour codes, MLflow's messages as log records.
PLAIN_OUTPUT_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts: 100%|███|" on stderr
    "MLFLOW_CONFIGURE_LOGGING": "false",  # MLflow's own stderr handler (read when mlflow is imported)
    "TQDM_DISABLE": "1",
    "NO_COLOR": "1",
    "TERM": "dumb",
}
# Third-party warnings that say nothing a reader of this pipeline's log can act on (docs/operations.md).
NOISE_WARNINGS = (
    r"PyTensor could not link to a BLAS installation",  # pymc-marketing's fits are small: numpy is enough
    r"(?s).*ArviZ",  # the ArviZ 1.0 FutureWarning banner at import
)
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STDERR_LOGGER = "third_party.stderr"


def plain(text: str) -> str:
    """``text`` without ANSI colour codes and without carriage-return progress redraws (their last state)."""
    return ANSI.sub("", text.split("\r")[-1] if "\r" in text.rstrip("\r") else text).strip()


class StderrToLog(io.TextIOBase):
    """A stand-in for ``sys.stderr`` inside a task: each line a library prints (MLflow's "Successfully
    registered model", "Created version") becomes an INFO record of ``third_party.stderr`` instead
    of an ERROR line of the task log. Python warnings are logged as WARNING by Airflow already."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger, self.pending, self.writing = logger, "", False

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = ""

    def _emit(self, line: str) -> None:
        line = plain(line)
        if line and not self.writing:  # a handler writing to stderr must not loop back here
            self.writing = True
            try:
                self.logger.info(line)
            finally:
                self.writing = False


class StripAnsi(logging.Filter):
    """Colour codes out of a record's message (MLflow colours some of its warnings)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = ANSI.sub("", message), ()
        return True


@contextmanager
def plain_task_output() -> Iterator[None]:
    """Inside a task: the environment without progress bars or colours, known noise filtered, MLflow's
    handler detached (its records reach Airflow's log with their level), stderr lines as INFO records."""
    for name, value in PLAIN_OUTPUT_ENV.items():
        os.environ.setdefault(name, value)
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    mlflow_logger = logging.getLogger("mlflow")
    for handler in list(mlflow_logger.handlers):  # mlflow was imported before the env var was set
        mlflow_logger.removeHandler(handler)
    mlflow_logger.propagate = True
    for name in ("py.warnings", "mlflow"):
        if not any(isinstance(f, StripAnsi) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(StripAnsi())
    sink = StderrToLog(logging.getLogger(STDERR_LOGGER))
    shown = warnings.showwarning  # Airflow's: files the warning as a WARNING record

    def plain_warning(message, category, filename, lineno, file=None, line=None):
        return shown(ANSI.sub("", str(message)), category, filename, lineno, file, line)

    warnings.showwarning = plain_warning
    with redirect_stderr(sink):
        try:
            yield
        finally:
            sink.flush()
            warnings.showwarning = shown


def run_in_task(step: Callable[..., dict[str, Any]], run_date: str, **kwargs: Any) -> dict[str, Any]:
    """Run a step for ``run_date`` inside a task; a permanent error fails the task with no retry.
    The task log ends with the step's summary lines (``summaries.step_lines``)."""
    from airflow.sdk.exceptions import AirflowFailException

    from jobs.adapters.lease import run_leased, step_name
    from jobs.adapters.spark import end_remote_session
    from jobs.config import load_settings
    from jobs.orchestration import lineage

    quiet_third_party_loggers()
    day = date.fromisoformat(run_date)
    settings = load_settings()
    with plain_task_output():
        try:
            result = run_leased(step, day, settings, **kwargs)
        except PermanentError as error:
            raise AirflowFailException(f"{type(error).__name__}: {error}") from error
        finally:
            end_remote_session()
        lineage.record(settings, step_name(step), day, result)  # the task's OpenLineage inputs and outputs
        log_lines(summary_lines(settings, step_name(step), result))
    return result


def summary_lines(settings: Any, step: str, result: dict[str, Any]) -> list[str]:
    """The step's summary lines; the step has already succeeded, so a summary that cannot be
    written (MLflow unreachable, a result without the usual keys) becomes a warning line, never a
    failed task that the retry would run again."""
    from jobs.orchestration.summaries import step_lines

    try:
        return step_lines(settings, step, result)
    except Exception as error:  # noqa: BLE001 - the summary is informative only
        logging.getLogger("rfm.summary").warning("no summary for %s: %s: %s", step, type(error).__name__, error)
        return [f"{step} {result.get('run_date', '')}: done (summary unavailable)"]


def with_fixed_k(settings: Any, k: int | None) -> Any:
    """``settings`` with ``clustering.k`` fixed to ``k`` (unchanged when ``k`` is None)."""
    if k is None:
        return settings
    return settings.model_copy(update={"clustering": settings.clustering.model_copy(update={"k": int(k)})})


def log_lines(lines: list[str]) -> None:
    """Write readable summary lines to the task log."""
    log = logging.getLogger("rfm.summary")
    for line in lines:
        log.info(line)
