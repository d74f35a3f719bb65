"""The customer state's watermark: the date through which ``silver/customer_state`` holds every bronze row.

Every commit to the state carries it as Delta ``userMetadata``; the ingest step decides from it
whether a night can merge its day, the CLV step whether the state is the one of its run date. A
night without rows commits nothing (Delta skips an empty MERGE), so the watermark can lag behind
days that have no bronze rows.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.adapters import lake
from jobs.config import Settings

STATE_METADATA_KEY = "state_through"


def state_through(settings: Settings) -> date | None:
    """The date through which the state holds every bronze row, None without a state."""
    metadata = lake.latest_metadata(settings.table_path("silver_customer_state"))
    if metadata is None:
        return None
    return date.fromisoformat(json.loads(metadata)[STATE_METADATA_KEY])


def watermark(day: date) -> str:
    """The commit metadata of a state that holds every bronze row through ``day``."""
    return json.dumps({STATE_METADATA_KEY: day.isoformat()})


def has_rows_between(bronze: DataFrame, first: date, last: date) -> bool:
    """Whether bronze has rows dated ``first``..``last`` (partition-pruned; False when first > last)."""
    return first <= last and not bronze.filter(F.col("transaction_date").between(first, last)).limit(1).isEmpty()


def holds_through(settings: Settings, bronze: DataFrame, day: date) -> bool:
    """The state holds every bronze row through ``day`` and none after: its watermark is ``day``, or
    earlier with no bronze rows after it up to ``day`` (days without trading)."""
    through = state_through(settings)
    return through is not None and through <= day and not has_rows_between(bronze, through + timedelta(days=1), day)
