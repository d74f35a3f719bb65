"""Re-running an old day (issue 12, item 13): refused on its own while later days stand; `make
rerun FROM=D` re-runs D..latest in order so every later snapshot is computed from the new D."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
from pyspark.sql import functions as F

from harness.generate import main as generate
from jobs.adapters import lake
from jobs.adapters.landing import data_files
from jobs.core.rfm import compute_rfm
from jobs.errors import LakeStateError
from jobs.ops.backfill import backfill
from jobs.ops.rerun import rerun
from jobs.steps.ingest import ingest_day
from jobs.steps.validate import validate_day
from tests.conftest import settings_for

END = date(2011, 12, 9)
D = END - timedelta(days=2)


def snapshot(spark, settings, day: date) -> list:
    silver = lake.read(spark, settings.table_path("silver_customer_rfm")).filter(F.col("snapshot_date") == day)
    return sorted(silver.collect(), key=str)


def test_a_changed_old_day_is_rerun_through_the_latest(spark, tmp_path) -> None:
    settings = settings_for(tmp_path)
    landing = settings.path("landing_dir")
    argv = ["--customers", "30", "--days", "6", "--seed", "7", "--end-date", END.isoformat()]
    assert generate([*argv, "--landing-dir", str(landing)]) == 0
    backfill(landing, D - timedelta(days=1), settings=settings, spark=spark)
    for day in (D, D + timedelta(days=1), END):
        validate_day(day, settings, spark)
        ingest_day(day, settings, spark)
    before = snapshot(spark, settings, END)

    # a corrected delivery of D: every quantity doubled
    (path,) = data_files(landing, D, settings.landing.format)
    frame = pd.read_csv(path, dtype=str)
    quantity = next(c for c in frame.columns if c.lower() == "quantity")
    frame[quantity] = (frame[quantity].astype(int) * 2).astype(str)
    frame.to_csv(path, index=False)
    validate_day(D, settings, spark)

    with pytest.raises(LakeStateError, match=rf"{D + timedelta(days=1)} .. {END}.*make rerun FROM={D}"):
        ingest_day(D, settings, spark)

    done = rerun(D, ["validate", "ingest"], settings, spark)

    assert [d["run_date"] for d in done] == [D.isoformat(), (D + timedelta(days=1)).isoformat(), END.isoformat()]
    bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    expected = sorted(compute_rfm(bronze, END, settings.rfm).collect(), key=str)
    assert snapshot(spark, settings, END) == expected
    assert expected != before, "the corrected day did not change the later snapshot"
