"""Backfill from a landing folder: the same history whatever the landing format."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from jobs.tools.backfill import backfill
from jobs.tools.generate import main as generate
from tests.conftest import settings_for

END = date(2011, 12, 9)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_backfill_of_a_landing_folder_loads_every_row_of_either_format(spark, tmp_path, fmt: str) -> None:
    settings = settings_for(tmp_path, landing={"format": fmt})
    landing = settings.path("landing_dir")
    argv = ["--customers", "40", "--days", "6", "--seed", "3", "--end-date", END.isoformat()]
    assert generate([*argv, "--landing-dir", str(landing), "--format", fmt]) == 0
    landed = sum(1 for _ in landing.glob("date=*/*." + ("parquet" if fmt == "parquet" else "csv*")))
    assert landed == 6, f"the generator landed {landed} {fmt} files"

    summary = backfill(landing, END, settings=settings, spark=spark)

    bronze = spark.read.format("delta").load(str(settings.table_path("bronze_transactions")))
    assert summary["rows"] == bronze.count() > 0
    assert bronze.agg(F.max("transaction_date")).first()[0] <= END
