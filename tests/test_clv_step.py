"""The clv step over the real replay's modelled nights (the session fixture ``real_replay``): fit on the
retrain nights 2011-12-06 and 12-09, the champion in between, re-runs reuse their night's
version, every gold customer scored, per-segment means in the summary."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs.adapters import clv_registry, lake, tracking
from jobs.adapters.customer_state import purchase_days
from jobs.core.clv import customer_summary
from jobs.definitions import (
    AT_RISK_VALUE,
    CLV_CALIBRATION_TAG,
    CLV_COLUMNS,
    CLV_MODEL_VERSION_PARAM,
    CLV_PARAM_PREFIX,
    SCORECARD_BIAS_TAG,
    SCORECARD_COLUMNS,
    SCORECARD_TAG,
    days_between,
)
from jobs.ops.compare import comparison_table, night_runs
from jobs.steps.clv import clv_day
from tests.conftest import REPLAY_FIRST_NIGHT, REPLAY_LAST_NIGHT

pytestmark = pytest.mark.realdata

NIGHTS = days_between(REPLAY_FIRST_NIGHT, REPLAY_LAST_NIGHT)
RETRAIN_NIGHTS = [REPLAY_FIRST_NIGHT, REPLAY_LAST_NIGHT]  # the replay's 3-day cadence: 12-06 and 12-09
CHECKED_NIGHTS = NIGHTS  # retrain, score, score, retrain
GOLD_COLUMNS = [*CLV_COLUMNS.values(), AT_RISK_VALUE]


def gold(settings, name: str, day) -> pd.DataFrame:
    return DeltaTable(str(settings.table_path(name))).to_pandas(filters=[("snapshot_date", "=", day)])


@pytest.fixture(scope="module")
def nights(real_replay):
    """(the replay's settings, its per-night rows indexed by night)."""
    settings, table = real_replay
    return settings, table.set_index("night")


def test_fits_on_retrain_nights_and_scores_with_the_champion_between(nights) -> None:
    settings, rows = nights
    assert rows.index[rows["clv_fitted"]].tolist() == RETRAIN_NIGHTS
    champion_of = {night: "2" if night >= RETRAIN_NIGHTS[1] else "1" for night in NIGHTS}
    assert rows["clv_model_version"].to_dict() == champion_of
    assert str(clv_registry.champion(settings).version) == "2"
    for night in NIGHTS:
        fitted_on = RETRAIN_NIGHTS[1] if night >= RETRAIN_NIGHTS[1] else RETRAIN_NIGHTS[0]
        assert rows.loc[night, "clv_params"] == rows.loc[fitted_on, "clv_params"], f"{night} scores with the champion"
    assert rows.loc[RETRAIN_NIGHTS[1], "clv_params"] != rows.loc[RETRAIN_NIGHTS[0], "clv_params"], "a refit"


def test_every_nights_run_holds_the_clv_version_and_parameters_it_scored_with(nights) -> None:
    """Scoring nights too, so analysts compare every night's CLV in MLflow."""
    settings, rows = nights
    for night in NIGHTS:
        (run_id,) = gold(settings, "gold_customer_segments", night)["mlflow_run_id"].unique()
        params = tracking.client(settings).get_run(run_id).data.params
        assert params.get(CLV_MODEL_VERSION_PARAM) == rows.loc[night, "clv_model_version"], night
        logged = {
            name.removeprefix(CLV_PARAM_PREFIX): float(value)
            for name, value in params.items()
            if name.startswith(CLV_PARAM_PREFIX) and name != CLV_MODEL_VERSION_PARAM
        }
        assert logged == pytest.approx(rows.loc[night, "clv_params"]), night
    compared = comparison_table(night_runs(settings, last=len(NIGHTS))).set_index("date")
    assert compared["clv_model_version"].to_dict() == {n.isoformat(): rows.loc[n, "clv_model_version"] for n in NIGHTS}


def test_every_gold_customer_gets_a_value(nights) -> None:
    settings, _ = nights
    for night in CHECKED_NIGHTS:
        segments = gold(settings, "gold_customer_segments", night)
        assert segments[GOLD_COLUMNS].notna().all().all(), night
        assert segments["p_alive"].between(0, 1).all() and segments["p_purchase_90d"].between(0, 1).all()
        assert (segments["clv_12m"] >= 0).all() and (segments["expected_purchases_90d"] >= 0).all()
        assert segments["cluster_label"].notna().all(), "the label step's columns are kept"
        money = segments["monetary"].astype(float)
        high = money > money.quantile(settings.clv.at_risk_min_monetary_quantile)
        flagged = high & (segments["p_purchase_90d_calibrated"] < settings.clv.at_risk_max_p_purchase)
        flagged &= segments["recency_days"] >= settings.clv.at_risk_min_recency_days
        assert (segments[AT_RISK_VALUE] == flagged).all()
        assert not segments.loc[segments["recency_days"] < settings.clv.at_risk_min_recency_days, AT_RISK_VALUE].any()
        assert (segments.loc[segments["monetary"].astype(float) <= 0, "clv_12m"] == 0).all(), "not a buyer"
        assert segments["p_purchase_90d_calibrated"].between(0, 1).all()
        assert (segments["clv_12m_p10"] <= segments["clv_12m_p90"]).all() and (segments["clv_12m_p10"] >= 0).all()
        assert (segments["clv_12m_p90"] > 0).any()


def test_fit_nights_calibrate_and_every_night_says_with_what(nights) -> None:
    """The replay's history starts 2010-12-01: a fit night of December 2011 has 9 months before D - 90."""
    settings, rows = nights
    client = tracking.client(settings)
    for night in NIGHTS:
        (run_id,) = gold(settings, "gold_customer_segments", night)["mlflow_run_id"].unique()
        tag = client.get_run(run_id).data.tags[CLV_CALIBRATION_TAG]
        assert tag.startswith(f"isotonic (version {rows.loc[night, 'clv_model_version']})"), (night, tag)
    _, calibration = clv_registry.params_of(settings, "2")
    assert calibration.method == "isotonic" and len(calibration.x) >= 2
    segments = gold(settings, "gold_customer_segments", REPLAY_LAST_NIGHT)
    np.testing.assert_allclose(
        segments["p_purchase_90d_calibrated"], calibration.apply(segments["p_purchase_90d"]), rtol=1e-12
    )


def test_no_snapshot_90_nights_earlier_no_scorecard_rows_and_a_tag_saying_so(nights) -> None:
    settings, _ = nights
    client = tracking.client(settings)
    card = DeltaTable(str(settings.table_path("gold_forecast_scorecard"))).to_pandas()
    assert card.empty and set(SCORECARD_COLUMNS) <= set(card.columns)
    for night in NIGHTS:
        (run_id,) = gold(settings, "gold_customer_segments", night)["mlflow_run_id"].unique()
        tags = client.get_run(run_id).data.tags
        assert tags[SCORECARD_TAG].startswith("no forecast to score"), night
        assert tags[SCORECARD_BIAS_TAG] == "false"


def test_segment_summary_holds_the_per_segment_means(nights) -> None:
    settings, _ = nights
    segments = gold(settings, "gold_customer_segments", REPLAY_LAST_NIGHT)
    summary = gold(settings, "gold_segment_summary", REPLAY_LAST_NIGHT)
    cluster = summary[summary["label_scheme"] == "cluster"].set_index("segment")
    expected = segments.groupby("cluster_label")["clv_12m"].mean()
    np.testing.assert_allclose(cluster.loc[expected.index, "mean_clv_12m"], expected)
    assert cluster["at_risk_value_customers"].sum() == segments[AT_RISK_VALUE].sum()
    assert summary["mean_p_purchase_90d"].notna().all() and summary["customers"].notna().all()


def test_the_registered_pyfunc_scores_like_the_night(spark, nights) -> None:
    settings, _ = nights
    bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    summary = customer_summary(purchase_days(bronze, settings, REPLAY_LAST_NIGHT), REPLAY_LAST_NIGHT)
    tracking.client(settings)  # the replay's MLflow store
    model = mlflow.pyfunc.load_model(f"models:/{settings.clv.registered_name}@{settings.clv.alias}")
    predicted = model.predict(summary).set_index("customer_id")
    segments = gold(settings, "gold_customer_segments", REPLAY_LAST_NIGHT).set_index("customer_id")
    buyers = segments["monetary"].astype(float) > 0  # the step's rule: no net spend, not a buyer, CLV 0
    assert (~buyers).any() and (segments.loc[~buyers, "clv_12m"] == 0).all()
    np.testing.assert_allclose(
        predicted.loc[segments.index[buyers], "clv"], segments.loc[buyers, "clv_12m"], rtol=1e-12
    )
    np.testing.assert_allclose(
        predicted.loc[segments.index[buyers], "p_purchase_calibrated"],
        segments.loc[buyers, "p_purchase_90d_calibrated"],
        rtol=1e-12,
    )


def test_a_rerun_reuses_its_nights_version_and_converges(spark, nights) -> None:
    settings, _ = nights
    before = gold(settings, "gold_customer_segments", NIGHTS[0]).sort_values("customer_id").reset_index(drop=True)
    again = clv_day(NIGHTS[0], settings, spark)
    assert not again["fitted"] and again["clv_model_version"] == "1"
    assert str(clv_registry.champion(settings).version) == "2", "a re-run does not move the alias"
    after = gold(settings, "gold_customer_segments", NIGHTS[0]).sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before[after.columns], after)
