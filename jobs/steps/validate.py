"""Step 1 — validate a landed day with the Great Expectations suite in ``expectations/``.

Extract the day's files as text, transform them into a validation frame (canonical names,
parsed values beside their raw text, the adjustment flag), run the suite with thresholds
from ``conf/`` as expectation parameters, and keep the result (JSON + Data Docs) whatever
it says. A failure raises ``DataValidationError`` naming each broken expectation and how
many rows broke it; this step never writes to the lake.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import date
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from jobs.adapters.expectations import (
    SuiteRunner,
    check_day,
    collect_day,
    raise_if_failed,
    validation_frame,
)
from jobs.adapters.landing import data_files, fingerprint, has_arrived
from jobs.adapters.spark import get_spark
from jobs.adapters.transactions import (
    read_landed_day,
)
from jobs.config import Settings, load_settings
from jobs.errors import LakeStateError, LandingChangedError

log = logging.getLogger(__name__)


def validate_day(day: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Validate the landed files of ``day``; the summary returned is small enough for XCom.

    The files are hashed, read and hashed again: a file rewritten while it was being read is
    validated again (``READ_ATTEMPTS`` in all), so the fingerprint kept names the bytes checked.
    """
    settings = settings or load_settings()
    landing_dir = settings.path("landing_dir")
    if not has_arrived(landing_dir, day, settings.landing.marker):
        raise LakeStateError(f"no arrival marker for {day} under {landing_dir}: the day's data has not landed")
    spark = spark or get_spark(settings)
    frame, pinned = read_pinned(spark, settings, day)
    runner = SuiteRunner(settings)
    report = check_day(runner, frame, day, pinned)
    runner.build_data_docs([day])
    raise_if_failed([report])
    return {k: v for k, v in asdict(report).items() if k not in ("failures", "quarantined")}


READ_ATTEMPTS = 2


def read_pinned(spark: SparkSession, settings: Settings, day: date) -> tuple[pd.DataFrame, str]:
    """The day's validation frame and the fingerprint of exactly the bytes it was read from."""
    landing_dir = settings.path("landing_dir")
    for _ in range(READ_ATTEMPTS):
        files = data_files(landing_dir, day, settings.landing.format)
        before = fingerprint(files)
        frame = collect_day(validation_frame(read_landed_day(spark, settings, day, files), settings), settings, day)
        after = fingerprint(data_files(landing_dir, day, settings.landing.format))
        if before == after:
            return frame, before
        log.warning("%s: the landed files changed while they were read; reading them again", day)
    raise LandingChangedError(
        f"the landed files of {day} under {landing_dir} kept changing while they were validated "
        f"({READ_ATTEMPTS} reads): wait for the delivery to finish, then validate again"
    )
