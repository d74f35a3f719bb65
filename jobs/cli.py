"""Shared command-line plumbing: every step is ``python -m jobs.<step> --run-date YYYY-MM-DD``."""

from __future__ import annotations

import argparse
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


def run_step(step: Callable[[date], dict[str, Any]], description: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``--run-date``, run ``step`` and print its summary as JSON.

    Exit 0 on success, 2 on a permanent failure (bad input, lake state); other errors raise.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = run_date_parser(description).parse_args(argv)
    try:
        summary = step(args.run_date)
    except PermanentError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return EXIT_PERMANENT_FAILURE
    print(json.dumps(summary, indent=2, default=str))
    return 0
