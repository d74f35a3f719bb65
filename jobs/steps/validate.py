"""Step 1 — validate a landed day with the Great Expectations suite in ``expectations/``.

Extract the day's files as text, transform them into a validation frame (canonical names,
parsed values beside their raw text, the adjustment flag), run the suite with thresholds
from ``conf/`` as expectation parameters, and keep the result (JSON + Data Docs) whatever
it says. A failure raises ``DataValidationError`` naming each broken expectation and how
many rows broke it; this step never writes to the lake.
"""

from __future__ import annotations

import json
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
from jobs.adapters.inventory import Inventory, Limits, first_disagreement
from jobs.adapters.landing import day_inventory, has_arrived
from jobs.adapters.spark import get_spark
from jobs.adapters.transactions import (
    read_landed_day,
)
from jobs.config import Settings, load_settings
from jobs.definitions import RAW_RECORD, SOURCE_FILE, SOURCE_ROW
from jobs.errors import DataValidationError, LakeStateError, LandingChangedError

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
    frame, inventory = read_pinned(spark, settings, day)
    with SuiteRunner(settings) as runner:
        report = check_day(runner, frame, day, inventory.fingerprint, inventory.as_records(), inventory.records)
        runner.build_data_docs([day])
    raise_if_failed([report])
    return {k: v for k, v in asdict(report).items() if k not in ("failures", "quarantined", "inventory")}


READ_ATTEMPTS = 2


def read_pinned(spark: SparkSession, settings: Settings, day: date) -> tuple[pd.DataFrame, Inventory]:
    """The day's validation frame and the inventory of exactly the bytes it was read from.

    The inventory (every entry classified, every data file read by the strict reader within the
    bounds in conf) comes first: what it refuses never reaches Spark. Spark's rows of each file
    must then be the strict reader's records (``require_accounted``).
    """
    landing_dir = settings.path("landing_dir")
    for _ in range(READ_ATTEMPTS):
        before = day_inventory(settings, day)
        raw = read_landed_day(spark, settings, day, before.data_paths)
        frame = collect_day(validation_frame(raw, settings), settings, day)
        after = day_inventory(settings, day)
        if before.fingerprint == after.fingerprint:
            require_accounted(before, frame, settings)
            return frame, before
        log.warning("%s: the landed files changed while they were read; reading them again", day)
    raise LandingChangedError(
        f"the landed files of {day} under {landing_dir} kept changing while they were validated "
        f"({READ_ATTEMPTS} reads): wait for the delivery to finish, then validate again"
    )


def require_accounted(inventory: Inventory, frame: pd.DataFrame, settings: Settings) -> None:
    """Spark's rows of each file are exactly the records the strict reader counted; else
    ``DataValidationError`` naming the file, both counts and the first record they disagree on."""
    counts = frame[SOURCE_FILE].value_counts().to_dict() if len(frame) else {}
    for name, records in inventory.records.items():
        read = int(counts.get(name, 0))
        if read == records:
            continue
        rows = frame[frame[SOURCE_FILE] == name].sort_values(SOURCE_ROW)[RAW_RECORD]
        theirs = [list(json.loads(r).values()) for r in rows]
        where = first_disagreement(inventory.folder, name, Limits.of(settings.landing), theirs)
        raise DataValidationError(
            f"{name!r}: Spark read {read} rows, the strict CSV reader {records} records; first difference: {where}"
        )
