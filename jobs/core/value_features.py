"""The customer state as features for the supervised value model, and its training examples (pandas, pure).

Features as of an origin, from what the night already has: net purchase days
(``jobs.core.clv.net_purchase_days``) and the purchase lines per stock code, both dated up to the
origin only. Labels of a training example at origin ``o``: purchase days and net revenue in
(o, o + horizon]; examples come from rolling origins whose label window ends on or before the
scoring origin, so nothing after the scoring origin is ever seen.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

FEATURES = [
    "recency_days",
    "purchase_days",
    "monetary",
    "tenure_days",
    "mean_gap_days",
    "std_gap_days",
    "overdue_ratio",
    "spend_90",
    "spend_90_180",
    "spend_365",
    "days_90",
    "days_365",
    "spend_trend",
    "last_year_season_spend",
    "mean_day_spend",
    "max_day_spend",
    "product_breadth",
    "home_country",
]


def features(days: pd.DataFrame, items: pd.DataFrame, countries: pd.Series, origin: date, horizon: int) -> pd.DataFrame:
    """One row per customer with a net purchase day on or before ``origin`` (index customer_id).

    ``days``: customer_id, purchase_date, amount (net); ``items``: purchase lines with customer_id,
    stock_code, purchase_date; ``countries``: 1 for the home market by customer_id (missing: 0).
    """
    cut = pd.Timestamp(origin)
    d = days.assign(purchase_date=pd.to_datetime(days["purchase_date"]))
    d = d[d["purchase_date"] <= cut].sort_values(["customer_id", "purchase_date"])
    age = (cut - d["purchase_date"]).dt.days
    gap = d.groupby("customer_id")["purchase_date"].diff().dt.days

    def spend_in(low: int, high: int) -> pd.Series:
        """Spend dated in [origin - high, origin - low) days (age in (low, high])."""
        return d["amount"].where((age >= low) & (age < high), 0.0)

    season_low, season_high = 365 - horizon, 365
    per = d.assign(
        age=age,
        gap=gap,
        s90=spend_in(0, 90),
        s180=spend_in(90, 180),
        s365=spend_in(0, 365),
        n90=(age < 90).astype(float),
        n365=(age < 365).astype(float),
        season=spend_in(season_low, season_high),
    ).groupby("customer_id")
    out = pd.DataFrame(
        {
            "recency_days": per["age"].min(),
            "purchase_days": per.size(),
            "monetary": per["amount"].sum(),
            "tenure_days": per["age"].max(),
            "mean_gap_days": per["gap"].mean(),
            "std_gap_days": per["gap"].std(),
            "spend_90": per["s90"].sum(),
            "spend_90_180": per["s180"].sum(),
            "spend_365": per["s365"].sum(),
            "days_90": per["n90"].sum(),
            "days_365": per["n365"].sum(),
            "last_year_season_spend": per["season"].sum(),
            "mean_day_spend": per["amount"].mean(),
            "max_day_spend": per["amount"].max(),
        }
    )
    out["overdue_ratio"] = out["recency_days"] / out["mean_gap_days"]
    out["spend_trend"] = out["spend_90"] - out["spend_90_180"]
    bought = items[pd.to_datetime(items["purchase_date"]) <= cut]
    out["product_breadth"] = bought.groupby("customer_id")["stock_code"].nunique().reindex(out.index, fill_value=0)
    out["home_country"] = countries.reindex(out.index).fillna(0).astype(float)
    return out[FEATURES].astype(float).fillna(-1.0)


def labels(days: pd.DataFrame, origin: date, horizon: int) -> pd.DataFrame:
    """Per customer: purchase days and net revenue in (origin, origin + horizon] (index customer_id)."""
    when = pd.to_datetime(days["purchase_date"])
    window = days[(when > pd.Timestamp(origin)) & (when <= pd.Timestamp(origin + timedelta(days=horizon)))]
    return window.groupby("customer_id").agg(purchases=("purchase_date", "size"), revenue=("amount", "sum"))


def training_origins(origin: date, first_day: date, horizon: int, step_days: int, min_history_days: int) -> list[date]:
    """Origins whose label window ends on or before ``origin``, every ``step_days`` back, each with at least
    ``min_history_days`` of history after ``first_day``; newest first."""
    out, current = [], origin - timedelta(days=horizon)
    while current >= first_day + timedelta(days=min_history_days):
        out.append(current)
        current -= timedelta(days=step_days)
    return out


def example_frame(feature_rows: pd.DataFrame, label_rows: pd.DataFrame, origin: date) -> pd.DataFrame:
    """Features joined with labels (0 when the customer did not buy), tagged with the origin."""
    joined = feature_rows.join(label_rows.reindex(feature_rows.index, fill_value=0))
    return joined.assign(
        bought=(joined["purchases"] > 0).astype(float),
        log_revenue=np.log1p(joined["revenue"].clip(lower=0).astype(float)),
        origin=origin.isoformat(),
    )
