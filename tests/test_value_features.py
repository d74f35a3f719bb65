"""The supervised value model's features and training examples: nothing after the origin, labels in the window."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from jobs.core.value_features import FEATURES, example_frame, features, labels, training_origins

DAYS = pd.DataFrame(
    [
        ("a", date(2011, 1, 1), 10.0),
        ("a", date(2011, 1, 11), 30.0),
        ("a", date(2011, 3, 1), 20.0),  # after the origin: never a feature
        ("b", date(2011, 2, 1), 5.0),
    ],
    columns=["customer_id", "purchase_date", "amount"],
)
ITEMS = DAYS.assign(stock_code=["X", "Y", "Z", "X"])
ORIGIN = date(2011, 2, 1)


def test_features_see_nothing_after_the_origin() -> None:
    rows = features(DAYS, ITEMS, pd.Series({"a": 1.0}), ORIGIN, 90)
    assert list(rows.columns) == FEATURES
    a, b = rows.loc["a"], rows.loc["b"]
    assert (a["recency_days"], a["tenure_days"], a["purchase_days"], a["monetary"]) == (21, 31, 2, 40.0)
    assert a["mean_gap_days"] == 10 and a["product_breadth"] == 2 and a["home_country"] == 1
    assert (b["recency_days"], b["purchase_days"], b["mean_gap_days"], b["home_country"]) == (0, 1, -1.0, 0)
    later = features(DAYS, ITEMS, pd.Series(dtype=float), date(2011, 3, 1), 90)
    assert later.loc["a", "monetary"] == 60.0 and later.loc["a", "product_breadth"] == 3


def test_labels_count_the_window_after_the_origin_only() -> None:
    window = labels(DAYS, ORIGIN, 90)
    assert window.to_dict(orient="index") == {"a": {"purchases": 1, "revenue": 20.0}}
    examples = example_frame(features(DAYS, ITEMS, pd.Series(dtype=float), ORIGIN, 90), window, ORIGIN)
    assert examples["bought"].to_dict() == {"a": 1.0, "b": 0.0}
    assert examples.loc["b", "log_revenue"] == pytest.approx(0.0)


def test_training_origins_end_their_window_before_the_scoring_origin() -> None:
    origins = training_origins(date(2011, 9, 9), date(2010, 12, 1), 91, 14, 7)
    assert origins[0] == date(2011, 6, 10) and all(o <= date(2011, 6, 10) for o in origins)
    assert origins[-1] >= date(2010, 12, 8) and origins == sorted(origins, reverse=True)
    assert training_origins(date(2011, 3, 1), date(2010, 12, 1), 91, 14, 7) == []


def test_backtest_metrics_on_a_known_ranking() -> None:
    from harness.backtest_value import auc, capture, evaluate

    label = pd.Series([0, 0, 1, 1]).to_numpy()
    assert auc(pd.Series([0.1, 0.2, 0.3, 0.4]).to_numpy(), label) == 1.0
    assert auc(pd.Series([0.4, 0.3, 0.2, 0.1]).to_numpy(), label) == 0.0
    assert auc(pd.Series([0.5, 0.5, 0.5, 0.5]).to_numpy(), label) == 0.5
    revenue = pd.Series([0.0, 10.0, 30.0, 60.0]).to_numpy()
    assert capture(revenue, revenue, 0.25) == pytest.approx(0.6)
    assert capture(-revenue, revenue, 0.5) == pytest.approx(0.1)
    ids = pd.Index([f"c{i}" for i in range(20)], name="customer_id")
    bought = pd.Series([i % 2 for i in range(20)], index=ids, dtype=float)
    frame = pd.DataFrame({"m_p": bought * 0.8 + 0.1, "m_n": bought, "m_v": bought * 5}, index=ids)
    actual = pd.DataFrame({"purchases": bought[bought > 0], "revenue": bought[bought > 0] * 5})
    row = evaluate(frame, actual, ["m"])["m"]
    assert row["auc"] == 1.0 and row["mae_purchases"] == 0.0 and row["top10"] == pytest.approx(0.2)
    assert row["top20"] == pytest.approx(0.4)
    assert row["brier"] == pytest.approx(0.01) and row["max_decile_gap"] == pytest.approx(0.1)
