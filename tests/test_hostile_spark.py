"""The hostile corpus through the real validate and ingest steps (one shared Spark session).

CI runs the cases marked ``spark=True`` plus every payload case through validate, and a few
through ingest too; ``make test-hostile`` (marker ``heavy``) runs every accepted case through
validate and ingest. For each accepted case: Spark's rows = the strict reader's records, and
bronze + quarantine = those records (nothing lost, nothing read twice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.adapters import lake
from jobs.errors import DataValidationError
from jobs.steps.ingest import ingest_day
from jobs.steps.validate import validate_day
from tests.hostile_corpus import CASES, DAY, Case, Pass, build_day

pytestmark = pytest.mark.spark

ACCEPTED = [c for c in CASES if isinstance(c.verdict, Pass) and c.verdict.records]
VALIDATED = [c for c in ACCEPTED if c.spark or c.kind == "payload"]
INGESTED = ["xss-in-quantity"]  # ingest costs ~30-60 s on a shared 2-core machine: one case in CI


def check_validated(spark, tmp_path: Path, case: Case):
    settings, _ = build_day(tmp_path, case)
    verdict = case.verdict
    assert isinstance(verdict, Pass)
    if verdict.suite_fails:
        with pytest.raises(DataValidationError, match=verdict.suite_fails):
            validate_day(DAY, settings, spark)
        return settings, None
    summary = validate_day(DAY, settings, spark)
    assert summary["records"] == verdict.records
    assert summary["row_count"] == sum(verdict.records.values())  # Spark read what the strict reader counted
    assert summary["quarantined_rows"] == verdict.held
    return settings, summary


def check_ingested(spark, settings, verdict: Pass) -> None:
    result = ingest_day(DAY, settings, spark)
    bronze = lake.read(spark, settings.table_path("bronze_transactions")).count()
    held = lake.read(spark, settings.table_path("quarantine_transactions")).count()
    total = sum(verdict.records.values())
    assert bronze + held == total and held == verdict.held
    assert result["accounting"] == {
        "accounting:landed_records": total,
        "accounting:bronze_rows": bronze,
        "accounting:duplicates_dropped": 0,
    }
    (audit,) = lake.read(spark, settings.table_path("run_audit")).filter("step = 'ingest'").collect()
    assert audit["excluded_rows"]["accounting:landed_records"] == total


@pytest.mark.parametrize("case", VALIDATED, ids=[c.id for c in VALIDATED])
def test_hostile_day_through_validate(spark, tmp_path: Path, case: Case) -> None:
    settings, summary = check_validated(spark, tmp_path, case)
    if summary is not None and case.id in INGESTED:
        check_ingested(spark, settings, case.verdict)


@pytest.mark.heavy
@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_hostile_day_through_validate_and_ingest(spark, tmp_path: Path, case: Case) -> None:
    settings, summary = check_validated(spark, tmp_path, case)
    if summary is not None:
        check_ingested(spark, settings, case.verdict)


def test_a_reader_disagreement_names_the_file_and_record(spark, tmp_path: Path, monkeypatch) -> None:
    """The accounting rule itself: a Spark read that loses a record fails the day naming it."""
    from jobs.steps import validate as step

    case = next(c for c in CASES if c.id == "plain-day")
    settings, _ = build_day(tmp_path, case)
    real = step.read_landed_day
    monkeypatch.setattr(step, "read_landed_day", lambda *a, **k: real(*a, **k).filter("source_row != 3"))
    with pytest.raises(
        DataValidationError, match=r"'transactions.csv': Spark read 4 rows, the strict CSV reader 5.*record 3"
    ):
        validate_day(DAY, settings, spark)
