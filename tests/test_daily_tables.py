"""The daily EDA tables: Spark (the ingest step) and DuckDB (the report's tests) run one SQL text
to the same rows, and a date's slice is replaced on a re-run."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs.adapters import lake
from jobs.adapters.daily_tables import write_daily_tables
from jobs.core.daily import DAILY_TABLES
from jobs.steps import eda
from tests.helpers import frame_of, line

D1, D2 = date(2011, 12, 5), date(2011, 12, 7)
ROWS = [
    line("536001", "85123A", 6, D1, "2.55", "17850", description="WHITE HEART", hour=8),
    line("536001", "71053", 2, D1, "3.39", "17850", description="WHITE LANTERN", hour=8),
    line("536002", "85123A", 10, D1, "2.55", None, "France", description="WHITE HEART", hour=14),
    line("536002", "85123A", 10, D1, "2.55", None, "France", description="WHITE HEART", hour=14),
    line("536003", "POST", 1, D2, "18.00", "12583", "France", description="POSTAGE", hour=11),
    line("536003", "22728", 4, D2, "3.75", "12583", "France", description="ALARM CLOCK", hour=11),
    line("536003", "22728", 1, D2, "3.75", "12583", "France", description=None, hour=11),
    line("C536004", "85123A", -2, D2, "2.55", "17850", description="WHITE HEART", hour=12),
    line("536005", "22728", 5, D2, "0.00", "12583", "France", description="ALARM CLOCK", hour=12),
]
KEYS = {
    "sales": ["transaction_date"],
    "weekday_hour": ["transaction_date", "hour_start"],
    "country": ["transaction_date", "country"],
    "product": ["transaction_date", "stock_code", "description"],
}


def normalised(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    frame = frame.assign(transaction_date=pd.to_datetime(frame["transaction_date"]))
    if "revenue" in frame:
        frame["revenue"] = frame["revenue"].astype(float).round(6)
    for column in frame.columns:
        if column not in keys and column != "revenue" and column != "hour_start":
            frame[column] = frame[column].astype("int64")
    return frame.sort_values(keys, na_position="last").reset_index(drop=True)[sorted(frame.columns)]


def test_spark_and_duckdb_build_the_same_daily_tables(spark, settings) -> None:
    bronze = settings.table_path("bronze_transactions")
    lake.replace_slice(frame_of(spark, ROWS), bronze, "transaction_date IS NOT NULL", "transaction_date")
    write_daily_tables(spark, settings, D1, D2)
    expected = eda.daily_aggregates(
        DeltaTable(str(bronze))
        .to_pandas()
        .drop(columns="transaction_date")
        .assign(
            price=lambda f: f["price"].astype(float),
            invoice_date=lambda f: pd.to_datetime(f["invoice_date"], utc=True).dt.tz_convert(None),
        ),
        settings.rfm,
    )
    written = eda.typed_aggregates(
        {name: DeltaTable(str(settings.table_path(table))).to_pandas() for name, table in DAILY_TABLES.items()}
    )
    for name, table in DAILY_TABLES.items():
        got, want = normalised(getattr(written, name), KEYS[name]), normalised(getattr(expected, name), KEYS[name])
        pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=table)
    sales = expected.sales.set_index("transaction_date").sort_index()
    assert sales["orders"].tolist() == [2, 1] and sales["bronze_rows"].tolist() == [4, 5]


def test_a_rerun_replaces_the_days_slice(spark, settings) -> None:
    bronze = settings.table_path("bronze_transactions")
    lake.replace_slice(frame_of(spark, ROWS), bronze, "transaction_date IS NOT NULL", "transaction_date")
    write_daily_tables(spark, settings, D1, D2)
    fewer = [r for r in ROWS if r[0] != "536002"]
    lake.replace_slice(frame_of(spark, fewer), bronze, "transaction_date IS NOT NULL", "transaction_date")
    write_daily_tables(spark, settings, D1, D1)
    sales = DeltaTable(str(settings.table_path("silver_daily_sales"))).to_pandas().sort_values("transaction_date")
    assert sales["orders"].tolist() == [1, 1] and sales["bronze_rows"].tolist() == [2, 5]


pytestmark = pytest.mark.spark
