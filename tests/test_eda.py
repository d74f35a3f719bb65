"""EDA report: pure transforms on hand-computed data, and the step on a small Delta lake + MLflow store."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from PIL import Image

from jobs.adapters import tracking
from jobs.cli import run_named_step
from jobs.config import Settings, load_settings
from jobs.core.daily import DAILY_TABLES
from jobs.definitions import CANONICAL_COLUMNS, DAG_TAG, RUN_DATE_TAG, STEP_TAG
from jobs.errors import LakeStateError
from jobs.steps import eda

RUN_DATE = date(2011, 12, 9)  # a Friday
CHARTS = {
    "revenue_orders.png",
    "orders_weekday_hour.png",
    "top_countries.png",
    "top_products.png",
    "rfm_distributions.png",
    "segment_shares.png",
    "rfm_correlation.png",
}

# invoice, stock_code, description, quantity, invoice_date, price, customer_id, country
LINES = [
    ("536001", "85123A", "WHITE HEART", 6, "2011-12-05 08:30", "2.550", "17850", "United Kingdom"),  # 15.30
    ("536001", "71053", "WHITE LANTERN", 2, "2011-12-05 08:30", "3.390", "17850", "United Kingdom"),  # 6.78
    ("536002", "85123A", "WHITE HEART", 10, "2011-12-05 14:10", "2.550", None, "France"),  # 25.50, no customer id
    ("536002", "85123A", "WHITE HEART", 10, "2011-12-05 14:10", "2.550", None, "France"),  # exact duplicate
    ("536003", "POST", "POSTAGE", 1, "2011-12-07 11:00", "18.000", "12583", "France"),  # non-product
    ("536003", "22728", "ALARM CLOCK", 4, "2011-12-07 11:00", "3.750", "12583", "France"),  # 15.00
    ("C536004", "85123A", "WHITE HEART", -2, "2011-12-07 12:00", "2.550", "17850", "United Kingdom"),  # -5.10
    ("536005", "22728", "ALARM CLOCK", 5, "2011-12-09 09:15", "0.000", "12583", "France"),  # price 0
    ("536006", "22728", "ALARM CLOCK PINK", 3, "2011-12-09 09:15", "3.750", "13047", "Germany"),  # 11.25
    ("A536007", "B", "Adjust bad debt", 1, "2011-12-09 10:00", "-100.000", None, "United Kingdom"),  # adjustment
    ("536008", "85123A", "WHITE HEART", 1, "2011-12-10 10:00", "2.550", "17850", "United Kingdom"),  # after D
]
REVENUE_BY_DAY = {"2011-12-05": 47.58, "2011-12-06": 0.0, "2011-12-07": 9.90, "2011-12-08": 0.0, "2011-12-09": 11.25}
NET_REVENUE = 15.30 + 6.78 + 25.50 + 15.00 - 5.10 + 11.25  # 68.73
ORDERS_BY_DAY = {"2011-12-05": 2, "2011-12-06": 0, "2011-12-07": 1, "2011-12-08": 0, "2011-12-09": 1}


def transactions_frame(lines: list[tuple] = LINES) -> pd.DataFrame:
    """The lines as ``eda.extract`` returns them (float price, naive UTC timestamps)."""
    frame = pd.DataFrame(lines, columns=CANONICAL_COLUMNS)
    return frame.assign(invoice_date=pd.to_datetime(frame["invoice_date"]), price=frame["price"].astype(float))


def until_run_date() -> pd.DataFrame:
    transactions = transactions_frame()
    return transactions[transactions["invoice_date"] < "2011-12-10"]


@pytest.fixture
def lines() -> pd.DataFrame:
    return eda.revenue_lines(until_run_date(), load_settings().rfm)


@pytest.fixture
def aggregates() -> eda.DailyAggregates:
    """The daily tables of the lines up to D, by the SQL the ingest step runs (DuckDB here)."""
    return eda.daily_aggregates(until_run_date(), load_settings().rfm)


# ---------------------------------------------------------------- pure transforms


def test_revenue_lines_keep_unidentified_customers_and_net_cancellations(lines):
    assert sorted(lines["invoice"]) == ["536001", "536001", "536002", "536003", "536006", "C536004"]
    assert sorted(lines["order"].dropna().unique()) == ["536001", "536002", "536003", "536006"]
    assert lines["revenue"].sum() == pytest.approx(NET_REVENUE)


def test_revenue_lines_follow_the_configured_exclusions():
    rules = load_settings().rfm.model_copy(
        update={"non_product_stock_codes": [], "drop_exact_duplicates": False, "net_of_cancellations": False}
    )
    kept = eda.revenue_lines(transactions_frame(LINES[:7]), rules)
    assert sorted(kept["invoice"]) == ["536001", "536001", "536002", "536002", "536003", "536003"], "POST, duplicate"
    assert kept["revenue"].sum() == pytest.approx(15.30 + 6.78 + 2 * 25.50 + 18.00 + 15.00), "no cancellation"


def test_daily_revenue_and_orders_include_days_without_purchases(aggregates):
    per_day = eda.daily_revenue_and_orders(aggregates.sales)
    assert [d.strftime("%Y-%m-%d") for d in per_day.index] == list(REVENUE_BY_DAY)
    assert per_day["revenue"].tolist() == pytest.approx(list(REVENUE_BY_DAY.values()))
    assert per_day["orders"].tolist() == list(ORDERS_BY_DAY.values())


def test_orders_by_weekday_and_hour_count_each_invoice_once(aggregates):
    grid = eda.orders_by_weekday_hour(aggregates.weekday_hour)
    assert grid.shape == (7, 24) and list(grid.index) == eda.WEEKDAYS
    assert grid.loc["Mon", 8] == 1 and grid.loc["Mon", 14] == 1, "536001 has two lines but is one order"
    assert grid.loc["Wed", 11] == 1 and grid.loc["Fri", 9] == 1
    assert grid.loc["Wed", 12] == 0, "a cancellation is no order"
    assert grid.to_numpy().sum() == 4


def test_top_countries_by_revenue(aggregates):
    top = eda.top_by_revenue(aggregates.country, "country", 2)
    assert top["country"].tolist() == ["France", "United Kingdom"]
    assert top["revenue"].tolist() == pytest.approx([40.50, 22.08 - 5.10])
    assert top["orders"].tolist() == [2, 1]
    assert top["revenue_share"].tolist() == pytest.approx([40.50 / NET_REVENUE, 16.98 / NET_REVENUE])


def test_top_products_are_named_by_their_most_frequent_description(aggregates):
    top = eda.top_products(aggregates.product, 10)
    assert top["stock_code"].tolist() == ["85123A", "22728", "71053"]
    assert top["revenue"].tolist() == pytest.approx([40.80 - 5.10, 26.25, 6.78])
    assert top["orders"].tolist() == [2, 2, 1]
    assert top.loc[top["stock_code"] == "22728", "description"].item() in {"ALARM CLOCK", "ALARM CLOCK PINK"}
    assert top.loc[top["stock_code"] == "85123A", "description"].item() == "WHITE HEART"


def test_daily_tables_add_up_to_the_whole_period(lines, aggregates):
    # per-day slices summed over days give the figures of the lines themselves
    assert aggregates.sales["revenue"].sum() == pytest.approx(lines["revenue"].sum())
    assert aggregates.sales["orders"].sum() == lines["order"].nunique()
    assert aggregates.sales["bronze_rows"].sum() == len(until_run_date())
    assert aggregates.sales["purchase_lines"].sum() == lines["order"].notna().sum()
    assert aggregates.country["revenue"].sum() == pytest.approx(NET_REVENUE)


def test_report_transforms_never_see_transaction_lines(aggregates):
    # the daily tables are small: one row per day, per (day, hour), per (day, country), per (day, product)
    assert len(aggregates.sales) == 3 and len(aggregates.weekday_hour) == 4  # 3 trading days, 4 orders
    assert "invoice" not in aggregates.product.columns and "customer_id" not in aggregates.country.columns


SEGMENTS = pd.DataFrame(
    {"recency_days": [40, 20, 10, 5], "frequency": [1, 2, 3, 5], "monetary": [10.0, 30.0, 50.0, 200.0]}
)


def test_rfm_correlations_have_the_expected_signs():
    correlations = eda.rfm_correlations(SEGMENTS)
    spearman, pearson = correlations["spearman"], correlations["pearson"]
    assert spearman.loc["frequency", "monetary"] == pytest.approx(1.0), "monotone increasing"
    assert spearman.loc["recency_days", "frequency"] == pytest.approx(-1.0), "monotone decreasing"
    assert 0 < pearson.loc["frequency", "monetary"] < 1, "increasing but not linear"
    assert pearson.loc["recency_days", "monetary"] < 0


def test_rfm_distribution_quantiles():
    stats = eda.rfm_distribution(SEGMENTS)
    assert stats.loc["frequency", "count"] == 4 and stats.loc["frequency", "50%"] == 2.5
    assert stats.loc["monetary", "max"] == 200.0 and stats.loc["recency_days", "min"] == 5
    assert stats.loc["monetary", "mean"] == pytest.approx(72.5)


def test_segment_shares_put_the_biggest_revenue_first_per_scheme():
    summary = pd.DataFrame(
        {
            "label_scheme": ["rfm", "cluster", "cluster", "rfm"],
            "segment": ["Lost", "VIP", "Low-Value", "Champions"],
            "customers": [3, 1, 3, 1],
            "customer_share": [0.75, 0.25, 0.75, 0.25],
            "revenue_share": [0.2, 0.8, 0.2, 0.8],
        }
    )
    shares = eda.segment_shares(summary)
    assert list(zip(shares["label_scheme"], shares["segment"], strict=True)) == [
        ("cluster", "VIP"),
        ("cluster", "Low-Value"),
        ("rfm", "Champions"),
        ("rfm", "Lost"),
    ]


# ---------------------------------------------------------------- the step on a Delta lake + MLflow


def write_daily_tables(settings: Settings) -> None:
    """The daily tables of every line (the ingest step's output), written with delta-rs."""
    aggregates = eda.daily_aggregates(transactions_frame(), load_settings().rfm)
    for name, table in DAILY_TABLES.items():
        frame = getattr(aggregates, name).assign(transaction_date=lambda f: f["transaction_date"].dt.date)
        write_deltalake(settings.table_path(table), frame, partition_by="transaction_date")


def write_bronze(settings: Settings) -> None:
    """Bronze and the daily tables (the report must read only the latter)."""
    write_daily_tables(settings)

    def utc(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    columns = list(zip(*LINES, strict=True))
    table = pa.table(
        {
            "invoice": pa.array(columns[0], pa.string()),
            "stock_code": pa.array(columns[1], pa.string()),
            "description": pa.array(columns[2], pa.string()),
            "quantity": pa.array(columns[3], pa.int32()),
            "invoice_date": pa.array([utc(t) for t in columns[4]], pa.timestamp("us", tz="UTC")),
            "price": pa.array([Decimal(p) for p in columns[5]], pa.decimal128(18, 3)),
            "customer_id": pa.array(columns[6], pa.string()),
            "country": pa.array(columns[7], pa.string()),
            "transaction_date": pa.array([utc(t).date() for t in columns[4]], pa.date32()),
        }
    )
    write_deltalake(settings.table_path("bronze_transactions"), table, partition_by="transaction_date")


def append_partitioned(settings: Settings, name: str, rows: pa.Table) -> None:
    write_deltalake(settings.table_path(name), rows, partition_by="snapshot_date", mode="append")


def write_gold(settings: Settings, day: date, customers: int, run_id: str) -> None:
    """``customers`` customers in two clusters and two RFM segments, in the gold schemas."""
    ids = [str(12000 + i) for i in range(customers)]
    monetary = [Decimal(100 * (i + 1)) for i in range(customers)]
    labels = ["VIP" if i % 2 else "Low-Value" for i in range(customers)]
    segments = pa.table(
        {
            "snapshot_date": pa.array([day] * customers, pa.date32()),
            "customer_id": ids,
            "recency_days": pa.array([30 - i for i in range(customers)], pa.int32()),
            "frequency": pa.array([1 + i for i in range(customers)], pa.int32()),
            "monetary": pa.array(monetary, pa.decimal128(20, 3)),
            "r_score": pa.array([1] * customers, pa.int32()),
            "f_score": pa.array([1] * customers, pa.int32()),
            "m_score": pa.array([1] * customers, pa.int32()),
            "rfm_score": ["111"] * customers,
            "rfm_segment": ["Champions" if label == "VIP" else "Lost" for label in labels],
            "cluster": pa.array([1 if label == "VIP" else 0 for label in labels], pa.int32()),
            "cluster_label": labels,
            "country": ["United Kingdom"] * customers,
            "first_purchase_date": pa.array([date(2011, 12, 1)] * customers, pa.date32()),
            "last_purchase_date": pa.array([date(2011, 12, 5)] * customers, pa.date32()),
            "tenure_days": pa.array([8] * customers, pa.int32()),
            "mlflow_run_id": [run_id] * customers,
        }
    )
    append_partitioned(settings, "gold_customer_segments", segments)
    frame = segments.to_pandas().assign(monetary=lambda f: f["monetary"].astype(float))
    rows = []
    for scheme, column in (("cluster", "cluster_label"), ("rfm", "rfm_segment")):
        for segment, group in frame.groupby(column):
            revenue_share = group["monetary"].sum() / frame["monetary"].sum()
            rows.append((scheme, segment, len(group), len(group) / customers, revenue_share))
    summary = pa.table(
        {
            "snapshot_date": pa.array([day] * len(rows), pa.date32()),
            "label_scheme": [r[0] for r in rows],
            "segment": [r[1] for r in rows],
            "customers": pa.array([r[2] for r in rows], pa.int64()),
            "customer_share": [r[3] for r in rows],
            "revenue_share": [r[4] for r in rows],
        }
    )
    append_partitioned(settings, "gold_segment_summary", summary)


def start_cluster_run(settings: Settings, day: date) -> str:
    """An MLflow run tagged as the cluster step tags the day's run."""
    tags = {DAG_TAG: settings.dag.dag_id, RUN_DATE_TAG: day.isoformat(), STEP_TAG: "cluster"}
    return tracking.client(settings).create_run(tracking.experiment_id(settings), tags=tags).info.run_id


@pytest.fixture
def lake_with_run(settings: Settings) -> tuple[Settings, str]:
    """Bronze lines, the gold snapshot of RUN_DATE (8 customers) and the day's MLflow run."""
    run_id = start_cluster_run(settings, RUN_DATE)
    write_bronze(settings)
    write_gold(settings, RUN_DATE, customers=8, run_id=run_id)
    return settings, run_id


def assert_valid_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path.name} is not a PNG"
        assert image.width >= 400 and image.height >= 250, f"{path.name} is {image.size}"
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 5, f"{path.name} is blank"


def test_report_has_every_chart_and_lands_in_the_days_mlflow_run(lake_with_run):
    settings, run_id = lake_with_run
    result = eda.eda_day(RUN_DATE, settings)
    report = settings.path("reports_dir") / f"date={RUN_DATE}" / "report.html"
    assert result["report"] == str(report) and result["mlflow_run_id"] == run_id
    page = report.read_text(encoding="utf-8")
    for chart in CHARTS:
        assert_valid_png(report.parent / chart)
        assert f'src="{eda.embedded(report.parent / chart)}" data-chart="{chart}"' in page, f"{chart} not embedded"
    assert "<th>revenue</th><td>68.73</td>" in page, "hand-computed: lines dated <= D only, net of the C line"
    artifacts = {a.path for a in tracking.client(settings).list_artifacts(run_id, "eda")}
    assert artifacts == {f"eda/{name}" for name in CHARTS | {"report.html"}}


def test_rerun_replaces_the_report(lake_with_run):
    settings, run_id = lake_with_run
    first = Path(eda.eda_day(RUN_DATE, settings)["report"]).parent
    (first / "stale.png").write_bytes(b"left over")
    second = Path(eda.eda_day(RUN_DATE, settings)["report"]).parent
    assert second == first
    assert {p.name for p in second.iterdir()} == CHARTS | {"report.html"}, "stale files survived the re-run"
    assert [p.name for p in settings.path("reports_dir").iterdir()] == [f"date={RUN_DATE}"], "temp dirs left behind"
    assert len(tracking.client(settings).list_artifacts(run_id, "eda")) == len(CHARTS) + 1


def test_a_tiny_snapshot_still_gets_a_report(settings):
    run_id = start_cluster_run(settings, RUN_DATE)
    write_bronze(settings)
    write_gold(settings, RUN_DATE, customers=1, run_id=run_id)
    report = Path(eda.eda_day(RUN_DATE, settings)["report"])
    page = report.read_text(encoding="utf-8")
    assert "<th>customers in the snapshot</th><td>1</td>" in page
    for chart in CHARTS:
        assert f'data-chart="{chart}"' in page and 'src="data:image/png;base64,' in page
        assert_valid_png(report.parent / chart)


def test_a_day_without_gold_snapshot_is_a_lake_state_error(lake_with_run):
    settings, _ = lake_with_run
    with pytest.raises(LakeStateError, match="no gold snapshot for 2011-12-08"):
        eda.eda_day(date(2011, 12, 8), settings)
    assert not settings.path("reports_dir").exists()


def test_an_empty_lake_is_a_lake_state_error(settings):
    with pytest.raises(LakeStateError, match="no gold_customer_segments table"):
        eda.eda_day(RUN_DATE, settings)


def test_no_mlflow_run_for_the_day_is_a_lake_state_error(settings):
    write_bronze(settings)
    write_gold(settings, RUN_DATE, customers=3, run_id="never-logged")
    with pytest.raises(LakeStateError, match="no active MLflow run for 2011-12-09"):
        eda.eda_day(RUN_DATE, settings)
    assert not settings.path("reports_dir").exists()


def test_gold_from_a_superseded_run_is_a_lake_state_error(lake_with_run):
    settings, old_run = lake_with_run
    new_run = start_cluster_run(settings, RUN_DATE)
    tracking.supersede_earlier_runs(settings, settings.dag.dag_id, RUN_DATE, new_run)
    with pytest.raises(LakeStateError, match="run the label step for that date again"):
        eda.eda_day(RUN_DATE, settings)


def test_command_line_exits_2_on_a_lake_state_error(settings, monkeypatch, capsys):
    monkeypatch.setattr(eda, "load_settings", lambda: settings)
    assert run_named_step(["eda", "--run-date", "2011-12-09"]) == 2
    assert "no gold_customer_segments table" in capsys.readouterr().err
