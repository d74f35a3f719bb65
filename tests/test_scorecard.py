"""The forecast-vs-actual scorecard on small hand-computed data."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from jobs.core.scorecard import actual_in_window, overall_bias, scorecard
from jobs.definitions import SCORECARD_ALL, SCORECARD_COLUMNS
from jobs.steps.clv import bias_warning

FORECAST_DATE, NIGHT = date(2011, 9, 10), date(2011, 12, 9)


def forecast() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "cluster_label": ["VIP", "VIP", "Low-Value", "Low-Value"],
            "rfm_segment": ["Champions", "At Risk", "At Risk", "At Risk"],
            "p_purchase": [0.9, 0.7, 0.2, 0.4],
            "expected_purchases": [3.0, 1.0, 0.5, 0.5],
            "expected_spend": [300.0, 100.0, 20.0, 40.0],
        }
    )


def days() -> pd.DataFrame:
    return pd.DataFrame(
        [
            ("a", "2011-09-10", 999.0),  # the forecast's own night: before the window
            ("a", "2011-10-01", 100.0),
            ("a", "2011-11-01", 150.0),
            ("c", "2011-12-09", 30.0),  # the window's last day counts
            ("c", "2011-12-10", 70.0),  # after the night
            ("e", "2011-11-05", 80.0),  # not in the forecast (first seen later)
        ],
        columns=["customer_id", "purchase_date", "amount"],
    ).assign(purchase_date=lambda d: pd.to_datetime(d["purchase_date"]).dt.date)


def test_the_window_counts_purchase_days_and_net_spend_after_the_forecast_through_the_night() -> None:
    actual = actual_in_window(days(), FORECAST_DATE, NIGHT)
    assert actual.to_dict("index") == {
        "a": {"purchases": 2, "spend": 250.0},
        "c": {"purchases": 1, "spend": 30.0},
        "e": {"purchases": 1, "spend": 80.0},
    }


def test_scorecard_per_segment_and_overall_by_hand() -> None:
    table = scorecard(forecast(), actual_in_window(days(), FORECAST_DATE, NIGHT), FORECAST_DATE, NIGHT)
    assert table.columns.tolist() == SCORECARD_COLUMNS
    rows = table.set_index(["label_scheme", "segment"])
    # actual purchases a 2, b 0, c 1, d 0; predicted 3, 1, 0.5, 0.5
    overall = rows.loc[(SCORECARD_ALL, SCORECARD_ALL)]
    assert overall["customers"] == 4
    assert overall["bias"] == pytest.approx(5.0 / 4 - 3.0 / 4)
    assert overall["mae"] == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)
    assert overall["mean_predicted_p"] == pytest.approx(0.55) and overall["share_bought"] == 0.5
    assert (overall["predicted_spend"], overall["actual_spend"]) == (460.0, 280.0), "e is not in the forecast"
    vip = rows.loc[("cluster", "VIP")]
    assert (vip["customers"], vip["bias"], vip["mae"], vip["share_bought"]) == (2, 1.0, 1.0, 0.5)
    at_risk = rows.loc[("rfm", "At Risk")]
    assert at_risk["customers"] == 3 and at_risk["mean_actual_purchases"] == pytest.approx(1 / 3)
    assert at_risk["bias"] == pytest.approx(2.0 / 3 - 1 / 3) and at_risk["actual_spend"] == 30.0
    assert set(rows.index) == {
        (SCORECARD_ALL, SCORECARD_ALL),
        ("cluster", "VIP"),
        ("cluster", "Low-Value"),
        ("rfm", "Champions"),
        ("rfm", "At Risk"),
    }
    assert (table["snapshot_date"] == NIGHT).all() and (table["forecast_date"] == FORECAST_DATE).all()
    assert overall_bias(table) == pytest.approx(0.5)
    day = FORECAST_DATE
    assert bias_warning(0.5, day, 0.4) and not bias_warning(0.5, day, 0.5) and bias_warning(-0.6, day, 0.5)


def test_a_snapshot_without_predicted_spend_has_it_null() -> None:
    old = forecast().assign(expected_spend=np.nan)
    table = scorecard(old, actual_in_window(days(), FORECAST_DATE, NIGHT), FORECAST_DATE, NIGHT)
    assert table["predicted_spend"].isna().all() and table["actual_spend"].notna().all()


def test_no_forecast_no_rows_and_no_bias() -> None:
    table = scorecard(forecast().head(0), actual_in_window(days(), FORECAST_DATE, NIGHT), FORECAST_DATE, NIGHT)
    assert table.empty and table.columns.tolist() == SCORECARD_COLUMNS
    assert overall_bias(table) is None and not bias_warning(None, FORECAST_DATE, 0.0)


def test_a_bias_beyond_its_bound_is_one_warning_naming_the_forecast() -> None:
    bound = 0.5
    (line,) = bias_warning(bound + 0.25, FORECAST_DATE, bound)
    assert "2011-09-10" in line and f"{bound + 0.25:+.4g}" in line and f"±{bound:.4g}" in line
    assert bias_warning(bound / 2, FORECAST_DATE, bound) == []
