"""Reading exports and typing their columns: both public namings give the same canonical rows, file by file."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.adapters.transactions import (
    parse_transactions,
    read_export_text,
    read_files,
    to_canonical_names,
    typed_rows,
)
from jobs.errors import DataValidationError

pytestmark = pytest.mark.spark

ONLINE_RETAIL = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
# Online Retail II names, and (to show the mapping goes by name, not position) another column order.
ONLINE_RETAIL_II = ["Customer ID", "Country", "Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price"]
II_NAME = {"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}
BODY = '''\
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom
C536379,D,Discount,-1,2010-12-01 09:41:00,27.50,14527.0,United Kingdom
536401,22423,"REGENCY CAKESTAND, 3 TIER",2,12/1/2010 11:21,12.75,13085.0,France
536414,22139,,56,2010-12-01 11:52,0,,United Kingdom
536415,21730,"GLASS STAR FROSTED, T-LIGHT ""HOLDER""",abc,2010-12-01 12:00:00,4.25,13085,United Kingdom
'''
D = date(2010, 12, 1)
# In invoice order: (invoice, stock_code, description, quantity, invoice_date as text in UTC, price, customer_id, country, transaction_date)
EXPECTED = [
    (
        "536365",
        "85123A",
        "WHITE HANGING HEART T-LIGHT HOLDER",
        6,
        "2010-12-01 08:26:00",
        Decimal("2.550"),
        "17850",
        "United Kingdom",
        D,
    ),
    ("536401", "22423", "REGENCY CAKESTAND, 3 TIER", 2, "2010-12-01 11:21:00", Decimal("12.750"), "13085", "France", D),
    ("536414", "22139", None, 56, "2010-12-01 11:52:00", Decimal("0.000"), None, "United Kingdom", D),
    (
        "536415",
        "21730",
        'GLASS STAR FROSTED, T-LIGHT "HOLDER"',
        None,
        "2010-12-01 12:00:00",
        Decimal("4.250"),
        "13085",
        "United Kingdom",
        D,
    ),
    ("C536379", "D", "Discount", -1, "2010-12-01 09:41:00", Decimal("27.500"), "14527", "United Kingdom", D),
]


def write_online_retail(tmp_path: Path) -> Path:
    path = tmp_path / "online_retail.csv"
    path.write_text(f"{ONLINE_RETAIL}\n{BODY}")
    return path


def write_online_retail_ii(tmp_path: Path) -> Path:
    """The same rows under Online Retail II headers, columns reordered, quoted by the csv module."""
    records = list(csv.DictReader(io.StringIO(f"{ONLINE_RETAIL}\n{BODY}")))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=ONLINE_RETAIL_II, lineterminator="\n")
    writer.writeheader()
    writer.writerows({II_NAME.get(k, k): v for k, v in record.items()} for record in records)
    path = tmp_path / "online_retail_ii.csv"
    path.write_text(out.getvalue())
    return path


def parsed(spark, settings, path: Path) -> DataFrame:
    return parse_transactions(to_canonical_names(read_export_text(spark, [str(path)]), settings), settings)


def typed(spark, settings, path: Path) -> list[tuple]:
    frame = typed_rows(parsed(spark, settings, path))
    frame = frame.withColumn("invoice_date", F.date_format("invoice_date", "yyyy-MM-dd HH:mm:ss"))  # session tz: UTC
    return [tuple(row) for row in frame.orderBy("invoice").collect()]


def test_both_namings_give_the_same_canonical_typed_rows(spark, settings, tmp_path: Path) -> None:
    first = typed(spark, settings, write_online_retail(tmp_path))
    second = typed(spark, settings, write_online_retail_ii(tmp_path))
    assert first == EXPECTED
    assert second == EXPECTED


def test_typed_schema(spark, settings, tmp_path: Path) -> None:
    frame = typed_rows(parsed(spark, settings, write_online_retail(tmp_path)))
    assert [(f.name, f.dataType.simpleString()) for f in frame.schema.fields] == [
        ("invoice", "string"),
        ("stock_code", "string"),
        ("description", "string"),
        ("quantity", "int"),
        ("invoice_date", "timestamp"),
        ("price", "decimal(18,3)"),
        ("customer_id", "string"),
        ("country", "string"),
        ("transaction_date", "date"),
    ]


def test_raw_text_is_kept_beside_parsed_values(spark, settings, tmp_path: Path) -> None:
    rows = {
        r["invoice"]: r
        for r in parsed(spark, settings, write_online_retail_ii(tmp_path))
        .select("invoice", "quantity", "quantity_raw", "customer_id", "customer_id_raw", "description")
        .collect()
    }
    assert rows["536415"]["quantity"] is None and rows["536415"]["quantity_raw"] == "abc"  # unparseable stays null
    assert rows["536401"]["customer_id"] == "13085" and rows["536401"]["customer_id_raw"] == "13085.0"
    assert rows["536414"]["customer_id"] is None and rows["536414"]["description"] is None  # empty -> null
    assert rows["536415"]["description"] == 'GLASS STAR FROSTED, T-LIGHT "HOLDER"'


def test_quoted_multiline_description_survives_reading(spark, settings, tmp_path: Path) -> None:
    path = tmp_path / "multiline.csv"
    text = '536500,22086,"PAPER CHAIN KIT, 50\'S\nCHRISTMAS",12,2010-12-01 13:00:00,2.55,17850,EIRE'
    path.write_text(f"{ONLINE_RETAIL}\n{text}\n")
    (row,) = read_export_text(spark, [str(path)]).collect()
    assert row["Description"] == "PAPER CHAIN KIT, 50'S\nCHRISTMAS"
    assert (row["Quantity"], row["UnitPrice"], row["Country"]) == ("12", "2.55", "EIRE")


def test_each_file_is_mapped_by_its_own_header_and_keeps_where_each_row_came_from(spark, settings, tmp_path) -> None:
    """Two files of one day, different namings and column orders: the same typed rows as one file."""
    first = write_online_retail(tmp_path)
    second = write_online_retail_ii(tmp_path)
    both = read_files(spark, settings, [first, second], "csv")
    typed_both = typed_rows(parse_transactions(both, settings))
    typed_both = typed_both.withColumn("invoice_date", F.date_format("invoice_date", "yyyy-MM-dd HH:mm:ss"))
    assert sorted(tuple(r) for r in typed_both.collect()) == sorted(EXPECTED * 2)
    rows = both.orderBy("source_file", "source_row").collect()
    assert [(r["source_file"], r["source_row"]) for r in rows] == [
        (name, n) for name in ("online_retail.csv", "online_retail_ii.csv") for n in range(1, 6)
    ]
    assert rows[4]["invoice"] == "536415" and rows[4]["quantity"] == "abc"  # the file's fifth row
    raw = json.loads(rows[5]["raw_record"])  # Online Retail II's first row, under its own names
    assert raw["Customer ID"] == "17850" and raw["Invoice"] == "536365" and list(raw)[0] == "Customer ID"


def test_a_file_larger_than_the_split_size_is_spread_and_keeps_its_row_numbers(spark, settings, tmp_path) -> None:
    """A multi-line CSV is read in one task; above ``landing.split_bytes`` its rows are spread over
    partitions, and ``source_row`` still counts the file's rows in file order."""
    path = tmp_path / "large.csv"
    lines = [f"{600000 + n},22423,ITEM {n},1,2010-12-01 10:00:00,1.00,{12000 + n},EIRE" for n in range(1, 401)]
    path.write_text(ONLINE_RETAIL + "\n" + "\n".join(lines) + "\n")
    small_splits = settings.model_copy(
        update={"landing": settings.landing.model_copy(update={"split_bytes": path.stat().st_size // 3})}
    )
    spread_rows = read_files(spark, small_splits, [path], "csv")
    assert spread_rows.rdd.getNumPartitions() == 4
    assert read_files(spark, settings, [path], "csv").rdd.getNumPartitions() == 1
    numbered = sorted((r["source_row"], r["invoice"]) for r in spread_rows.select("source_row", "invoice").collect())
    assert numbered == [(n, str(600000 + n)) for n in range(1, 401)]


def test_files_that_disagree_on_their_columns_are_refused(spark, settings, tmp_path) -> None:
    first = write_online_retail(tmp_path)
    short = tmp_path / "short.csv"
    short.write_text(ONLINE_RETAIL.replace(",Country", "") + "\n536365,85123A,X,6,2010-12-01 08:26:00,2.55,17850\n")
    with pytest.raises(
        DataValidationError, match="online_retail.csv and short.csv disagree .* only online_retail.csv has country"
    ):
        read_files(spark, settings, [first, short], "csv")
