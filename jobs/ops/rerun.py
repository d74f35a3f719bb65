"""Re-run a day and every later day, in order: ``make rerun FROM=D``.

``python -m jobs.ops.rerun --from D [--steps validate ingest ...]``

Silver and gold of a day are computed from the days before it, so re-running an old day D on its
own would leave D+1 … computed from the old D; the nightly steps refuse that (the continuity
rule in ``jobs.adapters.audit``). This tool records a rerun intent in the lake, runs the steps of
``jobs.cli.night_steps`` for D, D+1, … through the latest loaded day in this process, and clears the
intent at the end. A crash leaves the intent: running the same command again finishes the job.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable
from datetime import date
from typing import Any

from pyspark.sql import SparkSession

from jobs.adapters.audit import begin_rerun, end_rerun, loaded_days
from jobs.adapters.lease import run_leased
from jobs.adapters.spark import get_spark
from jobs.cli import EXIT_PERMANENT_FAILURE, configure_logging, night_steps
from jobs.config import Settings, load_settings
from jobs.definitions import NIGHT_STEPS, days_between
from jobs.errors import LakeStateError, PermanentError


def rerun_days(spark: SparkSession, settings: Settings, first: date) -> list[date]:
    """``first`` through the latest loaded day (refused when ``first`` was never loaded)."""
    loaded = loaded_days(spark, settings)
    if first not in loaded:
        raise LakeStateError(f"{first} was never loaded: run it as a night, not a re-run")
    return days_between(first, max(loaded))


def rerun(
    first: date, steps: list[str] | None = None, settings: Settings | None = None, spark: SparkSession | None = None
) -> list[dict[str, Any]]:
    """Run ``steps`` (default: every step) for ``first`` .. latest, in order; one summary per day."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    table = night_steps()
    functions = {name: table[name] for name in steps or table}
    days = rerun_days(spark, settings, first)
    begin_rerun(settings, first, days[-1])
    done = []
    for day in days:
        done.append(
            {"run_date": day.isoformat(), **{n: run_one(f, day, settings, spark) for n, f in functions.items()}}
        )
    end_rerun(settings)
    return done


def run_one(step: Callable[..., dict[str, Any]], day: date, settings: Settings, spark: SparkSession) -> dict[str, Any]:
    """A step for ``day`` under its lease, with this process's settings (and Spark session, when it
    takes one); its ``after:<step>`` fault point fires inside the lease, as in ``jobs.cli.run_step``."""
    extra = {"spark": spark} if "spark" in inspect.signature(step).parameters else {}
    return run_leased(step, day, settings, settings=settings, **extra)


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="first day to re-run")
    parser.add_argument("--steps", nargs="*", choices=list(NIGHT_STEPS), help="steps to run per day (default: all)")
    args = parser.parse_args(argv)
    try:
        summary = rerun(args.first, args.steps)
    except PermanentError as error:
        print(f"FAILED: {error}", file=sys.stderr)
        return EXIT_PERMANENT_FAILURE
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
