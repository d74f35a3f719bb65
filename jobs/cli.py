"""Command-line plumbing: ``python -m jobs <step> --run-date YYYY-MM-DD`` (see ``jobs.steps.STEPS``)."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any

from jobs.errors import PermanentError

EXIT_PERMANENT_FAILURE = 2


def run_date_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the mandatory ``--run-date``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--run-date", required=True, type=date.fromisoformat, help="the day to process, YYYY-MM-DD")
    return parser


def run_named_step(argv: Sequence[str]) -> int:
    """``<step> --run-date D``: run the named step (``jobs.steps.STEPS``) for D."""
    from jobs.steps import STEPS, load_step

    parser = argparse.ArgumentParser(prog="python -m jobs", description="Run one pipeline step for a run date.")
    parser.add_argument("step", choices=STEPS, help="; ".join(f"{name}: {s.description}" for name, s in STEPS.items()))
    known, rest = parser.parse_known_args(argv)
    return run_step(load_step(known.step), STEPS[known.step].description, rest)


def run_step(step: Callable[[date], dict[str, Any]], description: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``--run-date``, run ``step`` and print its summary as JSON.

    The step holds its (step, run date) lease meanwhile (``jobs.adapters.lease``). A step with a
    ``full`` parameter also takes ``--full`` (recompute from the whole history).
    Exit 0 on success, 2 on a permanent failure (bad input, lake state); other errors raise.
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
    finally:
        end_remote_session()
    print(json.dumps(summary, indent=2, default=str))
    return 0


# Libraries whose INFO lines drown a run's own log: only their warnings are shown.
QUIET_LOGGERS = ["great_expectations", "py4j", "mlflow", "alembic", "urllib3", "matplotlib"]


def configure_logging() -> None:
    """The pipeline's INFO lines, third-party libraries' warnings only."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_third_party_loggers()


def quiet_third_party_loggers() -> None:
    """Warnings and errors of the libraries in ``QUIET_LOGGERS``, not their INFO chatter."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
