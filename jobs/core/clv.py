"""Customer value: the BG/NBD + Gamma-Gamma summary and closed-form scoring, numpy/scipy only.

The summary follows the library convention of ``pymc_marketing.clv.rfm_summary`` with
``time_unit="D"``: a customer's purchases are grouped by day (several invoices on one day are one
purchase occasion), ``frequency`` = repeat purchase days (purchase days - 1), ``recency`` = days
from the first to the last purchase day, ``T`` = days from the first purchase day to the as-of
date, ``monetary_value`` = mean spend of the repeat purchase days (0 without repeats). This is
*not* the pipeline's RFM ``frequency`` (distinct invoices) nor its ``recency_days`` (days since
the last purchase); the columns keep the library's names on purpose.

Scoring uses the published closed forms, equal to ``pymc_marketing.clv`` 0.19.2 ``BetaGeoModel`` /
``GammaGammaModel`` predictions except ``p_no_purchase`` (the library lacks the x > 0 indicator):
- BG/NBD (Fader, Hardie & Lee 2005, eq. 10): expected purchases in the next t days; P(alive)
  (Fader, Hardie & Lee 2008, note 021); P(no purchase in the next t days) from the paper's likelihood with the x > 0
  indicator (the library's note 039 form lacks it; see ``p_no_purchase``).
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


NET_LINE_COLUMNS = ["customer_id", "stock_code", "purchase_date", "amount"]


def net_purchase_days(purchases: pd.DataFrame, cancellations: pd.DataFrame) -> pd.DataFrame:
    """customer_id, purchase_date, amount: each customer's purchase days net of their cancellations.

    Both inputs have ``NET_LINE_COLUMNS`` (``amount`` = quantity x price, positive for purchases,
    negative for cancellation lines). A cancellation takes back what it cancels, matched as:
    1. the same customer and stock code, the most recent purchase day on or before the cancellation
       date (up to that day's spend on the code);
    2. more cancelled than that day bought on the code: the excess from the rest of that day's spend;
       no purchase of the code: from the customer's most recent purchase day on or before the
       cancellation date (any code), up to that day's remaining spend. A cancellation older than every
       purchase of the customer cancels nothing that is known (the purchase predates the data).
    A day whose net spend is 0 is no purchase day; a customer whose purchases were all cancelled has no
    purchase day at all (not a buyer). The RFM ``monetary`` nets the same lines per customer; this
    places them on days, which the value models need.
    """
    item_days = (
        purchases.groupby(["customer_id", "stock_code", "purchase_date"], as_index=False)["amount"]
        .sum()
        .astype({"amount": float})
    )
    item_days["purchase_date"] = pd.to_datetime(item_days["purchase_date"])
    taken = (
        cancellations.groupby(["customer_id", "stock_code", "purchase_date"], as_index=False)["amount"]
        .sum()
        .astype({"amount": float})
    )
    taken = taken.assign(purchase_date=pd.to_datetime(taken["purchase_date"]), amount=-taken["amount"])
    taken = taken[taken["amount"] > 0].rename(columns={"purchase_date": "cancel_date", "amount": "cancelled"})
    # the keys as the purchases type them (an empty frame from Spark has object columns, a full one strings)
    taken = taken.astype({key: item_days[key].dtype for key in ("customer_id", "stock_code")})
    keys = ["customer_id", "stock_code"]
    matched = pd.merge_asof(
        taken.sort_values("cancel_date"),
        item_days.sort_values("purchase_date").assign(matched_date=lambda d: d["purchase_date"])[
            [*keys, "purchase_date", "matched_date"]
        ],
        left_on="cancel_date",
        right_on="purchase_date",
        by=keys,
        direction="backward",
    ).drop(columns="purchase_date")
    per_item = (
        matched.dropna(subset=["matched_date"])
        .groupby([*keys, "matched_date"], as_index=False)["cancelled"]
        .sum()
        .rename(columns={"matched_date": "purchase_date"})
    )
    item_days = item_days.merge(per_item, on=[*keys, "purchase_date"], how="left").fillna({"cancelled": 0.0})
    item_days["net"] = (item_days["amount"] - item_days["cancelled"]).clip(lower=0.0)
    excess = item_days.assign(left=item_days["cancelled"] - (item_days["amount"] - item_days["net"]))
    leftover = pd.concat(
        [
            matched.loc[matched["matched_date"].isna(), ["customer_id", "cancel_date", "cancelled"]],
            excess.loc[excess["left"] > 0, ["customer_id", "purchase_date", "left"]].set_axis(
                ["customer_id", "cancel_date", "cancelled"], axis=1
            ),
        ]
    )
    days = item_days.groupby(["customer_id", "purchase_date"], as_index=False)["net"].sum()
    if not leftover.empty:
        placed = pd.merge_asof(
            leftover.sort_values("cancel_date"),
            days[["customer_id", "purchase_date"]].sort_values("purchase_date"),
            left_on="cancel_date",
            right_on="purchase_date",
            by="customer_id",
            direction="backward",
        ).dropna(subset=["purchase_date"])
        per_day = placed.groupby(["customer_id", "purchase_date"], as_index=False)["cancelled"].sum()
        days = days.merge(per_day, on=["customer_id", "purchase_date"], how="left").fillna({"cancelled": 0.0})
        days["net"] = (days["net"] - days["cancelled"]).clip(lower=0.0)
    days = days[days["net"] > 0]
    return pd.DataFrame(
        {
            "customer_id": days["customer_id"].to_numpy(),
            "purchase_date": days["purchase_date"].dt.date.to_numpy(),
            "amount": days["net"].to_numpy(dtype=float),
        }
    ).reset_index(drop=True)


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
    """BG/NBD P(no purchase in the next ``t`` days | x, t_x, T), Fader, Hardie & Lee (2005) likelihood:

        [B(a, b+x) / (alpha+T+t)^(r+x) + d B(a+1, b+x-1) / (alpha+t_x)^(r+x)]
        / [B(a, b+x) / (alpha+T)^(r+x) + d B(a+1, b+x-1) / (alpha+t_x)^(r+x)],   d = 1 if x > 0 else 0.

    The second terms are "dropped out after the last purchase", possible only after a repeat purchase
    (the d term). pymc-marketing 0.19.2 omits d: exact only while a ~ 0; for x = 0 and b < 1 it also
    takes scipy's ``betaln(a+1, b-1)``, log|B| of a negative argument. Here the d term is evaluated at
    max(x, 1) (b + x - 1 >= b > 0) and zeroed for x = 0, so any b > 0 is valid.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if min(r, alpha, a, b) <= 0:
        raise ValueError(f"BG/NBD parameters must be positive: {params}")
    x, t_x, T = _arrays(x, t_x, T)
    log_alive = betaln(a, b + x)
    log_dropped = np.where(x > 0, betaln(a + 1, b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x), -np.inf)
    numerator = np.logaddexp(log_alive - (r + x) * np.log(alpha + T + t), log_dropped)
    denominator = np.logaddexp(log_alive - (r + x) * np.log(alpha + T), log_dropped)
    return np.exp(numerator - denominator)


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


def at_risk_value(
    monetary: pd.Series,
    p_purchase_calibrated: pd.Series,
    recency_days: pd.Series,
    min_monetary_quantile: float,
    max_p_purchase: float,
    min_recency_days: int,
) -> pd.Series:
    """The one at-risk definition for marketing: value at stake (net historical monetary above its
    ``min_monetary_quantile`` over the night's customers), unlikely to come back (calibrated P(purchase in
    90 days) below ``max_p_purchase``) and no purchase in the last ``min_recency_days`` days (someone who
    just bought is not one to win back)."""
    money = monetary.astype(float)
    valuable = money > money.quantile(min_monetary_quantile)
    return valuable & (p_purchase_calibrated < max_p_purchase) & (recency_days.astype(float) >= min_recency_days)


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


def value_quantiles(
    params: ClvParams,
    summary: pd.DataFrame,
    quantiles: tuple[float, ...],
    months: int,
    monthly_discount_rate: float,
    days_per_month: int,
    draws: int,
    seed: int,
) -> np.ndarray:
    """Per customer (rows) the ``quantiles`` (columns) of the discounted spend over ``months``, from the
    models' predictive distribution by Monte Carlo (``draws`` per customer, fixed ``seed``).

    Each draw follows the models given the customer's history: alive with P(alive); if alive, a rate
    lambda ~ Gamma(r + x, alpha + T) and a dropout probability p ~ Beta(a, b + x) (the posterior of an
    active customer), purchases per month ~ Poisson(lambda x days_per_month) until the purchase after
    which the customer drops out (Geometric(p)-th purchase, counted; none when p underflows to 0, as
    with the real data's a ~ 1e-15); a spend rate
    nu ~ Gamma(p_gg x + q, v + x m_x) (Gamma-Gamma posterior), a month's n purchases spend
    Gamma(p_gg n, nu). Its mean is ``lifetime_value``; its quantiles are the customer's interval.
    """
    rng = np.random.default_rng(seed)
    x, t_x, T, m_x = (summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T", "monetary_value"))
    shape = (draws, len(x))
    alive = rng.random(shape) < p_alive(params, x, t_x, T)
    rate = rng.gamma(params.r + x, 1 / (params.alpha + T), shape)
    dropout = rng.beta(params.a, params.b + x, shape)  # 0.0 when a ~ 0 (the real data's fit): never drops out
    never = np.iinfo(np.int64).max
    last = np.where(alive, np.where(dropout > 0, rng.geometric(np.where(dropout > 0, dropout, 1.0)), never), 0)
    nu = rng.gamma(params.p * x + params.q, 1 / (params.v + x * m_x), shape)
    value, before = np.zeros(shape), np.zeros(shape, dtype=np.int64)
    for month in range(1, months + 1):
        cumulative = np.minimum(before + rng.poisson(rate * days_per_month), last)
        spend = rng.gamma(params.p * (cumulative - before), 1 / nu)
        value += spend / (1 + monthly_discount_rate) ** month
        before = cumulative
    return np.quantile(value, quantiles, axis=0).T
