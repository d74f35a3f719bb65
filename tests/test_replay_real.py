"""Thirteen real nights, night by night: every night's incremental RFM snapshot equals ``compute_rfm``
over bronze; on the last four every step of the DAG runs: retrain on the cadence, score with the
champion in between, and the cluster labels of customers who bought nothing hold (goal: >= 99 % on
scoring and retrain nights, every change explained by ageing or by the recorded model change).

History up to 2011-11-26 is loaded into bronze in one commit (the backfill's load, without its
per-day validation, which other tests cover); then each night 2011-12-02 .. 2011-12-09 is landed,
validated and ingested in this process, and 2011-12-06 .. 12-09 also clustered, labelled, valued
(clv) and reported (eda): the session fixture ``real_replay`` (conftest), which
``test_clv_step`` shares. The retrain cadence is shortened to 3 days (conf: 7), so a retrain
with a champion (12-09) comes within four modelled nights. ``make replay`` runs the same nights through Airflow (README: "Labels
across nights").
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from harness.check_incremental import differences, value_differences
from jobs.adapters import lake
from jobs.config import Settings
from jobs.definitions import days_between
from tests.conftest import REPLAY_FIRST_NIGHT as FIRST_NIGHT
from tests.conftest import REPLAY_INGEST_FIRST_NIGHT as INGEST_FIRST_NIGHT
from tests.conftest import REPLAY_LAST_NIGHT as LAST_NIGHT
from tests.conftest import REPLAY_RETRAIN_EVERY_DAYS

pytestmark = pytest.mark.realdata

NIGHTS = days_between(FIRST_NIGHT, LAST_NIGHT)
INGESTED = days_between(INGEST_FIRST_NIGHT, LAST_NIGHT)
STABILITY_GOAL = 0.99


@pytest.fixture(scope="module")
def replay_settings(real_replay) -> Settings:
    return real_replay[0]


@pytest.fixture(scope="module")
def replay(real_replay) -> pd.DataFrame:
    """One row per night: what the cluster, label and clv steps reported."""
    return real_replay[1]


def test_retrains_on_the_cadence_and_scores_with_the_champion_between(replay) -> None:
    retrains = replay.loc[replay["kind"] == "retrain", "night"].tolist()
    assert retrains == [FIRST_NIGHT, FIRST_NIGHT + timedelta(days=REPLAY_RETRAIN_EVERY_DAYS)]
    between = replay[replay["night"] < retrains[1]]
    assert between["version"].nunique() == 1, "the nights before the second retrain are scored by one model"


def test_cluster_labels_hold_for_customers_who_bought_nothing(replay) -> None:
    scoring = replay[(replay["kind"] == "score")]
    assert len(scoring) == len(NIGHTS) - 2
    assert (scoring["stability_population"] > 3500).all(), "most customers buy nothing on a given night"
    below = scoring[scoring["label_stability_cluster"] < STABILITY_GOAL]
    assert below.empty, f"nights under {STABILITY_GOAL:.0%}:\n{below}"


def test_a_retrain_night_keeps_idle_labels_and_explains_every_change(replay) -> None:
    """The promotion rule weighs the idle customers' labels; what the decision
    recorded is what the label step then did."""
    retrain = replay[(replay["kind"] == "retrain") & replay["stability_population"].notna()]
    assert len(retrain) == 1, "the second retrain night has a champion and a previous snapshot"
    night = retrain.iloc[0]
    assert night["label_stability_cluster"] >= STABILITY_GOAL, f"retrain night under {STABILITY_GOAL:.0%}:\n{night}"
    recorded = night["idle_candidate_changes"] if night["promoted"] else night["idle_champion_changes"]
    assert night["label_changes_cluster"] == recorded, "each change: ageing, or the model change the decision recorded"


def test_every_step_of_the_dag_ran(replay) -> None:
    assert replay["clv_model_version"].notna().all(), "the clv step scored every night"


def test_every_nights_incremental_snapshot_equals_a_full_recompute(spark, replay, replay_settings) -> None:
    """The silver snapshot derived from the customer state (one MERGE a night) equals ``compute_rfm``
    over bronze, row for row, on every replayed night."""
    assert len(INGESTED) == 8
    bronze = lake.read(spark, replay_settings.table_path("bronze_transactions")).cache()
    differing = {night: n for night in INGESTED if (n := differences(spark, replay_settings, night, bronze))}
    bronze.unpersist()
    assert differing == {}, f"nights whose incremental snapshot differs from compute_rfm (rows): {differing}"


def test_every_nights_customer_value_summary_comes_from_the_state_and_equals_the_reference(
    spark, replay, replay_settings
) -> None:
    """The clv step reads the customer state the night's ingest merged (never all of bronze), and the
    BG/NBD summary it derives equals ``customer_summary`` over bronze's purchase lines, every night."""
    assert replay["clv_state_version"].notna().all(), f"nights whose clv read bronze:\n{replay[['night', 'kind']]}"
    bronze = lake.read(spark, replay_settings.table_path("bronze_transactions")).cache()
    state_path = replay_settings.table_path("silver_customer_state")
    differing = {}
    for night, version in zip(replay["night"], replay["clv_state_version"], strict=True):
        state = lake.read(spark, state_path, int(version))
        if n := value_differences(spark, replay_settings, night, bronze, state):
            differing[night] = n
    bronze.unpersist()
    assert differing == {}, f"nights whose value summary differs from the reference (customers): {differing}"


def test_customers_grow_only_on_trading_days(replay_settings) -> None:
    """Over every ingested night's silver snapshot (the modelled nights have no Saturday)."""
    from deltalake import DeltaTable

    snapshots = DeltaTable(str(replay_settings.table_path("silver_customer_rfm"))).to_pandas(
        columns=["snapshot_date"], filters=[("snapshot_date", ">=", INGEST_FIRST_NIGHT)]
    )
    customers = snapshots.groupby("snapshot_date").size()
    assert customers.index.tolist() == INGESTED
    assert customers.is_monotonic_increasing
    saturday = date(2011, 12, 3)
    assert customers[saturday] == customers[saturday - timedelta(days=1)], "no trading on Saturdays"
    assert customers[LAST_NIGHT] == 4334  # README of shared/data: 4,334 customers with a purchase by 2011-12-09


def test_the_labels_of_2011_12_09_mean_what_they_say(replay, replay_settings) -> None:
    """On the real snapshot, as the nights carried the labels to it."""
    from deltalake import DeltaTable

    gold = DeltaTable(str(replay_settings.table_path("gold_customer_segments"))).to_pandas(
        filters=[("snapshot_date", "=", LAST_NIGHT)]
    )
    gold["monetary"] = gold["monetary"].astype(float)
    by_label = gold.groupby("cluster_label").agg(
        median_recency=("recency_days", "median"), mean_f=("frequency", "mean"), mean_m=("monetary", "mean")
    )
    print("\n" + by_label.round(1).to_string())
    assert set(by_label.index) == {"VIP", "Loyal", "At-Risk", "Low-Value"}
    others = by_label.drop(index="At-Risk")
    assert (by_label.loc["At-Risk", "median_recency"] > others["median_recency"]).all()
    not_vip = by_label.drop(index="VIP")
    assert (by_label.loc["VIP", "mean_f"] > not_vip["mean_f"]).all()
    assert (by_label.loc["VIP", "mean_m"] > not_vip["mean_m"]).all()
    assert by_label.loc["Loyal", "median_recency"] < by_label.loc["At-Risk", "median_recency"]
    assert by_label.loc["Loyal", "mean_f"] > by_label.loc["Low-Value", "mean_f"]
