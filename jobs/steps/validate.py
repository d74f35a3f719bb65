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
from jobs.errors import LakeStateError

log = logging.getLogger(__name__)


def validate_day(day: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Validate the landed files of ``day``; the summary returned is small enough for XCom."""
    settings = settings or load_settings()
    landing_dir = settings.path("landing_dir")
    if not has_arrived(landing_dir, day, settings.landing.marker):
        raise LakeStateError(f"no arrival marker for {day} under {landing_dir}: the day's data has not landed")
    spark = spark or get_spark(settings)
    files = data_files(landing_dir, day, settings.landing.format)
    frame = collect_day(validation_frame(read_landed_day(spark, settings, day), settings), settings, day)
    runner = SuiteRunner(settings)
    report = check_day(runner, frame, day, fingerprint(files))
    runner.build_data_docs()
    raise_if_failed([report])
    return {k: v for k, v in asdict(report).items() if k != "failures"}
