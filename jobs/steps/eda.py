"""Step 5 — a static EDA report of the run: PNG charts + one HTML page, no JVM.

``python -m jobs eda --run-date YYYY-MM-DD``

Extract: the daily sales aggregates dated <= D (``jobs.core.daily``: sales, orders by hour,
country, product; written by the ingest step and the backfill) and the gold snapshot of D,
read with delta-rs. Never bronze: the report's memory and time do not grow with the number
of transaction lines, only with days x (countries + products).
Transform: pure pandas functions, small frames in, small frames out.
Load: PNGs (matplotlib's object API, no display) and ``report.html`` (images by relative path)
into ``paths.reports_dir/date=D/``, replaced as a whole on a re-run, and logged under ``eda/``
to the day's MLflow run.

Revenue is the shop's, not only the segmented customers': the lines RFM counts for monetary
(purchases: no ``rfm.non_purchase_prefixes``, quantity > 0, price > 0; cancellations, netted
when ``rfm.net_of_cancellations``: ``rfm.cancellation_prefix`` and quantity < 0, on their own
date; no ``rfm.non_product_stock_codes``; exact duplicates dropped when
``rfm.drop_exact_duplicates``) but **with or without a customer id**; amount = quantity x price.
Orders = distinct purchase invoices (summed over days: an invoice never spans two dates).
"""

from __future__ import annotations

import html
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from deltalake import DeltaTable
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from jobs.adapters import tracking
from jobs.adapters.publish import published_version
from jobs.config import Rfm, Settings, load_settings
from jobs.core.daily import DAILY_TABLES, DAY_ROWS, counted_lines_sql, daily_sql
from jobs.definitions import RFM_MEASURES
from jobs.errors import LakeStateError

SEGMENT_COLUMNS = ["customer_id", *RFM_MEASURES, "mlflow_run_id"]
SUMMARY_COLUMNS = ["label_scheme", "segment", "customers", "customer_share", "revenue_share"]
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
CORRELATION_METHODS = ["spearman", "pearson"]
ARTIFACT_PATH = "eda"
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class DailyAggregates:
    """The daily tables up to D (``jobs.core.daily``): money as float, timestamps naive UTC."""

    sales: pd.DataFrame
    weekday_hour: pd.DataFrame
    country: pd.DataFrame
    product: pd.DataFrame


@dataclass(frozen=True)
class LakeSnapshot:
    """What the report reads: the daily aggregates up to D and the gold snapshot of D."""

    aggregates: DailyAggregates
    segments: pd.DataFrame
    segment_summary: pd.DataFrame


# ---------------------------------------------------------------- extract


def read_delta(
    settings: Settings, name: str, filters: list[tuple], columns: list[str] | None, version: int | None = None
) -> pd.DataFrame:
    """Rows of table ``name`` (at ``version``, else the latest) matching the partition ``filters``;
    LakeStateError when it is missing."""
    path = str(settings.table_path(name))
    if not DeltaTable.is_deltatable(path):
        raise LakeStateError(f"no {name} table at {path}: run the earlier steps first")
    return DeltaTable(path, version=version).to_pandas(filters=filters, columns=columns)


def typed_aggregates(tables: dict[str, pd.DataFrame]) -> DailyAggregates:
    """Money as float, timestamps as naive UTC, as the transforms expect."""
    for frame in tables.values():
        if "revenue" in frame:
            frame["revenue"] = frame["revenue"].astype(float)
        if "transaction_date" in frame:
            frame["transaction_date"] = pd.to_datetime(frame["transaction_date"])
    hours = tables["weekday_hour"]
    hours["hour_start"] = pd.to_datetime(hours["hour_start"], utc=True).dt.tz_convert(None)
    return DailyAggregates(**tables)


def extract(settings: Settings, run_date: date) -> LakeSnapshot:
    """The daily aggregates dated <= D and the gold tables of D."""
    snapshot = [("snapshot_date", "=", run_date)]
    segments = read_delta(
        settings,
        "gold_customer_segments",
        snapshot,
        SEGMENT_COLUMNS,
        published_version(settings, "gold_customer_segments", run_date),
    )
    if segments.empty:
        raise LakeStateError(f"no gold snapshot for {run_date}: run the label step for that date first")
    summary = read_delta(
        settings,
        "gold_segment_summary",
        snapshot,
        SUMMARY_COLUMNS,
        published_version(settings, "gold_segment_summary", run_date),
    )
    until = [("transaction_date", "<=", run_date)]
    tables = {name: read_delta(settings, table, until, None) for name, table in DAILY_TABLES.items()}
    segments["monetary"] = segments["monetary"].astype(float)
    return LakeSnapshot(typed_aggregates(tables), segments, summary)


# ---------------------------------------------------------------- transform


def daily_aggregates(transactions: pd.DataFrame, rules: Rfm) -> DailyAggregates:
    """The daily tables of ``transactions`` computed by DuckDB with the SQL the ingest step runs in Spark."""
    frame = transactions.assign(transaction_date=transactions["invoice_date"].dt.normalize())
    with duckdb.connect() as con:
        con.register(DAY_ROWS, frame)
        tables = {name: con.sql(sql).df() for name, sql in daily_sql(rules, "DOUBLE").items()}
    return typed_aggregates(tables)


def revenue_lines(transactions: pd.DataFrame, rules: Rfm) -> pd.DataFrame:
    """Product lines that make revenue (customer id not required): signed ``revenue`` and ``order``.

    Purchase lines, plus cancellation lines (negative) when ``rules.net_of_cancellations``;
    ``order`` is the invoice of a purchase line and null on a cancellation line: the SQL the
    daily tables aggregate (``jobs.core.daily.counted_lines_sql``), run by DuckDB.
    """
    frame = transactions.assign(transaction_date=transactions["invoice_date"].dt.normalize())
    with duckdb.connect() as con:
        con.register(DAY_ROWS, frame)
        lines = con.sql(counted_lines_sql(rules)).df()
    return lines.rename(columns={"order_invoice": "order"}).drop(columns="transaction_date")


def daily_revenue_and_orders(sales: pd.DataFrame) -> pd.DataFrame:
    """Net revenue and orders per calendar day, days without any line included as 0."""
    with_lines = sales[(sales["purchase_lines"] + sales["cancellation_lines"]) > 0]
    per_day = with_lines.groupby(with_lines["transaction_date"].rename("day"))[["revenue", "orders"]].sum().sort_index()
    if per_day.empty:
        return per_day
    calendar = pd.date_range(per_day.index.min(), per_day.index.max(), freq="D", name="day")
    return per_day.reindex(calendar, fill_value=0)


def orders_by_weekday_hour(hours: pd.DataFrame) -> pd.DataFrame:
    """Distinct orders per weekday (rows, Mon..Sun) and hour of day (columns, 0..23) of the order's time."""
    at = hours["hour_start"]
    counts = hours.groupby([at.dt.day_of_week, at.dt.hour])["orders"].sum().unstack(fill_value=0)
    grid = counts.reindex(index=range(7), columns=range(24), fill_value=0).astype(int)
    grid.index, grid.columns = WEEKDAYS, list(range(24))
    return grid


def top_by_revenue(totals: pd.DataFrame, key: str, n: int) -> pd.DataFrame:
    """The ``n`` values of ``key`` with the most revenue, with their orders and revenue share.

    ``totals``: rows of ``key``, ``revenue`` and ``orders`` (per day, or already summed).
    """
    summed = totals.groupby(key, dropna=False)[["revenue", "orders"]].sum()
    total = summed["revenue"].sum()
    ranked = summed.assign(revenue_share=lambda f: f["revenue"] / total if total else 0.0).sort_values(
        ["revenue", "orders"], ascending=False, kind="stable"
    )
    return ranked.head(n).reset_index()


def top_products(products: pd.DataFrame, n: int) -> pd.DataFrame:
    """Top ``n`` stock codes by revenue, named by their most frequent description.

    ``products``: the daily product table (per date, stock code and description: revenue,
    lines, and the code's distinct orders that day).
    """
    per_code_day = products.groupby(["transaction_date", "stock_code"], dropna=False).agg(
        revenue=("revenue", "sum"), orders=("code_orders", "max")
    )
    top = top_by_revenue(per_code_day.reset_index(), "stock_code", n)
    named = products[products["stock_code"].isin(top["stock_code"]) & products["description"].notna()]
    counts = named.groupby(["stock_code", "description"])["lines"].sum().reset_index()
    counts = counts.sort_values(["stock_code", "lines", "description"], ascending=[True, False, True])
    names = counts.drop_duplicates("stock_code").set_index("stock_code")["description"]
    return top.assign(description=top["stock_code"].map(names).fillna(""))


def rfm_distribution(segments: pd.DataFrame) -> pd.DataFrame:
    """Per R/F/M feature: customers, mean and the 0/25/50/75/90/100 % quantiles."""
    stats = segments[RFM_MEASURES].describe(percentiles=[0.25, 0.5, 0.75, 0.9])
    return stats.drop(index="std").T


def segment_shares(summary: pd.DataFrame) -> pd.DataFrame:
    """Customers and revenue share of each segment, per label scheme, largest revenue first."""
    columns = ["label_scheme", "segment", "customers", "customer_share", "revenue_share"]
    return summary[columns].sort_values(["label_scheme", "revenue_share", "segment"], ascending=[True, False, True])


def rfm_correlations(segments: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Spearman and Pearson correlation matrices of recency, frequency and monetary."""
    return {method: segments[RFM_MEASURES].corr(method=method) for method in CORRELATION_METHODS}


# ---------------------------------------------------------------- charts


def _save(figure: Figure, path: Path) -> Path:
    """Lay out and write ``figure`` as a PNG."""
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_revenue_and_orders(per_day: pd.DataFrame, path: Path) -> Path:
    """Two stacked lines over the calendar: revenue, then orders."""
    figure = Figure(figsize=(10, 5.5))
    revenue_axes, orders_axes = figure.subplots(2, 1, sharex=True)
    revenue_axes.plot(per_day.index, per_day["revenue"], color="tab:blue", linewidth=1)
    revenue_axes.set(ylabel="revenue", title="Revenue and orders per day")
    orders_axes.plot(per_day.index, per_day["orders"], color="tab:orange", linewidth=1)
    orders_axes.set(ylabel="orders (invoices)", xlabel="day")
    locator = AutoDateLocator()
    orders_axes.xaxis.set(major_locator=locator, major_formatter=ConciseDateFormatter(locator))
    return _save(figure, path)


def plot_weekday_hour(grid: pd.DataFrame, path: Path) -> Path:
    """Heat map of orders, weekdays down, hours across."""
    figure = Figure(figsize=(10, 3.8))
    axes = figure.subplots()
    image = axes.imshow(grid.to_numpy(), aspect="auto", cmap="Blues")
    axes.set(xticks=range(24), yticks=range(7), yticklabels=grid.index, xlabel="hour of day")
    axes.set_title("Orders by weekday and hour")
    figure.colorbar(image, ax=axes, label="orders")
    return _save(figure, path)


def plot_top(top: pd.DataFrame, label: str, title: str, path: Path) -> Path:
    """Horizontal revenue bars, the largest on top."""
    figure = Figure(figsize=(9, 0.4 * len(top) + 1.5))
    axes = figure.subplots()
    names = top[label].fillna("(unknown)").astype(str).str.slice(0, 45)
    axes.barh(names[::-1], top["revenue"][::-1], color="tab:green")
    axes.set(xlabel="revenue", title=title)
    return _save(figure, path)


def plot_rfm_distributions(segments: pd.DataFrame, bins: int, path: Path) -> Path:
    """One histogram per feature; F and M on log-spaced bins (values below 1 drawn at 1)."""
    figure = Figure(figsize=(12, 3.8))
    for axes, feature in zip(figure.subplots(1, 3), RFM_MEASURES, strict=True):
        values = segments[feature].to_numpy(dtype=float)
        if feature == "recency_days":
            axes.hist(values, bins=bins, color="tab:purple")
        else:  # heavy-tailed: log-spaced bins from 1
            values = np.clip(values, 1, None)
            axes.hist(values, bins=np.geomspace(1, max(values.max(), 2), bins), color="tab:purple")
            axes.set_xscale("log")
        axes.set(xlabel=feature, ylabel="customers")
    figure.suptitle("R / F / M distributions of the snapshot")
    return _save(figure, path)


def plot_segment_shares(shares: pd.DataFrame, path: Path) -> Path:
    """Per label scheme, customer share beside revenue share for every segment."""
    schemes = sorted(shares["label_scheme"].unique())
    rows_of_axes = max(len(schemes), 1)
    figure = Figure(figsize=(11, 3.2 * rows_of_axes))
    for axes, scheme in zip(figure.subplots(rows_of_axes, 1, squeeze=False)[:, 0], schemes, strict=False):
        rows = shares[shares["label_scheme"] == scheme]
        positions = np.arange(len(rows))
        axes.bar(positions - 0.2, rows["customer_share"], width=0.4, label="customers")
        axes.bar(positions + 0.2, rows["revenue_share"], width=0.4, label="revenue")
        axes.set_xticks(positions, rows["segment"], rotation=20, ha="right")
        axes.set(ylabel="share", title=f"Segment sizes and revenue shares ({scheme} labels)")
        axes.legend()
    return _save(figure, path)


def plot_correlations(correlations: dict[str, pd.DataFrame], path: Path) -> Path:
    """One annotated heat map per correlation method (n/a where undefined)."""
    figure = Figure(figsize=(10, 4))
    for axes, (method, matrix) in zip(figure.subplots(1, len(correlations)), correlations.items(), strict=True):
        image = axes.imshow(matrix.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="RdBu_r")
        ticks = range(len(matrix))
        axes.set(xticks=ticks, yticks=ticks, xticklabels=matrix.columns, yticklabels=matrix.index, title=method)
        for (row, column), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            axes.text(column, row, text, ha="center", va="center", color="white" if abs(value) > 0.5 else "black")
        figure.colorbar(image, ax=axes)
    figure.suptitle("Correlation of the RFM features")
    return _save(figure, path)


# ---------------------------------------------------------------- load


@dataclass(frozen=True)
class Section:
    """One part of the report: a heading, its chart and the table behind it."""

    title: str
    chart: str
    table: pd.DataFrame


def build_sections(snapshot: LakeSnapshot, settings: Settings, out_dir: Path) -> list[Section]:
    """Compute every transform, draw its chart into ``out_dir`` and return the report sections."""
    top_n, bins = settings.eda.top_n, settings.eda.histogram_bins
    aggregates = snapshot.aggregates
    per_day = daily_revenue_and_orders(aggregates.sales)
    grid = orders_by_weekday_hour(aggregates.weekday_hour)
    countries = top_by_revenue(aggregates.country, "country", top_n)
    products = top_products(aggregates.product, top_n)
    shares = segment_shares(snapshot.segment_summary)
    correlations = rfm_correlations(snapshot.segments)
    plot_revenue_and_orders(per_day, out_dir / "revenue_orders.png")
    plot_weekday_hour(grid, out_dir / "orders_weekday_hour.png")
    plot_top(countries, "country", f"Top {top_n} countries by revenue", out_dir / "top_countries.png")
    plot_top(products, "description", f"Top {top_n} products by revenue", out_dir / "top_products.png")
    plot_rfm_distributions(snapshot.segments, bins, out_dir / "rfm_distributions.png")
    plot_segment_shares(shares, out_dir / "segment_shares.png")
    plot_correlations(correlations, out_dir / "rfm_correlation.png")
    weekly = per_day.resample("W-SUN").sum() if not per_day.empty else per_day
    return [
        Section("Revenue and orders over time", "revenue_orders.png", weekly.rename_axis("week ending").tail(12)),
        Section("Orders by weekday and hour", "orders_weekday_hour.png", grid.loc[:, (grid.sum() > 0)]),
        Section("Top countries", "top_countries.png", countries),
        Section("Top products", "top_products.png", products),
        Section("R / F / M distributions", "rfm_distributions.png", rfm_distribution(snapshot.segments)),
        Section("Segment sizes and revenue shares", "segment_shares.png", shares),
        Section(
            "Correlation of the RFM features",
            "rfm_correlation.png",
            pd.concat(correlations, names=["method", "feature"]),
        ),
    ]


def headline(snapshot: LakeSnapshot) -> dict[str, str]:
    """The report's key figures."""
    sales = snapshot.aggregates.sales
    return {
        "bronze lines up to the day": f"{sales['bronze_rows'].sum():,}",
        "purchase lines": f"{sales['purchase_lines'].sum():,}",
        "cancellation lines netted": f"{sales['cancellation_lines'].sum():,}",
        "orders (distinct purchase invoices)": f"{sales['orders'].sum():,}",
        "revenue": f"{sales['revenue'].sum():,.2f}",
        "customers in the snapshot": f"{len(snapshot.segments):,}",
    }


def embedded(chart: Path) -> str:
    """A PNG as a ``data:`` URI: the page renders alone (MLflow's artifact viewer, a mail attachment)."""
    import base64

    return "data:image/png;base64," + base64.b64encode(chart.read_bytes()).decode("ascii")


def render_html(run_date: date, run_id: str, figures: dict[str, str], sections: list[Section], folder: Path) -> str:
    """One self-contained page: the charts in ``folder`` embedded as data URIs (the PNGs also sit beside it)."""
    facts = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in figures.items())
    body = "".join(
        f'<h2>{html.escape(s.title)}</h2><img src="{embedded(folder / s.chart)}" data-chart="{s.chart}" '
        f'alt="{html.escape(s.title)}">'
        f"{s.table.to_html(float_format=lambda x: f'{x:,.3f}', border=0)}"
        for s in sections
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>RFM EDA report {run_date}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:auto}img{max-width:100%}"
        "table{border-collapse:collapse;font-size:13px;margin:8px 0 24px}td,th{padding:2px 8px;text-align:right}"
        f"</style></head><body><h1>RFM EDA report — snapshot {run_date}</h1>"
        f"<p>MLflow run <code>{html.escape(run_id)}</code>. Revenue: product purchase lines, with or without "
        f"a customer id, net of cancellations as RFM's monetary; orders: distinct purchase invoices.</p><table>{facts}</table>{body}"
        "</body></html>"
    )


def replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``, removing the previous report (no stale files survive)."""
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        target.rename(retired / target.name)
        new.rename(target)
        shutil.rmtree(retired)
    else:
        new.rename(target)


def active_run_id(settings: Settings, run_date: date, segments: pd.DataFrame) -> str:
    """The day's active MLflow run that labelled the gold snapshot."""
    runs = tracking.runs_for_date(settings, settings.dag.dag_id, run_date)
    if not runs:
        raise LakeStateError(f"no active MLflow run for {run_date}: run the cluster step for that date first")
    labelled_by = set(segments["mlflow_run_id"])
    matching = [r.info.run_id for r in runs if r.info.run_id in labelled_by]
    if not matching:
        raise LakeStateError(
            f"the gold snapshot of {run_date} was labelled from run(s) {sorted(labelled_by)}, not from the active "
            f"MLflow run {runs[0].info.run_id}: run the label step for that date again"
        )
    return matching[0]


def eda_day(run_date: date, settings: Settings | None = None) -> dict[str, Any]:
    """Write the report of ``run_date`` and log it to the day's MLflow run; returns where it is."""
    settings = settings or load_settings()
    snapshot = extract(settings, run_date)
    run_id = active_run_id(settings, run_date, snapshot.segments)
    target = settings.report_dir(run_date)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the report is for readers
    try:
        sections = build_sections(snapshot, settings, staging)
        page = render_html(run_date, run_id, headline(snapshot), sections, staging)
        (staging / REPORT_FILE).write_text(page, encoding="utf-8")
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    tracking.client(settings).log_artifacts(run_id, str(target), ARTIFACT_PATH)
    return {
        "run_date": run_date.isoformat(),
        "report": str(target / REPORT_FILE),
        "charts": sorted(s.chart for s in sections),
        "mlflow_run_id": run_id,
        "mlflow_artifact_path": ARTIFACT_PATH,
    }
