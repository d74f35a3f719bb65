"""A small real Delta lake in the exact schema of the gold tables, written with delta-rs (no Spark).

The schemas are those a real pipeline run writes (checked against jobs/steps/label.py output: frequency is int).

Deterministic: three snapshots of 80, 100 and 120 customers (later snapshots add new
customers; one customer is missing from the last one), four countries, heavy-tailed F and M.
The segment summary is computed from the customers with pandas, as ``jobs/steps/label.py`` does.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import write_deltalake

from jobs.definitions import LABEL_SCHEMES

SNAPSHOTS = [date(2011, 12, 2), date(2011, 12, 5), date(2011, 12, 9)]
CUSTOMERS_PER_SNAPSHOT = [80, 100, 120]
MISSING_FROM_LAST = "C0005"
CLUSTER_LABELS = ["VIP", "Loyal", "At-Risk", "Low-Value"]
RFM_SEGMENTS = ["Champions", "Loyal", "Potential Loyalist", "New", "At Risk", "Hibernating", "Lost"]
COUNTRIES = ["United Kingdom", "France", "Germany", "EIRE"]

SEGMENTS_SCHEMA = pa.schema(
    [
        ("snapshot_date", pa.date32()),
        ("customer_id", pa.string()),
        ("recency_days", pa.int32()),
        ("frequency", pa.int32()),
        ("monetary", pa.decimal128(20, 3)),
        ("r_score", pa.int32()),
        ("f_score", pa.int32()),
        ("m_score", pa.int32()),
        ("rfm_score", pa.string()),
        ("rfm_segment", pa.string()),
        ("cluster", pa.int32()),
        ("cluster_label", pa.string()),
        ("country", pa.string()),
        ("first_purchase_date", pa.date32()),
        ("last_purchase_date", pa.date32()),
        ("tenure_days", pa.int32()),
        ("mlflow_run_id", pa.string()),
        ("p_alive", pa.float64()),
        ("p_purchase_90d", pa.float64()),
        ("p_purchase_90d_calibrated", pa.float64()),
        ("expected_purchases_90d", pa.float64()),
        ("expected_spend_90d", pa.float64()),
        ("clv_12m", pa.float64()),
        ("clv_12m_p10", pa.float64()),
        ("clv_12m_p90", pa.float64()),
        ("at_risk_value", pa.bool_()),
    ]
)
SUMMARY_SCHEMA = pa.schema(
    [
        ("snapshot_date", pa.date32()),
        ("label_scheme", pa.string()),
        ("segment", pa.string()),
        ("customers", pa.int64()),
        ("customer_share", pa.float64()),
        ("mean_recency_days", pa.float64()),
        ("mean_frequency", pa.float64()),
        ("mean_monetary", pa.float64()),
        ("monetary_total", pa.decimal128(30, 3)),
        ("revenue_share", pa.float64()),
    ]
)


def customers_of(snapshot: date, count: int, seed: int) -> pd.DataFrame:
    """``count`` customers of one snapshot, in the gold customer_segments columns."""
    rng = np.random.default_rng(seed)
    ids = [f"C{i:04d}" for i in range(count) if not (snapshot == SNAPSHOTS[-1] and f"C{i:04d}" == MISSING_FROM_LAST)]
    n = len(ids)
    recency = rng.integers(0, 300, n)
    tenure = recency + rng.integers(0, 60, n)
    scores = rng.integers(1, 6, (n, 3))
    cluster = rng.integers(0, 4, n)
    frame = pd.DataFrame(
        {
            "snapshot_date": snapshot,
            "customer_id": ids,
            "recency_days": recency.astype("int32"),
            "frequency": rng.geometric(0.3, n).astype("int32"),
            "monetary": [Decimal(f"{v:.3f}") for v in rng.lognormal(6, 1.2, n)],
            "r_score": scores[:, 0].astype("int32"),
            "f_score": scores[:, 1].astype("int32"),
            "m_score": scores[:, 2].astype("int32"),
            "rfm_score": ["".join(map(str, row)) for row in scores],
            "rfm_segment": rng.choice(RFM_SEGMENTS, n),
            "cluster": cluster.astype("int32"),
            "cluster_label": [CLUSTER_LABELS[c] for c in cluster],
            "country": rng.choice(COUNTRIES, n, p=[0.6, 0.2, 0.15, 0.05]),
            "first_purchase_date": [snapshot - timedelta(days=int(t)) for t in tenure],
            "last_purchase_date": [snapshot - timedelta(days=int(r)) for r in recency],
            "tenure_days": tenure.astype("int32"),
            "mlflow_run_id": f"run-{snapshot:%Y%m%d}",
        }
    )
    return with_value(frame, rng)


def with_value(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The clv step's columns: P(alive), raw and calibrated P(purchase in 90 days), expected purchases and
    spend, 12-month CLV and its P10/P90, and the at-risk-value flag (above-median monetary, calibrated
    P(purchase) < 0.5, no purchase in 30 days: the step's default rule)."""
    n = len(frame)
    p_purchase = rng.uniform(0.05, 0.95, n)
    calibrated = p_purchase * 0.8
    money = frame["monetary"].astype(float)
    clv = rng.lognormal(7, 1.0, n)
    return frame.assign(
        p_alive=rng.uniform(0.5, 1.0, n),
        p_purchase_90d=p_purchase,
        p_purchase_90d_calibrated=calibrated,
        expected_purchases_90d=p_purchase * 2.5,
        expected_spend_90d=p_purchase * 2.5 * 40.0,
        clv_12m=clv,
        clv_12m_p10=clv * 0.2,
        clv_12m_p90=clv * 2.5,
        at_risk_value=(money > money.median()) & (calibrated < 0.5) & (frame["recency_days"] >= 30),
    )


def summary_of(customers: pd.DataFrame) -> pd.DataFrame:
    """The gold segment summary of one snapshot's customers (both label schemes)."""
    money = customers["monetary"].astype(float)
    frames = []
    for scheme, column in LABEL_SCHEMES.items():
        grouped = customers.assign(money=money).groupby(column)
        frame = pd.DataFrame(
            {
                "customers": grouped.size(),
                "mean_recency_days": grouped["recency_days"].mean(),
                "mean_frequency": grouped["frequency"].mean(),
                "mean_monetary": grouped["money"].mean(),
                "monetary_total": grouped["monetary"].apply(lambda s: sum(s, Decimal(0))),
            }
        ).reset_index(names="segment")
        frame["customer_share"] = frame["customers"] / len(customers)
        frame["revenue_share"] = frame["monetary_total"].astype(float) / money.sum()
        frames.append(frame.assign(label_scheme=scheme, snapshot_date=customers["snapshot_date"].iloc[0]))
    return pd.concat(frames, ignore_index=True)


def segments_schema(value_columns: bool = True) -> pa.Schema:
    """gold/customer_segments' schema; without the clv step's columns (gold written before that step
    existed) when not ``value_columns``."""
    from jobs.definitions import AT_RISK_VALUE, CLV_COLUMNS

    value_names = {*CLV_COLUMNS.values(), AT_RISK_VALUE}
    return SEGMENTS_SCHEMA if value_columns else pa.schema([f for f in SEGMENTS_SCHEMA if f.name not in value_names])


def write_snapshot(lake_dir: Path, customers: pd.DataFrame, value_columns: bool = True) -> None:
    """Append one snapshot to both gold tables (partitioned by snapshot_date, like the pipeline)."""
    for name, frame, schema in (
        ("gold/customer_segments", customers, segments_schema(value_columns)),
        ("gold/segment_summary", summary_of(customers), SUMMARY_SCHEMA),
    ):
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
        write_deltalake(str(lake_dir / name), table, partition_by=["snapshot_date"], mode="append")


def write_gold_fixture(lake_dir: Path, value_columns: bool = True) -> pd.DataFrame:
    """Write the three snapshots; returns every customer row written (for independent expectations)."""
    frames = [
        customers_of(day, count, seed=i)
        for i, (day, count) in enumerate(zip(SNAPSHOTS, CUSTOMERS_PER_SNAPSHOT, strict=True))
    ]
    for frame in frames:
        write_snapshot(lake_dir, frame, value_columns)
    everyone = pd.concat(frames, ignore_index=True)
    everyone["monetary"] = everyone["monetary"].astype(float)
    return everyone


def grid_request(day: str, scheme: str, start: int, end: int) -> dict:
    """The body Dash POSTs for one block of the customer grid."""
    return {
        "output": "..customer-grid.getRowsResponse...customer-count.children..",
        "outputs": [
            {"id": "customer-grid", "property": "getRowsResponse"},
            {"id": "customer-count", "property": "children"},
        ],
        "inputs": [{"id": "customer-grid", "property": "getRowsRequest", "value": {"startRow": start, "endRow": end}}],
        "state": [
            {"id": "snapshot-date", "property": "value", "value": day},
            {"id": "scheme", "property": "value", "value": scheme},
            {"id": "segment", "property": "value", "value": None},
            {"id": "country", "property": "value", "value": None},
            {"id": "at-risk-only", "property": "value", "value": []},
        ],
        "changedPropIds": ["customer-grid.getRowsRequest"],
    }


class OffLoopClient:
    """Flask's test client, called from a worker thread. pytest-playwright's sync API leaves an asyncio
    loop running in the main thread once a browser test has run, and Dash dispatches callbacks through
    asgiref, which refuses to run inside a running loop (a 500 that depends on test order)."""

    def __init__(self, http) -> None:
        self.http = http

    def _off_loop(self, method: str, *args, **kwargs):
        with ThreadPoolExecutor(max_workers=1) as worker:
            return worker.submit(getattr(self.http, method), *args, **kwargs).result()

    def get(self, *args, **kwargs):
        return self._off_loop("get", *args, **kwargs)

    def post(self, *args, **kwargs):
        return self._off_loop("post", *args, **kwargs)
