"""The synthetic transaction generator: deterministic, realistic, and valid on every day."""

from __future__ import annotations

import re
import time
from datetime import date, timedelta

import pandas as pd
import pytest

from harness.generate import COLUMNS, II_NAMES, generate_transactions, main
from jobs.adapters.landing import data_files, day_dir, has_arrived
from jobs.ops.split import read_export

END = date(2011, 12, 31)  # the window spans Christmas
DAYS = 120


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_transactions(customers=400, days=DAYS, seed=3, end_date=END)


@pytest.fixture(scope="module")
def numbers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(
        qty=frame["Quantity"].astype(int),
        price=frame["UnitPrice"].astype(float),
        day=pd.to_datetime(frame["InvoiceDate"].str[:10]),
        number=frame["InvoiceNo"].str.lstrip("C").astype(int),
        cancel=frame["InvoiceNo"].str.startswith("C"),
    )


def test_same_seed_same_bytes_other_seed_differs(frame: pd.DataFrame) -> None:
    again = generate_transactions(customers=400, days=DAYS, seed=3, end_date=END)
    pd.testing.assert_frame_equal(frame, again)
    assert frame.to_csv(index=False) == again.to_csv(index=False)
    assert not frame.equals(generate_transactions(customers=400, days=DAYS, seed=4, end_date=END))


def test_columns_are_text_in_export_format(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    assert len(frame) > 10_000
    assert frame["InvoiceDate"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all()
    assert frame["UnitPrice"].str.fullmatch(r"\d+\.\d\d").all()
    assert frame["CustomerID"].str.fullmatch(r"|1\d{4}").all()
    assert frame["CustomerID"].replace("", None).dropna().astype(int).min() >= 12346
    assert frame["StockCode"].str.fullmatch(r"\d{5}[A-Z]?|POST|M").all()
    for column in ["InvoiceNo", "StockCode", "InvoiceDate"]:
        assert (frame[column] != "").all()


def test_window_calendar_and_opening_hours(numbers: pd.DataFrame) -> None:
    assert numbers["day"].min().date() >= END - timedelta(days=DAYS - 1)
    assert numbers["day"].max().date() <= END
    assert (numbers["day"].dt.day_of_week != 5).all()
    christmas = (numbers["day"].dt.month == 12) & numbers["day"].dt.day.isin([25, 26])
    assert not christmas.any()
    clock = numbers["InvoiceDate"].str[11:]
    assert clock.between("07:00:00", "20:00:00").all()


def test_validation_rules_hold_every_day(numbers: pd.DataFrame) -> None:
    assert (numbers["qty"] != 0).all()
    assert (numbers["price"] >= 0).all()
    missing = (numbers["CustomerID"] == "").groupby(numbers["day"]).mean()
    assert missing.max() < 0.5
    assert 0.1 < (numbers["CustomerID"] == "").mean() < 0.3


def test_rows_sorted_and_invoice_numbers_increase_with_time(numbers: pd.DataFrame) -> None:
    assert numbers["InvoiceNo"].str.fullmatch(r"C?\d{6}").all()
    ordered = numbers.sort_values(["InvoiceDate", "number"], kind="stable")
    assert ordered.index.equals(numbers.index)
    first_stamp = numbers.groupby("number")["InvoiceDate"].first().sort_index()
    assert first_stamp.is_monotonic_increasing


def test_an_invoice_is_one_customer_one_timestamp_one_country(numbers: pd.DataFrame) -> None:
    per_invoice = numbers.groupby("number")[["InvoiceNo", "CustomerID", "InvoiceDate", "Country"]].nunique()
    assert (per_invoice == 1).all().all()
    assert (numbers.groupby("CustomerID")["Country"].nunique()[lambda s: s.index != ""] == 1).all()


def test_cancellations_take_back_earlier_purchases(numbers: pd.DataFrame) -> None:
    cancels = numbers[numbers["cancel"]]
    assert (cancels["qty"] < 0).all()
    assert (numbers.loc[~numbers["cancel"], "qty"] > 0).all()
    share = cancels["number"].nunique() / numbers["number"].nunique()
    assert 0.005 < share < 0.05
    assert (cancels["CustomerID"] != "").all()
    assert not cancels.duplicated(["InvoiceNo", "StockCode"]).any()
    purchases = numbers[~numbers["cancel"]]
    matched = cancels.merge(purchases, on=["CustomerID", "StockCode", "UnitPrice"], suffixes=("", "_bought"))
    earlier = (matched["number_bought"] < matched["number"]) & (matched["InvoiceDate_bought"] <= matched["InvoiceDate"])
    matched = matched[earlier & (matched["qty_bought"] == -matched["qty"])]
    assert len(matched.drop_duplicates(["InvoiceNo", "StockCode"])) == len(cancels)


def test_spend_is_heavy_tailed_and_customers_mixed(numbers: pd.DataFrame) -> None:
    known = numbers[numbers["CustomerID"] != ""]
    revenue = (known["qty"] * known["price"]).groupby(known["CustomerID"]).sum().sort_values(ascending=False)
    assert revenue.iloc[: len(revenue) // 10].sum() / revenue.sum() > 0.4
    invoices = known[~known["cancel"]].groupby("CustomerID")["number"].nunique()
    assert 0.2 < (invoices == 1).mean() < 0.8
    assert (invoices >= 5).sum() >= 20
    first_day = known.groupby("CustomerID")["day"].min()
    last_day = known.groupby("CustomerID")["day"].max()
    assert first_day.nunique() > 20 and last_day.nunique() > 20  # customers start and stop at different dates


def test_countries_catalogue_and_oddities(numbers: pd.DataFrame) -> None:
    assert 0.75 < (numbers["Country"] == "United Kingdom").mean() < 0.95
    assert numbers["Country"].nunique() >= 5
    assert 250 <= numbers["StockCode"].nunique() <= 310
    products = numbers[numbers["StockCode"].str.len() >= 5]
    assert products["price"].between(0, 15).all()
    postage = numbers[numbers["StockCode"] == "POST"]
    assert len(postage) > 0 and (postage["Description"] == "POSTAGE").all()
    assert (postage["Country"] != "United Kingdom").all()
    assert (numbers["StockCode"] == "M").any()
    assert (numbers["price"] == 0).any()
    assert 0 < numbers[COLUMNS].duplicated().sum() < 0.01 * len(numbers)


def test_invoice_without_customer_lacks_it_on_every_line(numbers: pd.DataFrame) -> None:
    missing = (numbers["CustomerID"] == "").groupby(numbers["number"]).agg(["min", "max"])
    assert (missing["min"] == missing["max"]).all()
    assert missing["min"].sum() > 0


def test_no_trading_day_in_window_gives_empty_frame() -> None:
    empty = generate_transactions(customers=50, days=1, seed=1, end_date=date(2011, 12, 10))  # a Saturday
    assert list(empty.columns) == COLUMNS and empty.empty


def test_default_size_is_fast() -> None:
    started = time.perf_counter()
    rows = generate_transactions(customers=1500, days=180, seed=7, end_date=date(2011, 12, 9))
    assert time.perf_counter() - started < 10
    assert len(rows) > 50_000


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_cli_lands_every_day_with_ii_naming(tmp_path, capsys, fmt: str) -> None:
    end = date(2011, 12, 11)  # Sunday; 2011-12-10 is a Saturday
    argv = ["--customers", "60", "--days", "7", "--seed", "5", "--end-date", end.isoformat()]
    assert main([*argv, "--landing-dir", str(tmp_path), "--naming", "ii", "--format", fmt]) == 0
    assert re.match(r"\d+ rows, 7 days .* \d+ customers", capsys.readouterr().out)
    expected = generate_transactions(customers=60, days=7, seed=5, end_date=end)
    landed = []
    for offset in range(7):
        day = end - timedelta(days=offset)
        assert has_arrived(tmp_path, day, "_SUCCESS")
        (file,) = data_files(tmp_path, day, fmt)
        landed.append(read_export(file))
    saturday = read_export(data_files(tmp_path, date(2011, 12, 10), fmt)[0])
    assert saturday.empty
    assert list(saturday.columns) == [II_NAMES.get(column, column) for column in COLUMNS]
    together = pd.concat(landed[::-1], ignore_index=True)
    together.columns = COLUMNS
    pd.testing.assert_frame_equal(together, expected)
    folders = [day_dir(tmp_path, end - timedelta(days=offset)).name for offset in range(6, -1, -1)]
    assert sorted(path.name for path in tmp_path.iterdir()) == folders
