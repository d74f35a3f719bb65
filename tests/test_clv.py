"""Predicted customer value: the summary, the closed forms against pymc-marketing, the plan, the flag."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from jobs.core.clv import (
    ClvParams,
    at_risk_value,
    customer_summary,
    expected_purchases,
    expected_spend,
    net_purchase_days,
    p_alive,
    p_no_purchase,
    score,
)
from jobs.definitions import AT_RISK_VALUE, CLV_COLUMNS
from jobs.steps.clv import plan_clv, value_columns

AS_OF = date(2011, 12, 9)
# Published CDNOW BG/NBD parameters (weeks; Fader, Hardie & Lee 2005), fitted daily-scale GG, and a
# daily BG/NBD set with real dropout, so P(alive) and P(no purchase) span a range.
CDNOW = ClvParams(r=0.243, alpha=4.414, a=0.793, b=2.426, p=6.25, q=3.74, v=15.44)
DAILY = ClvParams(r=0.65, alpha=57.5, a=0.35, b=2.8, p=2.44, q=3.30, v=382.6)


def purchase_lines(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "purchase_date", "amount"]).assign(
        purchase_date=lambda f: pd.to_datetime(f["purchase_date"]).dt.date
    )


HISTORY = purchase_lines(
    [
        ("a", "2011-12-01", 10.0),  # one purchase day only
        ("b", "2011-11-01", 100.0),
        ("b", "2011-11-01", 50.0),  # same day: one purchase occasion of 150
        ("b", "2011-11-11", 30.0),
        ("b", "2011-11-21", 60.0),
        ("c", "2011-06-01", 20.0),
        ("c", "2011-12-10", 99.0),  # after the as-of date: ignored
    ]
)


def item_lines(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "stock_code", "purchase_date", "amount"]).assign(
        purchase_date=lambda f: pd.to_datetime(f["purchase_date"]).dt.date
    )


def test_cancellations_take_back_what_they_cancel_from_the_day_it_was_bought() -> None:
    purchases = item_lines(
        [
            ("whale", "X", "2011-05-01", 168_470.0),  # cancelled the same day (issue 28's customer 16446)
            ("whale", "Y", "2011-05-01", 2.90),
            ("b", "X", "2011-03-01", 40.0),
            ("b", "X", "2011-04-01", 40.0),  # the most recent purchase of X before the cancellation
            ("b", "Z", "2011-04-01", 10.0),
            ("b", "Y", "2011-06-01", 25.0),
            ("gone", "X", "2011-02-01", 30.0),  # everything cancelled: not a buyer
        ]
    )
    cancellations = item_lines(
        [
            ("whale", "X", "2011-05-01", -168_470.0),
            ("b", "X", "2011-05-15", -40.0),
            ("b", "Q", "2011-05-20", -5.0),  # never bought Q: from b's latest day on or before (04-01)
            ("b", "X", "2011-02-01", -9.0),  # before any purchase of b: cancels nothing known
            ("gone", "X", "2011-02-20", -30.0),
        ]
    )
    days = net_purchase_days(purchases, cancellations).set_index(["customer_id", "purchase_date"])["amount"]
    assert days.to_dict() == pytest.approx(
        {
            ("whale", date(2011, 5, 1)): 2.90,
            ("b", date(2011, 3, 1)): 40.0,
            ("b", date(2011, 4, 1)): 5.0,
            ("b", date(2011, 6, 1)): 25.0,
        }
    )


def test_a_cancellation_larger_than_the_items_day_takes_the_rest_of_that_day_and_never_goes_negative() -> None:
    purchases = item_lines([("c", "X", "2011-03-01", 10.0), ("c", "Y", "2011-03-01", 15.0)])
    more = item_lines([("c", "X", "2011-03-02", -18.0)])
    assert net_purchase_days(purchases, more)["amount"].tolist() == pytest.approx([7.0])
    everything = item_lines([("c", "X", "2011-03-02", -100.0)])
    assert net_purchase_days(purchases, everything).empty


def test_no_cancellation_in_the_window_nets_nothing_whatever_the_empty_frames_types() -> None:
    """A window without cancellation lines: Spark's empty frame has object keys, the purchases strings."""
    purchases = item_lines([("a", "X", "2011-12-08", 10.0), ("a", "Y", "2011-12-09", 5.0)]).astype(
        {"customer_id": "string", "stock_code": "string"}
    )
    none = pd.DataFrame({c: pd.Series(dtype=object) for c in ("customer_id", "stock_code", "purchase_date")}).assign(
        amount=pd.Series(dtype=float)
    )
    days = net_purchase_days(purchases, none)
    assert days["amount"].tolist() == [10.0, 5.0] and days["customer_id"].tolist() == ["a", "a"]


def test_summary_counts_repeat_purchase_days() -> None:
    summary = customer_summary(HISTORY, AS_OF).set_index("customer_id")
    assert summary.loc["a"].tolist() == [0.0, 0.0, 8.0, 0.0]
    assert summary.loc["b"].tolist() == [2.0, 20.0, 38.0, 45.0], "two repeat days after the first, mean 45"
    assert summary.loc["c"].tolist() == [0.0, 0.0, 191.0, 0.0]


def test_summary_equals_the_librarys() -> None:
    from pymc_marketing.clv import rfm_summary

    rng = np.random.default_rng(4)
    days = pd.to_datetime("2011-01-01") + pd.to_timedelta(rng.integers(0, 340, 400), unit="D")
    lines = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 60, 400).astype(str),
            "purchase_date": days.date,
            "amount": rng.gamma(2.0, 50.0, 400).round(2),
        }
    )
    ours = customer_summary(lines, AS_OF).sort_values("customer_id").reset_index(drop=True)
    theirs = (
        rfm_summary(lines, "customer_id", "purchase_date", "amount", observation_period_end=str(AS_OF), time_unit="D")
        .sort_values("customer_id")
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(ours, theirs[ours.columns], check_dtype=False)


def test_the_papers_worked_example() -> None:
    # Fader, Hardie & Lee (2005): x = 2, t_x = 30.43, T = 38.86 weeks -> 1.226 purchases in the next 39 weeks.
    assert expected_purchases(CDNOW, 2, 30.43, 38.86, 39).item() == pytest.approx(1.226, abs=5e-4)


def test_no_purchase_of_the_papers_customer_tends_to_the_dropout_probability() -> None:
    # The paper's customer (x = 2, t_x = 30.43, T = 38.86 weeks, CDNOW fit with a = 0.793 > 0): an active
    # customer buys eventually, so P(no purchase in t) falls from 1 to P(dropped out) = 1 - P(alive).
    over = [p_no_purchase(CDNOW, 2, 30.43, 38.86, t).item() for t in (0, 1, 39, 520, 1e7)]
    assert over[0] == pytest.approx(1.0, abs=1e-12)
    assert over == sorted(over, reverse=True)
    assert over[-1] == pytest.approx(1 - p_alive(CDNOW, 2, 30.43, 38.86).item(), abs=1e-3)
    assert 0.2 < 1 - over[2] < 0.9


@pytest.mark.parametrize("a, b", [(0.793, 2.426), (0.002, 1.002), (0.5, 0.4)], ids=["cdnow", "a~0", "b<1"])
def test_no_purchase_of_a_one_time_buyer_is_the_gamma_poisson_zero(a: float, b: float) -> None:
    # x = 0: in the BG/NBD nobody drops out before a repeat purchase, so P(0 in t) = ((alpha+T)/(alpha+T+t))^r
    # whatever a and b (the library's form adds a dropout term: 0.160 instead of 0.370 in issue 28).
    params = ClvParams(r=0.8, alpha=60.0, a=a, b=b, p=6.25, q=3.74, v=15.44)
    expected = ((60.0 + 30) / (60.0 + 30 + 90)) ** 0.8
    assert p_no_purchase(params, 0, 0, 30, 90).item() == pytest.approx(expected, rel=1e-12)


def test_no_purchase_rejects_non_positive_parameters() -> None:
    with pytest.raises(ValueError, match="positive"):
        p_no_purchase(ClvParams(r=0.8, alpha=60.0, a=0.5, b=0.0, p=1, q=2, v=1), 1, 5, 30, 90)


@pytest.mark.parametrize("params", [CDNOW, DAILY], ids=["cdnow", "daily"])
def test_closed_forms_equal_the_librarys_predictions(params: ClvParams) -> None:
    import arviz as az
    from pymc_marketing import clv

    rng = np.random.default_rng(9)
    T = rng.uniform(10, 300, 200).round()
    recency = (T * rng.uniform(0, 1, 200)).round()
    frequency = np.where(recency > 0, rng.integers(1, 15, 200), 0).astype(float)
    data = pd.DataFrame(
        {
            "customer_id": range(200),
            "frequency": frequency,
            "recency": recency,
            "T": T,
            "monetary_value": np.where(frequency > 0, rng.gamma(2, 100, 200), 0.0),
        }
    )
    bg = clv.BetaGeoModel()
    bg.build_model(data[["customer_id", "frequency", "recency", "T"]])
    bg.idata = az.from_dict(posterior={k: np.array([[getattr(params, k)]]) for k in ("r", "alpha", "a", "b")})
    gg = clv.GammaGammaModel()
    gg.build_model(data[data["frequency"] > 0][["customer_id", "frequency", "monetary_value"]])
    gg.idata = az.from_dict(posterior={k: np.array([[getattr(params, k)]]) for k in ("p", "q", "v")})

    def lib(values) -> np.ndarray:
        return np.asarray(values).squeeze()

    x, t_x, age = data["frequency"], data["recency"], data["T"]
    np.testing.assert_allclose(p_alive(params, x, t_x, age), lib(bg.expected_probability_alive(data=data)), rtol=1e-12)
    np.testing.assert_allclose(
        expected_purchases(params, x, t_x, age, 90), lib(bg.expected_purchases(data=data, future_t=90)), rtol=1e-12
    )
    repeat = (x > 0).to_numpy()  # the library lacks the x > 0 indicator: right only for repeat buyers
    np.testing.assert_allclose(
        p_no_purchase(params, x, t_x, age, 90)[repeat],
        lib(bg.expected_probability_no_purchase(t=90, data=data))[repeat],
        rtol=1e-12,
    )
    ours = score(params, data, horizon_days=90, months=12, monthly_discount_rate=0.01, days_per_month=30)
    theirs = gg.expected_customer_lifetime_value(
        transaction_model=bg, data=data.copy(), future_t=12, discount_rate=0.01, time_unit="D"
    )
    np.testing.assert_allclose(ours["clv"], lib(theirs), rtol=1e-10)
    assert ours["p_alive"].min() < 0.9, "these parameters exercise P(alive) away from 1"


def test_params_round_trip_through_json() -> None:
    assert ClvParams.from_json(DAILY.to_json()) == DAILY
    assert not ClvParams(**{**DAILY.as_dict(), "a": float("nan")}).is_finite()


@pytest.mark.parametrize(
    ("night_type", "champion", "tonight", "retrained", "fit", "version"),
    [
        ("retrain", "3", None, True, True, None),
        ("resume", "3", None, True, True, None),  # the retry of a retrain night (found by fault injection)
        ("score", None, None, False, True, None),
        ("score", "3", None, False, False, "3"),
        ("rerun", "4", "3", True, False, "3"),
        ("retrain", "4", "4", True, False, "4"),
        ("resume", "4", "4", True, False, "4"),
        # the cluster step retried after its retrain completed (killed at after:cluster): a rerun
        # night of a date the clustering retrained on still refits (found by fault injection)
        ("rerun", "3", None, True, True, None),
        ("rerun", "3", None, False, False, "3"),  # a re-run of a scoring night scores with the champion
    ],
)
def test_the_plan_fits_on_retrain_dates_and_reuses_a_nights_version(
    night_type, champion, tonight, retrained, fit, version
) -> None:
    plan = plan_clv(night_type, champion, tonight, retrained)
    assert (plan.fit, plan.version) == (fit, version), plan.reason


def test_at_risk_value_is_spend_at_stake_unlikely_to_buy_and_not_recent() -> None:
    monetary = pd.Series([10.0, 20.0, 300.0, 400.0, 500.0, 600.0])  # median 350, 0.75 quantile 475
    p_purchase = pd.Series([0.1, 0.9, 0.2, 0.6, 0.49, 0.05])
    recency = pd.Series([90, 90, 90, 90, 30, 29])  # the last one bought 29 days ago: not at risk
    flagged = at_risk_value(monetary, p_purchase, recency, 0.5, 0.5, 30)
    assert flagged.tolist() == [False, False, False, False, True, False]
    assert at_risk_value(monetary, p_purchase, recency, 0.5, 0.5, 29).tolist()[-1], "29 days is enough at 29"
    higher = at_risk_value(monetary, p_purchase.where(monetary != 300.0, 0.1), recency, 0.75, 0.5, 30)
    assert higher.tolist() == [False, False, False, False, True, False], "300 is below the 0.75 quantile"
    assert at_risk_value(monetary, p_purchase, recency, 0.5, 0.2, 30).tolist() == [False] * 6


def value_conf(**changes):
    from jobs.config import load_settings

    return load_settings().clv.model_copy(
        update={"at_risk_min_monetary_quantile": 0.5, "at_risk_max_p_purchase": 0.5, "at_risk_min_recency_days": 30}
        | changes
    )


def test_value_columns_cover_every_gold_customer() -> None:
    from jobs.core.calibration import identity
    from jobs.steps.clv import customer_scores

    segments = pd.DataFrame(
        {"customer_id": ["a", "b", "c"], "monetary": [10.0, 500.0, 800.0], "recency_days": [8, 18, 60]}
    )
    summary = customer_summary(HISTORY, AS_OF)
    config = {"horizon_days": 90, "months": 12, "monthly_discount_rate": 0.01, "days_per_month": 30}
    scores = customer_scores(DAILY, identity("test"), summary, config, value_conf(interval_draws=300))
    values = value_columns(segments, scores, value_conf())
    assert values.columns.tolist() == ["customer_id", *CLV_COLUMNS.values(), AT_RISK_VALUE]
    assert values["customer_id"].tolist() == ["a", "b", "c"]
    assert values["expected_purchases_90d"].notna().all() and (values["clv_12m"] > 0).all()
    assert values["p_purchase_90d_calibrated"].tolist() == values["p_purchase_90d"].tolist(), "identity map"
    assert (values["clv_12m_p10"] <= values["clv_12m_p90"]).all() and (values["clv_12m_p90"] > 0).all()
    spend = expected_spend(DAILY, summary["frequency"], summary["monetary_value"])
    assert values["expected_spend_90d"].to_numpy() == pytest.approx(values["expected_purchases_90d"] * spend)
    cancelled = value_columns(segments.assign(monetary=[0.0, 500.0, 800.0]), scores, value_conf())
    assert cancelled["clv_12m"].tolist()[0] == 0.0, "every purchase cancelled: not a buyer, no value"
    assert cancelled[["clv_12m_p10", "clv_12m_p90"]].iloc[0].tolist() == [0.0, 0.0]
    assert cancelled["clv_12m"].tolist()[1:] == values["clv_12m"].tolist()[1:]
    # the flag reads the calibrated probability, not the raw one: c (monetary above the median, 60 days)
    unlikely = value_columns(segments, scores.assign(p_purchase=0.9, p_purchase_calibrated=0.1), value_conf())
    likely = value_columns(segments, scores.assign(p_purchase=0.1, p_purchase_calibrated=0.9), value_conf())
    assert unlikely[AT_RISK_VALUE].tolist() == [False, False, True] and not likely[AT_RISK_VALUE].any()
    # c: 191 days since its only purchase, high spend; b bought thrice in three weeks.
    assert (
        values.set_index("customer_id").loc["c", "p_purchase_90d"]
        < values.set_index("customer_id").loc["b", "p_purchase_90d"]
    )


# --- the back-test tool's arithmetic ---------------------------------------------------------------


def test_backtest_compares_model_naive_and_lift_on_a_known_history(settings) -> None:
    from harness.backtest_clv import backtest, markdown

    calibration_end, holdout_end = date(2011, 11, 20), date(2011, 12, 9)
    days = purchase_lines(
        [
            ("b", "2011-11-01", 150.0),
            ("b", "2011-11-11", 30.0),
            ("b", "2011-11-21", 60.0),  # holdout
            ("b", "2011-12-01", 40.0),  # holdout
            ("c", "2011-06-01", 20.0),
            ("d", "2011-10-01", 500.0),
            ("d", "2011-10-15", 700.0),
            ("e", "2011-12-02", 5.0),  # first seen in the holdout: not a calibration customer
        ]
    )
    monetary = pd.Series({"b": 180.0, "c": 20.0, "d": 1200.0})
    result = backtest(days, monetary, calibration_end, holdout_end, settings, params=DAILY)
    assert result["customers"] == 3 and result["horizon_days"] == 19
    naive = result["purchases"]["naive"]
    # naive: b 1/19*19 = 1.0, c 0, d 1/50*19 = 0.38; actual 2, 0, 0
    assert naive["total_predicted"] == pytest.approx(1.0 + 19 / 50) and naive["total_actual"] == 2
    assert naive["mae"] == pytest.approx((1.0 + 0 + 0.38) / 3)
    assert result["top10_revenue_share"]["oracle"] == 1.0, "b bought all of the holdout revenue"
    assert result["top10_revenue_share"]["past_monetary"] == 0.0, "d spent most before, nothing after"
    assert "| naive |" in markdown(result)


def test_calibration_of_a_constant_prediction_is_one_bin() -> None:
    from harness.backtest_clv import by_decile

    bought = pd.Series([True, False] * 50)
    flat = by_decile(pd.Series(1.0 - np.linspace(0, 1e-13, 100)), bought)
    assert flat[["decile", "customers", "share_bought"]].values.tolist() == [[1, 100, 0.5]]
    spread = by_decile(pd.Series(np.linspace(0, 1, 100)), bought)
    assert spread["decile"].tolist() == list(range(1, 11)) and (spread["customers"] == 10).all()
