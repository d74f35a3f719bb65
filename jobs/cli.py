"""Command-line plumbing: ``python -m jobs <step> --run-date YYYY-MM-DD`` (the table: ``steps``)."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from jobs.errors import PermanentError, StorageUnavailableError

EXIT_PERMANENT_FAILURE = 2
EXIT_STORAGE_UNAVAILABLE = 75  # EX_TEMPFAIL: the object store did not answer; a retry can succeed


def run_date_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the mandatory ``--run-date``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run-date", required=True, type=date.fromisoformat, help="the day to process, YYYY-MM-DD")
    return parser


StepFunction = Callable[..., dict[str, Any]]


def night_steps() -> dict[str, StepFunction]:
    """The nightly DAG's steps in its order, by task id (= step module): what ``make rerun``,
    ``replay`` and the harness run night by night. The DAG's tasks import the same functions."""
    from jobs.steps.cluster import cluster_day
    from jobs.steps.clv import clv_day
    from jobs.steps.eda import eda_day
    from jobs.steps.ingest import ingest_day
    from jobs.steps.label import label_day
    from jobs.steps.validate import validate_day

    return {
        "validate": validate_day,
        "ingest": ingest_day,
        "cluster": cluster_day,
        "label": label_day,
        "clv": clv_day,
        "eda": eda_day,
    }


def steps() -> dict[str, StepFunction]:
    """Every step ``python -m jobs`` runs: the night's, then the export and maintenance DAGs' tasks."""
    from jobs.steps.export import export_day
    from jobs.steps.maintain import maintain_lake

    return {**night_steps(), "export": export_day, "maintain": maintain_lake}


def summary_line(step: StepFunction) -> str:
    """The first line of a step function's docstring (its help text)."""
    return (step.__doc__ or step.__name__).strip().splitlines()[0]


def run_named_step(argv: Sequence[str]) -> int:
    """``<step> --run-date D``: run the named step (``steps``) for D."""
    table = steps()
    parser = argparse.ArgumentParser(prog="python -m jobs", description="Run one pipeline step for a run date.")
    parser.add_argument("step", choices=table, help="; ".join(f"{n}: {summary_line(f)}" for n, f in table.items()))
    known, rest = parser.parse_known_args(argv)
    return run_step(table[known.step], summary_line(table[known.step]), rest)


def run_step(step: Callable[[date], dict[str, Any]], description: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``--run-date``, run ``step`` and print its summary as JSON.

    The step holds its (step, run date) lease meanwhile (``jobs.adapters.lease``). A step with a
    ``full`` parameter also takes ``--full`` (recompute from the whole history).
    Exit 0 on success, 2 on a permanent failure (bad input, lake state), 75 when the object store
    did not answer (retryable; one line naming the endpoint and location); other errors raise (1).
    """
    from jobs.adapters.lease import run_leased
    from jobs.adapters.spark import end_remote_session
    from jobs.config import load_settings

    configure_logging()
    parser = run_date_parser(description)
    takes_full = "full" in inspect.signature(step).parameters
    if takes_full:
        parser.add_argument("--full", action="store_true", help="recompute from the whole history (repair path)")
    args = parser.parse_args(argv)
    try:
        options = {"full": True} if takes_full and args.full else {}
        summary = run_leased(step, args.run_date, load_settings(), **options)
    except PermanentError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return EXIT_PERMANENT_FAILURE
    except StorageUnavailableError as error:
        print(f"FAILED (retryable): {error}", file=sys.stderr)
        return EXIT_STORAGE_UNAVAILABLE
    finally:
        end_remote_session()
    print(json.dumps(summary, indent=2, default=str))
    return 0


# Libraries whose INFO lines drown a run's own log: only their warnings are shown.
QUIET_LOGGERS = [
    "great_expectations",
    "py4j",
    "mlflow",
    "alembic",
    "urllib3",
    "matplotlib",
    "arviz",
    "pymc",
    "pytensor",
]


def configure_logging() -> None:
    """The pipeline's INFO lines, third-party libraries' warnings only."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_third_party_loggers()


def quiet_third_party_loggers() -> None:
    """Warnings and errors of the libraries in ``QUIET_LOGGERS``, not their INFO chatter."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
