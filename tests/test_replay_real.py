"""Two real weeks, night by night: retrain on the cadence, score with the champion in between,
and the cluster labels of customers who bought nothing hold (goal: >= 99 % on scoring nights).

History up to 2011-11-25 is loaded into bronze in one commit (the backfill's load, without its
per-day validation, which other tests cover); then each night 2011-11-26 .. 2011-12-09 is
landed, validated, ingested, clustered and labelled in this process — the DAG's tasks, in order.
``make replay`` runs the same nights through Airflow (README: "Labels across nights").
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from jobs.backfill import load_history, read_source
from jobs.cluster import cluster_day
from jobs.label import label_day
from jobs.rfm import ingest_day
from jobs.split import land_days, read_export
from jobs.validate import validate_day, validation_frame
from tests.conftest import settings_for

pytestmark = pytest.mark.realdata

FIRST_NIGHT, LAST_NIGHT = date(2011, 11, 26), date(2011, 12, 9)
NIGHTS = [FIRST_NIGHT + timedelta(days=i) for i in range((LAST_NIGHT - FIRST_NIGHT).days + 1)]
STABILITY_GOAL = 0.99


@pytest.fixture(scope="module")
def replay(spark, real_data_path, tmp_path_factory) -> pd.DataFrame:
    """One row per night: what the cluster and label steps reported."""
    settings = settings_for(tmp_path_factory.mktemp("replay"))
    history = validation_frame(read_source(spark, real_data_path), settings)
    load_history(spark, settings, history, date(2010, 12, 1), FIRST_NIGHT - timedelta(days=1))
    land_days(read_export(real_data_path), settings.path("landing_dir"), FIRST_NIGHT, LAST_NIGHT,
              settings.landing.marker, settings.landing.format)  # fmt: skip
    rows = []
    for night in NIGHTS:
        validate_day(night, settings, spark)
        ingest_day(night, settings, spark)
        clustered = cluster_day(night, settings, spark)
        labelled = label_day(night, settings, spark)
        rows.append({"night": night, "kind": clustered["night_type"], "version": clustered["model_version"],
                     "k": clustered["k"], "customers": labelled["customers"], **labelled["stability"]})  # fmt: skip
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print("\n" + table.round(4).to_string(index=False))
    return table


def test_retrains_on_the_cadence_and_scores_with_the_champion_between(replay) -> None:
    retrains = replay.loc[replay["kind"] == "retrain", "night"].tolist()
    assert retrains == [FIRST_NIGHT, FIRST_NIGHT + timedelta(days=7)]
    first_week = replay[replay["night"] < retrains[1]]
    assert first_week["version"].nunique() == 1, "the first week is scored by one model"


def test_cluster_labels_hold_for_customers_who_bought_nothing(replay) -> None:
    scoring = replay[(replay["kind"] == "score")]
    assert len(scoring) == len(NIGHTS) - 2
    assert (scoring["stability_population"] > 3500).all(), "most customers buy nothing on a given night"
    below = scoring[scoring["label_stability_cluster"] < STABILITY_GOAL]
    assert below.empty, f"nights under {STABILITY_GOAL:.0%}:\n{below}"


def test_customers_grow_only_on_trading_days(replay) -> None:
    customers = replay.set_index("night")["customers"]
    assert customers.is_monotonic_increasing
    saturday = date(2011, 12, 3)
    assert customers[saturday] == customers[saturday - timedelta(days=1)], "no trading on Saturdays"
    assert customers[LAST_NIGHT] == 4334  # README of shared/data: 4,334 customers with a purchase by 2011-12-09
