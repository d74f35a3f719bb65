"""The forecast-vs-actual scorecard: the forecast of an earlier snapshot against what its customers then did.

Pure pandas. The forecast: one row per customer of the snapshot of D - horizon (its label under each
scheme, P(purchase), expected purchases and spend); the actual: purchase days and net spend per
customer in (D - horizon, D]. Customers first seen after the forecast are not in it (nothing was
predicted for them); a forecast customer without a purchase in the window bought 0.
"""

from __future__ import annotations

from datetime import date

import pandas as pd

from jobs.definitions import LABEL_SCHEMES, SCORECARD_ALL, SCORECARD_COLUMNS

FORECAST_COLUMNS = ["customer_id", *LABEL_SCHEMES.values(), "p_purchase", "expected_purchases", "expected_spend"]


def actual_in_window(days: pd.DataFrame, after: date, through: date) -> pd.DataFrame:
    """customer_id -> purchases (purchase days) and spend (net) dated in (``after``, ``through``];
    ``days``: customer_id, purchase_date, amount (``jobs.core.clv.net_purchase_days``)."""
    when = pd.to_datetime(days["purchase_date"])
    window = days[(when > pd.Timestamp(after)) & (when <= pd.Timestamp(through))]
    return window.groupby("customer_id").agg(purchases=("purchase_date", "size"), spend=("amount", "sum"))


def _row(group: pd.DataFrame) -> dict[str, float]:
    predicted, actual = group["expected_purchases"], group["purchases"]
    return {
        "customers": len(group),
        "mean_predicted_purchases": float(predicted.mean()),
        "mean_actual_purchases": float(actual.mean()),
        "bias": float(predicted.mean() - actual.mean()),
        "mae": float((predicted - actual).abs().mean()),
        "mean_predicted_p": float(group["p_purchase"].mean()),
        "share_bought": float((actual > 0).mean()),
        "predicted_spend": float(group["expected_spend"].sum(min_count=len(group))),
        "actual_spend": float(group["spend"].sum()),
    }


def scorecard(forecast: pd.DataFrame, actual: pd.DataFrame, forecast_date: date, snapshot_date: date) -> pd.DataFrame:
    """``SCORECARD_COLUMNS``: the overall row, then one per label scheme and segment of the forecast.
    ``forecast``: ``FORECAST_COLUMNS`` (expected_spend may be missing: null predicted spend)."""
    joined = forecast[FORECAST_COLUMNS].merge(actual, left_on="customer_id", right_index=True, how="left")
    joined = joined.fillna({"purchases": 0, "spend": 0.0})
    rows = [{"label_scheme": SCORECARD_ALL, "segment": SCORECARD_ALL, **_row(joined)}] if len(joined) else []
    for scheme, column in LABEL_SCHEMES.items():
        for segment, group in joined.groupby(column, sort=True):
            rows.append({"label_scheme": scheme, "segment": str(segment), **_row(group)})
    table = pd.DataFrame(rows, columns=[c for c in SCORECARD_COLUMNS if c not in ("snapshot_date", "forecast_date")])
    table.insert(0, "forecast_date", forecast_date)
    table.insert(0, "snapshot_date", snapshot_date)
    return table.astype({"customers": "int64"})


def overall_bias(table: pd.DataFrame) -> float | None:
    """The bias of the overall row, None without one (no forecast to score)."""
    overall = table[(table["label_scheme"] == SCORECARD_ALL) & (table["segment"] == SCORECARD_ALL)]
    return None if overall.empty else float(overall["bias"].iloc[0])
