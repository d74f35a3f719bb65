"""The clv step night by night on a tiny generated history: fit on retrain nights, champion in between,
re-runs reuse their night's version, every gold customer scored, per-segment means in the summary."""

from __future__ import annotations

from datetime import date

import mlflow
import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs.adapters import clv_registry, lake
from jobs.adapters.transactions import parse_transactions, read_export_text, to_canonical_names, typed_rows
from jobs.core.clv import customer_summary
from jobs.core.rfm import compute_rfm
from jobs.definitions import AT_RISK_VALUE, CLV_COLUMNS
from jobs.steps.cluster import cluster_day
from jobs.steps.clv import clv_day, purchase_days
from jobs.steps.label import label_day
from jobs.tools.generate import generate_transactions
from tests.conftest import settings_for

NIGHTS = [date(2011, 12, 5), date(2011, 12, 6), date(2011, 12, 7)]  # retrain, score, retrain (2-day cadence)
GOLD_COLUMNS = [*CLV_COLUMNS.values(), AT_RISK_VALUE]


def gold(settings, name: str, day: date) -> pd.DataFrame:
    return DeltaTable(str(settings.table_path(name))).to_pandas(filters=[("snapshot_date", "=", day)])


@pytest.fixture(scope="module")
def nights(spark, tmp_path_factory):
    """Bronze + silver from 300 generated customers over 120 days, then cluster, label, clv per night."""
    path = tmp_path_factory.mktemp("generated") / "export.csv"
    generate_transactions(customers=300, days=120, seed=11, end_date=NIGHTS[-1]).to_csv(path, index=False)
    settings = settings_for(tmp_path_factory.mktemp("clv"), model={"retrain_every_days": 2},
                            clustering={"k": 4})  # fmt: skip
    raw = read_export_text(spark, [str(path)])
    bronze = typed_rows(parse_transactions(to_canonical_names(raw, settings), settings))
    lake.replace_slice(bronze, settings.table_path("bronze_transactions"), "true", "transaction_date")
    results = {}
    for night in NIGHTS:
        lake.replace_slice(compute_rfm(bronze, night, settings.rfm), settings.table_path("silver_customer_rfm"),
                           f"snapshot_date = {lake.date_literal(night)}", "snapshot_date")  # fmt: skip
        cluster_day(night, settings, spark)
        label_day(night, settings, spark)
        results[night] = clv_day(night, settings, spark)
    return settings, results


def test_fits_on_retrain_nights_and_scores_with_the_champion_between(nights) -> None:
    settings, results = nights
    assert [results[n]["fitted"] for n in NIGHTS] == [True, False, True]
    assert [results[n]["clv_model_version"] for n in NIGHTS] == ["1", "1", "2"]
    assert str(clv_registry.champion(settings).version) == "2"
    assert results[NIGHTS[1]]["params"] == results[NIGHTS[0]]["params"], "a scoring night uses the champion's"


def test_every_gold_customer_gets_a_value(nights) -> None:
    settings, _ = nights
    for night in NIGHTS:
        segments = gold(settings, "gold_customer_segments", night)
        assert segments[GOLD_COLUMNS].notna().all().all(), night
        assert segments["p_alive"].between(0, 1).all() and segments["p_purchase_90d"].between(0, 1).all()
        assert (segments["clv_12m"] >= 0).all() and (segments["expected_purchases_90d"] >= 0).all()
        assert segments["cluster_label"].notna().all(), "the label step's columns are kept"
        high = segments["monetary"].astype(float) > segments["monetary"].astype(float).median()
        flagged = high & (segments["p_purchase_90d"] < settings.clv.at_risk_max_p_purchase)
        assert (segments[AT_RISK_VALUE] == flagged).all()


def test_segment_summary_holds_the_per_segment_means(nights) -> None:
    settings, _ = nights
    segments = gold(settings, "gold_customer_segments", NIGHTS[-1])
    summary = gold(settings, "gold_segment_summary", NIGHTS[-1])
    cluster = summary[summary["label_scheme"] == "cluster"].set_index("segment")
    expected = segments.groupby("cluster_label")["clv_12m"].mean()
    np.testing.assert_allclose(cluster.loc[expected.index, "mean_clv_12m"], expected)
    assert cluster["at_risk_value_customers"].sum() == segments[AT_RISK_VALUE].sum()
    assert summary["mean_p_purchase_90d"].notna().all() and summary["customers"].notna().all()


def test_the_registered_pyfunc_scores_like_the_night(spark, nights) -> None:
    settings, _ = nights
    bronze = lake.read(spark, settings.table_path("bronze_transactions"))
    summary = customer_summary(purchase_days(bronze, settings, NIGHTS[-1]), NIGHTS[-1])
    model = mlflow.pyfunc.load_model(f"models:/{settings.clv.registered_name}@{settings.clv.alias}")
    predicted = model.predict(summary).set_index("customer_id")
    segments = gold(settings, "gold_customer_segments", NIGHTS[-1]).set_index("customer_id")
    np.testing.assert_allclose(predicted.loc[segments.index, "clv"], segments["clv_12m"], rtol=1e-12)


def test_a_rerun_reuses_its_nights_version_and_converges(spark, nights) -> None:
    settings, results = nights
    before = gold(settings, "gold_customer_segments", NIGHTS[0]).sort_values("customer_id").reset_index(drop=True)
    again = clv_day(NIGHTS[0], settings, spark)
    assert not again["fitted"] and again["clv_model_version"] == "1"
    assert str(clv_registry.champion(settings).version) == "2", "a re-run does not move the alias"
    after = gold(settings, "gold_customer_segments", NIGHTS[0]).sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before[after.columns], after)
