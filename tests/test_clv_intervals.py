"""The CLV interval against customers simulated from known parameters, and the isotonic calibration map."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from jobs.core.calibration import IDENTITY, ISOTONIC, Calibration, calibration_of, fit_isotonic, identity
from jobs.core.clv import ClvParams, lifetime_value, value_quantiles

# a daily BG/NBD with real dropout and a Gamma-Gamma with a finite mean spend (q > 1)
TRUE = ClvParams(r=0.8, alpha=40.0, a=0.6, b=2.5, p=3.0, q=4.0, v=150.0)
MONTHS, RATE, DAYS = 12, 0.01, 30


def simulate(params: ClvParams, customers: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Customers drawn from the models: their summary at T (days since the first purchase, 30..360)
    and the discounted spend they then make over ``MONTHS`` (the truth the interval should cover)."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for number in range(customers):
        rate, dropout = rng.gamma(params.r, 1 / params.alpha), rng.beta(params.a, params.b)
        nu = rng.gamma(params.q, 1 / params.v)
        T = float(rng.integers(30, 361))
        times, alive, now = [], True, 0.0
        while alive:  # purchases after the first (at 0), each followed by a dropout with probability ``dropout``
            now += rng.exponential(1 / rate)
            times.append(now)
            alive = rng.random() >= dropout
        past = [t for t in times if t <= T]
        spends = rng.gamma(params.p, 1 / nu, len(past))
        rows.append((str(number), float(len(past)), past[-1] if past else 0.0, T, spends.mean() if past else 0.0))
        value = 0.0
        for t in times:
            if T < t <= T + MONTHS * DAYS:
                value += rng.gamma(params.p, 1 / nu) / (1 + RATE) ** np.ceil((t - T) / DAYS)
        truth.append(value)
    summary = pd.DataFrame(rows, columns=["customer_id", "frequency", "recency", "T", "monetary_value"])
    return summary, np.array(truth)


@pytest.fixture(scope="module")
def simulated() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    summary, truth = simulate(TRUE, 3000, seed=11)
    bounds = value_quantiles(TRUE, summary, (0.1, 0.9), MONTHS, RATE, DAYS, draws=600, seed=3)
    return summary, truth, bounds


def test_the_p10_p90_interval_covers_the_simulated_truth_at_its_rate(simulated) -> None:
    """For a quantile q_tau of a mixed distribution (an atom at 0: no purchase): P(Y < q) <= tau <= P(Y <= q)."""
    _, truth, bounds = simulated
    for column, tau in ((0, 0.1), (1, 0.9)):
        q = bounds[:, column]
        assert (truth < q).mean() <= tau + 0.025, f"P{round(tau * 100)} too high"
        assert (truth <= q).mean() >= tau - 0.025, f"P{round(tau * 100)} too low"
    inside = ((truth >= bounds[:, 0]) & (truth <= bounds[:, 1])).mean()
    assert 0.78 <= inside <= 0.95


def test_the_intervals_mean_is_the_closed_form_clv(simulated) -> None:
    summary, _, _ = simulated
    draws = value_quantiles(TRUE, summary, tuple(np.linspace(0.0005, 0.9995, 1000)), MONTHS, RATE, DAYS, 2000, seed=5)
    closed = lifetime_value(TRUE, summary, MONTHS, RATE, DAYS)
    assert draws.mean(axis=1).sum() == pytest.approx(closed.sum(), rel=0.03)


def test_wrong_parameters_miss_the_rate() -> None:
    """The coverage check can fail: a model that thinks customers buy 4x less often puts P90 too low."""
    summary, truth = simulate(TRUE, 1500, seed=12)
    slow = ClvParams(**{**TRUE.as_dict(), "alpha": TRUE.alpha * 4})
    bounds = value_quantiles(slow, summary, (0.1, 0.9), MONTHS, RATE, DAYS, draws=400, seed=3)
    assert (truth <= bounds[:, 1]).mean() < 0.9 - 0.025


def test_no_dropout_as_on_the_real_data_is_a_gamma_poisson_interval(simulated) -> None:
    """The real data's fit has a ~ 1e-15: every dropout draw is 0.0; nobody drops out, the mean still holds."""
    summary, _, _ = simulated
    flat = ClvParams(**{**TRUE.as_dict(), "a": 1.9e-15})
    draws = value_quantiles(
        flat, summary.head(300), tuple(np.linspace(0.0005, 0.9995, 1000)), MONTHS, RATE, DAYS, 2000, 5
    )
    assert np.isfinite(draws).all()
    closed = lifetime_value(flat, summary.head(300), MONTHS, RATE, DAYS)
    assert draws.mean(axis=1).sum() == pytest.approx(closed.sum(), rel=0.03)


def test_the_same_seed_gives_the_same_interval(simulated) -> None:
    summary, _, bounds = simulated
    again = value_quantiles(TRUE, summary.head(50), (0.1, 0.9), MONTHS, RATE, DAYS, draws=600, seed=3)
    assert np.array_equal(again, value_quantiles(TRUE, summary.head(50), (0.1, 0.9), MONTHS, RATE, DAYS, 600, 3))
    assert (bounds[:, 0] <= bounds[:, 1]).all()


# --- the calibration map ----------------------------------------------------------------------------


def test_isotonic_map_learns_an_overconfident_model_and_clips_outside() -> None:
    rng = np.random.default_rng(1)
    predicted = rng.random(4000)
    bought = rng.random(4000) < predicted / 2  # the model says twice the real chance
    calibration = fit_isotonic(predicted, bought, min_customers=100, reason="test")
    assert calibration.method == ISOTONIC
    mapped = calibration.apply(np.array([0.2, 0.6, 0.9]))
    assert mapped == pytest.approx([0.1, 0.3, 0.45], abs=0.06)
    assert calibration.apply(np.array([-1.0, 2.0])).tolist() == [calibration.y[0], calibration.y[-1]]
    assert (np.diff(calibration.apply(np.linspace(0, 1, 101))) >= 0).all(), "monotone: the ranking is kept"


def test_too_few_customers_or_one_outcome_is_the_identity_with_its_reason() -> None:
    few = fit_isotonic([0.1, 0.5], [0, 1], min_customers=100, reason="test")
    assert few.method == IDENTITY and "fewer than 100" in few.reason
    same = fit_isotonic(np.linspace(0, 1, 200), np.zeros(200), min_customers=100, reason="test")
    assert same.method == IDENTITY and "same outcome" in same.reason
    assert few.apply([0.3, 0.7]).tolist() == [0.3, 0.7]


def test_a_map_round_trips_through_a_model_versions_metadata() -> None:
    fitted = Calibration(ISOTONIC, "fitted as of 2011-06-10", (0.1, 0.5), (0.05, 0.2))
    assert Calibration.from_dict(fitted.as_dict()) == fitted
    old = Calibration.from_dict(None)
    assert old.method == IDENTITY and "no calibration" in old.reason
    assert identity("why").as_dict() == {"method": IDENTITY, "reason": "why", "x": [], "y": []}


def test_calibration_is_fitted_on_the_history_before_the_origin_only() -> None:
    rng = np.random.default_rng(2)
    start = pd.Timestamp("2011-01-01")
    rows = [
        (f"c{i}", (start + pd.Timedelta(days=int(d))).date(), 10.0)
        for i in range(300)
        for d in sorted(set(rng.integers(0, 300, rng.integers(1, 6))))
    ]
    days = pd.DataFrame(rows, columns=["customer_id", "purchase_date", "amount"])
    seen = []

    def fit(summary: pd.DataFrame) -> ClvParams:
        seen.append(summary)
        return TRUE

    origin, end = date(2011, 8, 1), date(2011, 10, 30)
    calibration = calibration_of(days, origin, end, min_history_days=90, min_customers=100, fit=fit)
    assert calibration.method == ISOTONIC and str(origin) in calibration.reason
    assert (seen[0]["T"] <= (pd.Timestamp(origin) - start).days).all(), "the refit sees nothing after the origin"
    assert len(calibration.x) == len(calibration.y) >= 2
    short = calibration_of(days, date(2011, 3, 1), date(2011, 5, 30), 90, 100, fit=fit)
    assert short.method == IDENTITY and "fewer than 90" in short.reason
    none = calibration_of(days, date(2010, 12, 1), date(2011, 3, 1), 90, 100, fit=fit)
    assert none.method == IDENTITY and "no purchase" in none.reason
