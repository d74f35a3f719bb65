"""Helpers shared by test modules (test modules never import each other)."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal

import numpy as np
import pandas as pd


def random_profile(rng: np.random.Generator, k: int, discrete: bool) -> pd.DataFrame:
    """A cluster profile; ``discrete`` draws from few values so ties and dominated clusters are common."""
    if discrete:
        recency = rng.integers(1, 4, k) * 30.0
        frequency = rng.integers(1, 4, k).astype(float)
        monetary = rng.integers(1, 4, k) * 250.0
    else:
        recency = rng.uniform(1, 365, k)
        frequency = rng.lognormal(1, 1, k)
        monetary = rng.lognormal(6, 1.5, k)
    return pd.DataFrame(
        {
            "cluster": rng.permutation(k),
            "customers": rng.integers(1, 500, k),
            "mean_recency_days": recency,
            "mean_frequency": frequency,
            "mean_monetary": monetary,
        }
    )


def dominates(a: pd.Series, b: pd.Series) -> bool:
    """A is at least as good as B in R (lower recency), F and M, and strictly better in one."""
    at_least = (
        a.mean_recency_days <= b.mean_recency_days
        and a.mean_frequency >= b.mean_frequency
        and a.mean_monetary >= b.mean_monetary
    )
    strictly = (
        a.mean_recency_days < b.mean_recency_days
        or a.mean_frequency > b.mean_frequency
        or a.mean_monetary > b.mean_monetary
    )
    return at_least and strictly


# ---------------------------------------------------------------- typed bronze rows by hand

BRONZE_SCHEMA = (
    "invoice string, stock_code string, description string, quantity int, invoice_date timestamp, "
    "price decimal(18,3), customer_id string, country string, transaction_date date"
)
UK = "United Kingdom"


def line(invoice, stock, quantity, day: date, price, customer, country=UK, description="ITEM", hour=10) -> tuple:
    """One typed bronze row (the transaction date is the invoice's day)."""
    return (
        invoice,
        stock,
        description,
        quantity,
        datetime.combine(day, time(hour)),
        Decimal(price),
        customer,
        country,
        day,
    )


def frame_of(spark, rows: list[tuple]):
    """A Spark frame of typed bronze rows."""
    return spark.createDataFrame(rows, BRONZE_SCHEMA)
