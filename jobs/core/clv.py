"""Customer value: the BG/NBD + Gamma-Gamma summary and closed-form scoring, numpy/scipy only.

The summary follows the library convention of ``pymc_marketing.clv.rfm_summary`` with
``time_unit="D"``: a customer's purchases are grouped by day (several invoices on one day are one
purchase occasion), ``frequency`` = repeat purchase days (purchase days - 1), ``recency`` = days
from the first to the last purchase day, ``T`` = days from the first purchase day to the as-of
date, ``monetary_value`` = mean spend of the repeat purchase days (0 without repeats). This is
*not* the pipeline's RFM ``frequency`` (distinct invoices) nor its ``recency_days`` (days since
the last purchase); the columns keep the library's names on purpose.

Scoring uses the published closed forms, identical (to the last bit, same scipy functions) to
``pymc_marketing.clv`` 0.19.2 ``BetaGeoModel`` / ``GammaGammaModel`` predictions:
- BG/NBD (Fader, Hardie & Lee 2005, eq. 10): expected purchases in the next t days; P(alive)
  (Fader, Hardie & Lee 2008, note 021); P(no purchase in the next t days) (note 039, eq. 34).
- Gamma-Gamma (Fader & Hardie 2013, note 025): expected spend per purchase day.
- CLV as ``pymc_marketing.clv.utils.customer_lifetime_value``: monthly increments of expected
  purchases x expected spend, discounted per month (a month = ``days_per_month`` days).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date

import numpy as np
import pandas as pd
from scipy.special import betaln, expit, hyp2f1

SUMMARY_COLUMNS = ["customer_id", "frequency", "recency", "T", "monetary_value"]
BG_PARAMS, GG_PARAMS = ("r", "alpha", "a", "b"), ("p", "q", "v")


@dataclass(frozen=True)
class ClvParams:
    """The fitted BG/NBD (r, alpha, a, b; days) and Gamma-Gamma (p, q, v) parameters."""

    r: float
    alpha: float
    a: float
    b: float
    p: float
    q: float
    v: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> ClvParams:
        values = json.loads(text)
        return cls(**{name: float(values[name]) for name in (*BG_PARAMS, *GG_PARAMS)})

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def is_finite(self) -> bool:
        return bool(np.isfinite(list(asdict(self).values())).all())


def customer_summary(purchase_days: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Per customer: frequency, recency, T and monetary_value (library convention, days) as of ``as_of``.

    ``purchase_days``: customer_id, purchase_date (date), amount (the day's purchase spend); later
    dates are ignored.
    """
    days = purchase_days.assign(purchase_date=pd.to_datetime(purchase_days["purchase_date"]))
    days = days[days["purchase_date"] <= pd.Timestamp(as_of)]
    days = days.groupby(["customer_id", "purchase_date"], as_index=False)["amount"].sum().astype({"amount": float})
    first = days.groupby("customer_id")["purchase_date"].transform("min")
    repeat = days["purchase_date"] > first
    summary = (
        days.assign(repeat_amount=days["amount"].where(repeat))
        .groupby("customer_id")
        .agg(
            purchase_days=("purchase_date", "size"),
            first=("purchase_date", "min"),
            last=("purchase_date", "max"),
            monetary_value=("repeat_amount", "mean"),
        )
    )
    return pd.DataFrame(
        {
            "customer_id": summary.index.to_numpy(),
            "frequency": (summary["purchase_days"] - 1).to_numpy(dtype=float),
            "recency": (summary["last"] - summary["first"]).dt.days.to_numpy(dtype=float),
            "T": (pd.Timestamp(as_of) - summary["first"]).dt.days.to_numpy(dtype=float),
            "monetary_value": summary["monetary_value"].fillna(0.0).to_numpy(dtype=float),
        }
    )


def _arrays(*values: object) -> list[np.ndarray]:
    return [np.asarray(value, dtype=float) for value in values]


def expected_purchases(params: ClvParams, x: object, t_x: object, T: object, t: float) -> np.ndarray:
    """BG/NBD E[purchases in the next ``t`` days | x, t_x, T]."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = _arrays(x, t_x, T)
    head = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    head *= (a + b + x - 1) / (a - 1)
    return head / (1 + (x > 0) * (a / (b + x - 1)) * ((alpha + T) / (alpha + t_x)) ** (r + x))


def p_alive(params: ClvParams, x: object, t_x: object, T: object) -> np.ndarray:
    """BG/NBD P(still active | x, t_x, T); 1 for customers without a repeat purchase (model property)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = _arrays(x, t_x, T)
    log_ratio = (r + x) * np.log((alpha + T) / (alpha + t_x)) + np.log(a / (b + np.maximum(x, 1) - 1))
    return np.where(x == 0, 1.0, expit(-log_ratio))


def p_no_purchase(params: ClvParams, x: object, t_x: object, T: object, t: float) -> np.ndarray:
    """BG/NBD P(no purchase in the next ``t`` days | x, t_x, T)."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x, t_x, T = _arrays(x, t_x, T)
    e, f, m = alpha + t_x, alpha + T + t, alpha + T
    beta = betaln(a, b + x)
    k_e = betaln(a + 1, b + x - 1) - (r + x) * np.log(e)
    k_f = beta - (r + x) * np.log(f)
    k_m = beta - (r + x) * np.log(m)
    k1, k2 = np.maximum(k_e, k_f), np.maximum(k_e, k_m)
    with np.errstate(invalid="ignore"):  # x = 0 and b < 1: betaln(a+1, b-1) is undefined, as in the library
        return np.exp(k1 - k2) * (np.exp(k_e - k1) + np.exp(k_f - k1)) / (np.exp(k_e - k2) + np.exp(k_m - k2))


def expected_spend(params: ClvParams, x: object, m_x: object) -> np.ndarray:
    """Gamma-Gamma E[spend per purchase day | x, m_x]: the population mean shrunk towards m_x."""
    x, m_x = _arrays(x, m_x)
    weight = params.p * x / (params.p * x + params.q - 1)
    return (1 - weight) * (params.v * params.p / (params.q - 1)) + weight * m_x


def lifetime_value(
    params: ClvParams, summary: pd.DataFrame, months: int, monthly_discount_rate: float, days_per_month: int
) -> np.ndarray:
    """Expected discounted spend over the next ``months`` months."""
    x, t_x, T, m_x = (summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T", "monetary_value"))
    spend = expected_spend(params, x, m_x)
    value, before = np.zeros_like(spend), 0.0
    for month in range(1, months + 1):
        cumulative = expected_purchases(params, x, t_x, T, month * days_per_month)
        value += spend * (cumulative - before) / (1 + monthly_discount_rate) ** month
        before = cumulative
    return value


def score(
    params: ClvParams,
    summary: pd.DataFrame,
    horizon_days: int,
    months: int,
    monthly_discount_rate: float,
    days_per_month: int,
) -> pd.DataFrame:
    """Per customer of ``summary``: P(alive), P(>= 1 purchase), expected purchases in ``horizon_days``, CLV."""
    x, t_x, T = (summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    return pd.DataFrame(
        {
            "customer_id": summary["customer_id"].to_numpy(),
            "p_alive": p_alive(params, x, t_x, T),
            "p_purchase": 1 - p_no_purchase(params, x, t_x, T, horizon_days),
            "expected_purchases": expected_purchases(params, x, t_x, T, horizon_days),
            "clv": lifetime_value(params, summary, months, monthly_discount_rate, days_per_month),
        }
    )


def at_risk_value(monetary: pd.Series, p_purchase: pd.Series, max_p_purchase: float) -> pd.Series:
    """Above-median historical monetary and a probability to buy again below ``max_p_purchase``."""
    return (monetary.astype(float) > monetary.astype(float).median()) & (p_purchase < max_p_purchase)


def fit_params(summary: pd.DataFrame) -> ClvParams:
    """MAP fits of ``pymc_marketing.clv`` BetaGeoModel (every customer) and GammaGammaModel (customers with
    a repeat purchase and positive spend), default priors. The import takes seconds and the first fit on
    a machine compiles C code (about a minute); later fits take seconds."""
    from pymc_marketing import clv

    purchases = clv.BetaGeoModel()
    purchases.fit(data=summary[["customer_id", "frequency", "recency", "T"]], method="map", progressbar=False)
    repeaters = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    spend = clv.GammaGammaModel()
    spend.fit(data=repeaters[["customer_id", "frequency", "monetary_value"]], method="map", progressbar=False)
    fitted = {
        name: float(model.fit_result[name].values.squeeze())
        for model, names in ((purchases, BG_PARAMS), (spend, GG_PARAMS))
        for name in names
    }
    return ClvParams(**fitted)
