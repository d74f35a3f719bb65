"""The run audit (``audit/run_audit``): one record per (run date, step) of what it read, left out and wrote.

It is also the lake's record of which days are loaded, whoever loaded them: the nightly ingest
(``step = 'ingest'``) or the history backfill (``step = 'backfill'``). One continuity rule holds
for every writer (``continuity_problem``): the days loaded form one unbroken range, and a day is
only (re)loaded when no later day was computed from it — unless a re-run from that day through
the latest one is under way (``make rerun FROM=D``, recorded as a rerun intent in the lake).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import storage
from jobs.adapters import lake
from jobs.config import Settings
from jobs.errors import LakeStateError

LOADING_STEPS = ("ingest", "backfill")  # the audit steps that load a day into bronze


AUDIT_SCHEMA = (
    "run_date date, step string, rows_in bigint, excluded_rows map<string,bigint>, "
    "table_versions map<string,bigint>, recorded_at timestamp, input_fingerprint string"
)


@dataclass(frozen=True)
class AuditRecord:
    """What a step read for one run date (and the fingerprint of the landed bytes), left out and wrote."""

    run_date: date
    step: str
    rows_in: int
    excluded: dict[str, int]
    versions: dict[str, int]
    input_fingerprint: str | None = None


def audit_frame(spark: SparkSession, records: list[AuditRecord]) -> DataFrame:
    """Run-audit rows for ``records``, stamped now: one DataFrame, however many dates (a union
    of one-row frames per date costs minutes over a year of backfill)."""
    rows = [(r.run_date, r.step, r.rows_in, r.excluded, r.versions, None, r.input_fingerprint) for r in records]
    return spark.createDataFrame(rows, AUDIT_SCHEMA).withColumn("recorded_at", F.current_timestamp())


def write_audit(
    spark: SparkSession,
    settings: Settings,
    run_date: date,
    step: str,
    rows_in: int,
    excluded: dict[str, int],
    versions: dict[str, int],
    input_fingerprint: str | None = None,
) -> int:
    """Replace the audit record of (run date, step)."""
    predicate = f"run_date = {lake.date_literal(run_date)} AND step = '{step}'"
    record = AuditRecord(run_date, step, rows_in, excluded, versions, input_fingerprint)
    return lake.replace_slice(audit_frame(spark, [record]), settings.table_path("run_audit"), predicate, "run_date")


def audited_dates(spark: SparkSession, settings: Settings, step: str = "ingest") -> set[date]:
    """Run dates the given step has completed (from the run audit)."""
    return {day for day, writer in loaded_days(spark, settings).items() if writer == step}


def loaded_days(spark: SparkSession, settings: Settings) -> dict[date, str]:
    """Every day a writer loaded into bronze, with the writer (``ingest`` wins over ``backfill``)."""
    path = settings.table_path("run_audit")
    if not lake.exists(path):
        return {}
    rows = lake.read(spark, path).filter(F.col("step").isin(*LOADING_STEPS)).select("run_date", "step").collect()
    loaded: dict[date, str] = {}
    for row in rows:
        if loaded.get(row["run_date"]) != "ingest":
            loaded[row["run_date"]] = row["step"]
    return loaded


def gap_problem(loaded: set[date], first: date, last: date) -> str | None:
    """Rule 1, no gap: the day before ``first`` is loaded, unless nothing is, or ``first``..``last``
    comes in front of every loaded day and touches them (history added at the start)."""
    if not loaded:
        return None
    earliest, day_before = min(loaded), first - timedelta(days=1)
    in_front = first <= earliest and last >= earliest - timedelta(days=1)
    if day_before in loaded or in_front:
        return None
    missing = day_before if first > earliest else last + timedelta(days=1)
    return (
        f"the lake has no loaded {missing}: load the days in between first "
        f"(loaded: {earliest} .. {max(loaded)}, {len(loaded)} days)"
    )


def stale_problem(loaded: set[date], first: date, last: date, rerun_from: date | None = None) -> str | None:
    """Rule 2, no stale days: no loaded day after ``last`` (it was computed from what is about to
    change), unless a re-run from ``rerun_from`` <= ``first`` re-runs them in order afterwards."""
    later = sorted(d for d in loaded if d > last)
    if not later or (rerun_from is not None and rerun_from <= first):
        return None
    span = f"{first}" if last == first else f"{first}..{last}"
    return (
        f"{len(later)} later day(s) ({later[0]} .. {later[-1]}) were computed from {span}: "
        f"re-run {first} and every later day in order with `make rerun FROM={first}`"
    )


def latest_loaded_day(settings: Settings) -> date | None:
    """The latest loaded day, read with delta-rs (no JVM: for the Airflow launcher), or None."""
    from deltalake.exceptions import TableNotFoundError

    try:
        table = storage.delta_table(settings.table_path("run_audit"))
    except TableNotFoundError:
        return None
    frame = table.to_pandas(columns=["run_date", "step"])
    days = frame.loc[frame["step"].isin(LOADING_STEPS), "run_date"]
    return None if days.empty else max(pd.Timestamp(day).date() for day in days)


def continuity_problem(loaded: set[date], first: date, last: date, rerun_from: date | None = None) -> str | None:
    """The rule every writer of days ``first``..``last`` follows, or why it is broken (None: fine)."""
    return gap_problem(loaded, first, last) or stale_problem(loaded, first, last, rerun_from)


def require_continuity(spark: SparkSession, settings: Settings, first: date, last: date | None = None) -> None:
    """Refuse to load ``first``..``last`` when that would break the continuity rule."""
    problem = continuity_problem(set(loaded_days(spark, settings)), first, last or first, rerun_from(settings))
    if problem:
        raise LakeStateError(problem)


def require_previous_day(spark: SparkSession, settings: Settings, run_date: date) -> None:
    """The continuity rule for one night (kept for callers of the earlier name)."""
    require_continuity(spark, settings, run_date)


# --- the rerun intent: ``make rerun FROM=D`` re-runs D..latest in order -----------------------------


def rerun_intent_path(settings: Settings):
    return settings.path("lake_dir") / "_reruns" / "intent.json"


def rerun_from(settings: Settings) -> date | None:
    """The first day of the re-run under way, or None."""
    path = rerun_intent_path(settings)
    if not path.is_file():
        return None
    return date.fromisoformat(json.loads(path.read_text())["from"])


def begin_rerun(settings: Settings, first: date, through: date) -> None:
    """Record (atomically) that days ``first``..``through`` are being re-run in order."""
    path = rerun_intent_path(settings)
    content = json.dumps({"from": first.isoformat(), "through": through.isoformat()})
    if storage.is_remote(path):  # one PUT: atomic on a bucket
        path.write_text(content)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(content)
    os.replace(temporary, path)


def end_rerun(settings: Settings) -> None:
    """The re-run reached the latest day: later writers follow the plain rule again."""
    rerun_intent_path(settings).unlink(missing_ok=True)
