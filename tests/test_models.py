"""Models analysts can compare: the k sweep, the champion alias, re-runs with the recorded version.

A small lake (silver snapshots computed from generated transactions) runs the cluster and label
steps night by night with a two-day retrain cadence: 12-05 retrains (no champion), 12-06 scores
with the champion, 12-07 retrains again (cadence) and decides promotion, 12-08 scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from jobs.adapters import lake, registry, tracking
from jobs.core.features import log_feature_profile, log_feature_scale
from jobs.core.labels import IdleAgreement, carry_labels, idle_agreement
from jobs.core.promotion import Promotion, decide_promotion
from jobs.core.rfm import compute_rfm
from jobs.definitions import CHOSEN_K_TAG, CHOSEN_TAG
from jobs.steps.cluster import (
    CandidateFit,
    choose_candidate,
    cluster_day,
    feature_frame,
    fit_candidate,
    gmm_bic,
    plan_night,
)
from jobs.steps.label import label_day
from tests.conftest import settings_for
from tests.helpers import generated_rows, write_rfm_snapshots

NIGHTS = [date(2011, 12, 5), date(2011, 12, 6), date(2011, 12, 7), date(2011, 12, 8)]
RETRAIN_NIGHTS = {NIGHTS[0], NIGHTS[2]}
SWEEP = [3, 6]  # one k below min_k (4), three eligible: the rule has something to reject and to choose


def gold(settings, name: str, day: date) -> pd.DataFrame:
    return DeltaTable(str(settings.table_path(name))).to_pandas(filters=[("snapshot_date", "=", day)])


def night_run(settings, day: date):
    runs = tracking.runs_for_date(settings, settings.dag.dag_id, day)
    assert len(runs) == 1, f"{day}: {len(runs)} night runs"
    return runs[0]


@pytest.fixture(scope="module")
def transactions(spark, tmp_path_factory):
    """Typed transactions of 600 generated customers over 90 days."""
    folder = tmp_path_factory.mktemp("generated")
    settings = settings_for(folder)
    return generated_rows(spark, settings, folder / "export.csv", customers=600, days=90, seed=5, end_date=NIGHTS[-1])


@pytest.fixture(scope="module")
def nights(spark, transactions, tmp_path_factory):
    """Silver snapshots, then cluster + label each night; returns settings and each step's summary."""
    settings = settings_for(
        tmp_path_factory.mktemp("models"), model={"retrain_every_days": 2}, clustering={"k_range": SWEEP}
    )
    write_rfm_snapshots(settings, transactions, NIGHTS)
    results = {}
    for night in NIGHTS:
        results[night] = (cluster_day(night, settings, spark), label_day(night, settings, spark))
    return settings, results


# --- the rules, on their own ------------------------------------------------------------------------


def candidate(k: int, silhouette: float, min_share: float, bic: float = 0.0) -> CandidateFit:
    return CandidateFit(
        k=k, model=None, metrics={"silhouette": silhouette, "min_cluster_share": min_share, "gmm_bic": bic}
    )


def test_k_rule_takes_the_best_silhouette_among_eligible_fits(settings) -> None:
    clustering = settings.clustering  # min_k 4, min share 5 %
    fits = [candidate(2, 0.62, 0.38), candidate(4, 0.49, 0.16), candidate(5, 0.51, 0.03), candidate(6, 0.45, 0.08)]
    chosen, reason = choose_candidate(fits, clustering)
    assert chosen.k == 4, "k=2 is below min_k, k=5's smallest cluster is under 5 %"
    assert "best silhouette" in reason
    tie = [candidate(4, 0.5, 0.2), candidate(6, 0.5, 0.2)]
    assert choose_candidate(tie, clustering)[0].k == 4


def test_k_rule_falls_back_to_every_fit_and_says_so(settings) -> None:
    chosen, reason = choose_candidate([candidate(2, 0.6, 0.01), candidate(3, 0.7, 0.02)], settings.clustering)
    assert chosen.k == 3 and "no fit met" in reason


def test_k_rule_for_gaussian_mixtures_is_the_lowest_bic(settings) -> None:
    gmm = settings.clustering.model_copy(update={"algorithm": "gmm"})
    fits = [candidate(4, 0.1, 0.2, bic=900.0), candidate(5, 0.9, 0.2, bic=950.0), candidate(6, 0.1, 0.01, bic=10.0)]
    assert choose_candidate(fits, gmm)[0].k == 4


def test_a_fixed_k_is_taken_as_it_is(settings) -> None:
    fixed = settings.clustering.model_copy(update={"k": 3})
    assert fixed.candidate_ks() == [3]
    assert "fixed" in choose_candidate([candidate(3, 0.1, 0.0)], fixed)[1]


def test_bic_matches_scikit_learn() -> None:
    from sklearn.mixture import GaussianMixture

    points = np.random.default_rng(3).normal(size=(500, 3))
    mixture = GaussianMixture(n_components=3, random_state=0).fit(points)
    log_likelihood = mixture.score(points) * len(points)
    assert gmm_bic(log_likelihood, 3, 3, len(points)) == pytest.approx(mixture.bic(points))


@pytest.mark.parametrize(
    ("recorded", "champion", "newest", "expected"),
    [
        ("3", "5", date(2011, 12, 1), ("rerun", "3")),
        (None, None, None, ("retrain", None)),
        (None, "5", date(2011, 12, 2), ("retrain", None)),  # 7 days old
        (None, "5", date(2011, 12, 3), ("score", "5")),
        (None, "5", date(2011, 12, 20), ("score", "5")),  # an old date scores with today's champion
    ],
    ids=["rerun", "no-champion", "cadence-due", "cadence-not-due", "old-date"],
)
def test_night_plan(recorded, champion, newest, expected) -> None:
    plan = plan_night(date(2011, 12, 9), recorded, champion, newest, retrain_every_days=7)
    assert (plan.kind, plan.version) == expected
    assert plan.reason


@pytest.mark.parametrize(
    ("recorded", "began", "expected"),
    [
        (None, None, ("retrain", None)),  # the cadence says score: forced anyway
        ("5", None, ("retrain", None)),  # scored before by the champion, never retrained: retrain
        (None, "6", ("resume", "6")),  # a retry of a crashed forced retrain: complete it
        ("6", "6", ("resume", "6")),  # forced again on a retrained night: the same version, no second one
    ],
    ids=["not-due", "scored-before", "crashed-forced", "already-retrained"],
)
def test_a_forced_retrain_resumes_a_retrain_the_night_already_has(recorded, began, expected) -> None:
    plan = plan_night(date(2011, 12, 9), recorded, "5", date(2011, 12, 8), 7, began, force_retrain=True)
    assert (plan.kind, plan.version) == expected
    assert "forced" in plan.reason


def test_promotion_rule() -> None:
    assert decide_promotion("5", 0.40, None, None, 0.02).promoted
    assert decide_promotion("5", 0.48, "4", 0.50, 0.02).promoted  # within the margin
    worse = decide_promotion("5", 0.47, "4", 0.50, 0.02)
    assert not worse.promoted and worse.champion_version == "4" and "worse than the champion" in worse.reason


def test_idle_agreement_counts_ageing_and_model_changes_apart() -> None:
    idle = pd.DataFrame(
        {
            "previous_label": ["VIP", "VIP", "Loyal", "Loyal", "At-Risk"],
            "champion_label": ["VIP", "Loyal", "Loyal", "Loyal", "At-Risk"],
            "candidate_label": ["VIP", "Loyal", "Loyal", "At-Risk", "Low-Value"],
        }
    )
    agreement = idle_agreement(idle, "2011-12-08")
    assert (agreement.idle_customers, agreement.champion_changes, agreement.candidate_changes) == (5, 1, 3)
    assert agreement.relabelled == 2 and agreement.relabelled_share == pytest.approx(0.4)


def test_a_refit_that_relabels_idle_customers_needs_a_clearly_better_fit() -> None:
    def idle(relabelled: int) -> IdleAgreement:
        return IdleAgreement("2011-12-08", 1000, 3, 3 + relabelled, relabelled)

    def decide(new: float, agreement: IdleAgreement | None) -> Promotion:
        return decide_promotion("5", new, "4", 0.50, 0.02, agreement, 0.01, 0.05)

    assert decide(0.49, idle(10)).promoted, "1 % relabelled, fit within the margin"
    stable_but_worse = decide(0.47, idle(0))
    assert not stable_but_worse.promoted and "worse" in stable_but_worse.reason
    reshuffle = decide(0.53, idle(11))
    assert not reshuffle.promoted
    assert "11 of 1000 idle customers (1.10%)" in reshuffle.reason and "not clearly better" in reshuffle.reason
    assert reshuffle.idle == {
        "previous_snapshot": "2011-12-08",
        "idle_customers": 1000,
        "champion_changes": 3,
        "candidate_changes": 14,
        "relabelled": 11,
        "relabelled_share": 0.011,
    }
    clearly_better = decide(0.55, idle(200))
    assert clearly_better.promoted and "clearly better" in clearly_better.reason
    assert decide(0.49, None).promoted, "no previous snapshot: the silhouette alone decides"
    assert Promotion.from_json(json.dumps(reshuffle.as_dict())) == reshuffle


def test_a_gaussian_mixture_fit_reports_likelihood_and_bic(spark, transactions, settings) -> None:
    gmm = settings.clustering.model_copy(update={"algorithm": "gmm"})
    features = feature_frame(compute_rfm(transactions, NIGHTS[0], settings.rfm), gmm).cache()
    fit = fit_candidate(features, gmm, 3)
    rows = int(fit.metrics["customers"])
    assert rows == features.count() > 100
    assert fit.metrics["gmm_bic"] == pytest.approx(gmm_bic(fit.metrics["gmm_log_likelihood"], 3, 3, rows))
    assert "kmeans_cost" not in fit.metrics
    assert sum(fit.metrics[f"cluster_size_{c}"] for c in range(3)) == rows
    features.unpersist()


# --- the nights ---------------------------------------------------------------------------------------


def test_retrain_night_logs_the_sweep_as_child_runs(nights) -> None:
    settings, results = nights
    client = tracking.client(settings)
    for night in RETRAIN_NIGHTS:
        cluster, _ = results[night]
        assert cluster["night_type"] == "retrain"
        parent = night_run(settings, night)
        children = tracking.child_runs(settings, parent.info.run_id)
        assert sorted(int(c.data.params["k"]) for c in children) == list(range(SWEEP[0], SWEEP[1] + 1))
        names = {frozenset(c.data.metrics) - {f"cluster_size_{i}" for i in range(SWEEP[1])} for c in children}
        assert len(names) == 1, "every k logs the same metric names"
        assert {"silhouette", "davies_bouldin", "kmeans_cost", "min_cluster_share", "training_seconds"} <= set(*names)
        for child in children:
            k = int(child.data.params["k"])
            sizes = [child.data.metrics[f"cluster_size_{i}"] for i in range(k)]
            assert sum(sizes) == child.data.metrics["customers"]
            assert child.data.metrics["min_cluster_share"] == pytest.approx(min(sizes) / sum(sizes))
        chosen = [c for c in children if c.data.tags.get(CHOSEN_TAG) == "true"]
        assert (
            len(chosen) == 1 and chosen[0].data.params["k"] == parent.data.params["k"] == parent.data.tags[CHOSEN_K_TAG]
        )
        eligible = [c for c in children if int(c.data.params["k"]) >= 4 and c.data.metrics["min_cluster_share"] >= 0.05]
        best = max(eligible or children, key=lambda c: (c.data.metrics["silhouette"], -int(c.data.params["k"])))
        assert chosen[0].info.run_id == best.info.run_id, "the documented rule picked k"
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
        assert {"sweep/elbow.png", "sweep/silhouette.png", "sweep/sweep.csv"} <= artifacts
        assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
            "model",
            "promotion",
            "clusters",
            "labels",
        }


def test_scoring_nights_use_the_champion_and_train_nothing(nights) -> None:
    settings, results = nights
    assert [results[n][0]["night_type"] for n in NIGHTS] == ["retrain", "score", "retrain", "score"]
    first_version = results[NIGHTS[0]][0]["model_version"]
    assert results[NIGHTS[1]][0]["model_version"] == first_version
    parent = night_run(settings, NIGHTS[1])
    assert tracking.child_runs(settings, parent.info.run_id) == []
    assert "model" not in {a.path for a in tracking.client(settings).list_artifacts(parent.info.run_id)}


def test_the_alias_moves_only_when_the_rule_says(nights) -> None:
    settings, results = nights
    first, second = results[NIGHTS[0]][0], results[NIGHTS[2]][0]
    assert first["promotion"]["promoted"] and first["promotion"]["reason"] == "no champion yet"
    decision = second["promotion"]
    idle = decision["idle"]
    assert idle is not None and idle["previous_snapshot"] == NIGHTS[1].isoformat() and idle["idle_customers"] > 0
    new, champion = decision["new_silhouette"], decision["champion_silhouette"]
    should = new >= champion - decision["margin"] and (
        idle["relabelled"] <= decision["max_relabel_share"] * idle["idle_customers"]
        or new >= champion + decision["clear_gain"]
    )
    assert decision["promoted"] == should
    expected = decision["new_version"] if should else decision["champion_version"]
    assert str(registry.champion(settings).version) == expected == results[NIGHTS[3]][0]["model_version"]
    # and by hand: a decision not to promote leaves the alias where it is
    before = str(registry.champion(settings).version)
    registry.apply_promotion(settings, Promotion(False, "test", first["model_version"], before, 0.1, 0.9, 0.02))
    assert str(registry.champion(settings).version) == before


def test_each_snapshot_records_the_version_that_scored_it(nights) -> None:
    settings, results = nights
    for night in NIGHTS:
        version = results[night][0]["model_version"]
        assert set(gold(settings, "gold_customer_segments", night)["model_version"]) == {version}
        assert set(gold(settings, "silver_customer_clusters", night)["model_version"]) == {version}


def test_labels_hold_on_scoring_nights(nights) -> None:
    settings, results = nights
    _, label = results[NIGHTS[1]]
    assert label["label_note"] == "same model version as the previous snapshot"
    assert label["cluster_labels"] == results[NIGHTS[0]][1]["cluster_labels"]
    assert label["stability"]["stability_population"] > 100
    assert label["stability"]["label_stability_cluster"] >= 0.95


def test_transitions_add_up_to_both_snapshots(nights) -> None:
    settings, _ = nights
    for previous, night in zip(NIGHTS, NIGHTS[1:], strict=False):
        transitions = gold(settings, "gold_segment_transitions", night)
        before, after = (
            gold(settings, "gold_customer_segments", previous),
            gold(settings, "gold_customer_segments", night),
        )
        assert set(transitions["previous_snapshot_date"]) == {previous}
        for scheme, column in (("cluster", "cluster_label"), ("rfm", "rfm_segment")):
            part = transitions[transitions["label_scheme"] == scheme]
            into = part[part["to_segment"] != "gone"].groupby("to_segment")["customers"].sum()
            out_of = part[part["from_segment"] != "new"].groupby("from_segment")["customers"].sum()
            assert into.to_dict() == after[column].value_counts().to_dict(), f"{night}/{scheme}"
            assert out_of.to_dict() == before[column].value_counts().to_dict(), f"{night}/{scheme}"


def test_rerunning_an_old_date_scores_with_its_recorded_version(spark, nights) -> None:
    settings, results = nights
    night = NIGHTS[1]
    before = gold(settings, "gold_customer_segments", night).sort_values("customer_id").reset_index(drop=True)
    again = cluster_day(night, settings, spark)
    label_day(night, settings, spark)
    assert again["night_type"] == "rerun" and again["model_version"] == results[night][0]["model_version"]
    after = gold(settings, "gold_customer_segments", night).sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before.drop(columns="mlflow_run_id"), after.drop(columns="mlflow_run_id"))


def test_rfm_scores_use_the_edges_frozen_with_the_model(nights) -> None:
    settings, results = nights
    version = results[NIGHTS[1]][0]["model_version"]
    edges = registry.metadata(settings, version)["quintile_edges"]
    trained_on = date.fromisoformat(registry.metadata(settings, version)["trained_on"])
    training = gold(settings, "silver_customer_rfm", trained_on)
    assert edges["monetary"] == pytest.approx(np.percentile(training["monetary"].astype(float), [20, 40, 60, 80]))
    scored = gold(settings, "gold_customer_segments", NIGHTS[1])
    expected_r = 1 + (scored["recency_days"].to_numpy()[:, None] < np.array(edges["recency_days"])).sum(axis=1)
    assert (scored["r_score"].to_numpy() == expected_r).all()


SCORE_IN_FRESH_PROCESS = """
import sys, mlflow, pandas as pd
from jobs.adapters.spark import get_spark
from jobs.config import load_settings
settings = load_settings()
mlflow.set_tracking_uri(settings.tracking_uri)
spark = get_spark(settings)
model = mlflow.spark.load_model(f"models:/{settings.model.registered_name}@{settings.model.alias}")
features = spark.read.parquet(sys.argv[1])
model.transform(features).select("customer_id", "prediction").toPandas().to_csv(sys.argv[2], index=False)
"""


def test_the_champion_loaded_in_a_fresh_process_gives_the_same_labels(spark, nights, tmp_path) -> None:
    settings, results = nights
    night = NIGHTS[-1]  # scored by the current champion
    snapshot = lake.read(spark, settings.table_path("silver_customer_rfm")).filter(F.col("snapshot_date") == night)
    feature_frame(snapshot, settings.clustering).write.parquet(str(tmp_path / "features"))
    env = {**os.environ, "RFM__PATHS__DATA_DIR": str(settings.path("data_dir"))}
    done = subprocess.run(
        [sys.executable, "-c", SCORE_IN_FRESH_PROCESS, str(tmp_path / "features"), str(tmp_path / "scored.csv")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = pd.read_csv(tmp_path / "scored.csv", dtype={"customer_id": str})
    segments = gold(settings, "gold_customer_segments", night)
    label_of = {int(c): label for c, label in results[night][1]["cluster_labels"].items()}
    merged = segments.merge(fresh, on="customer_id", validate="one_to_one")
    assert len(merged) == len(segments) > 100
    assert (merged["prediction"] == merged["cluster"]).all()
    assert (merged["prediction"].map(label_of) == merged["cluster_label"]).all()


def test_a_real_refit_with_permuted_ids_keeps_every_customers_label(spark, nights) -> None:
    """Refit the champion's training snapshot with other seeds until the same partition comes out
    under permuted ids; matching the centroids to the night's labels keeps every customer's label."""
    settings, results = nights
    night = NIGHTS[0]
    k = results[night][0]["k"]
    snapshot = lake.read(spark, settings.table_path("silver_customer_rfm")).filter(F.col("snapshot_date") == night)
    features = feature_frame(snapshot, settings.clustering).cache()
    labelled = gold(settings, "gold_customer_segments", night)
    labelled_profile = log_feature_profile(
        spark.createDataFrame(labelled), ["cluster", "cluster_label"], settings.clustering
    )
    tried = []
    for seed in range(1, 40):
        refit = fit_candidate(features, settings.clustering.model_copy(update={"seed": seed}), k)
        assigned = refit.model.transform(features).select("customer_id", F.col("prediction").alias("refit"))
        pairs = labelled[["customer_id", "cluster", "cluster_label"]].merge(assigned.toPandas(), on="customer_id")
        correspondence = pairs.groupby("cluster")["refit"].agg(lambda s: s.mode()[0])
        agreement = (pairs["refit"] == pairs["cluster"].map(correspondence)).mean()
        tried.append((seed, dict(correspondence), round(agreement, 4)))
        if agreement == 1.0 and correspondence.nunique() == k and (correspondence != correspondence.index).any():
            break
    else:
        pytest.fail(f"no seed gave the same partition with permuted cluster ids: {tried}")
    refit_profile = log_feature_profile(
        snapshot.join(assigned.withColumnRenamed("refit", "cluster"), "customer_id"), ["cluster"], settings.clustering
    )
    decision = carry_labels(
        refit_profile,
        labelled_profile,
        False,
        settings.labels,
        settings.model.label_match_max_distance,
        log_feature_scale(snapshot, settings.clustering),
    )
    assert all(source.startswith("matched") for source in decision.sources.values()), decision.sources
    relabelled = pairs.assign(label=pairs["refit"].map(decision.mapping))
    assert len(relabelled) == len(labelled) > 100
    assert (relabelled["label"] == relabelled["cluster_label"]).all(), "a customer's label changed with the ids"
    features.unpersist()


def test_label_mapping_artifact_explains_each_label(nights) -> None:
    settings, _ = nights
    run = night_run(settings, NIGHTS[2])
    mapping = json.loads(
        Path(tracking.client(settings).download_artifacts(run.info.run_id, "labels/label_mapping.json")).read_text()
    )
    assert set(mapping["label_sources"]) == set(mapping["cluster_labels"])
    assert mapping["previous_snapshot"] == NIGHTS[1].isoformat()
    assert set(mapping["quintile_edges"]) == {"recency_days", "frequency", "monetary"}


def test_compare_lists_the_nights_with_their_figures(nights, capsys) -> None:
    from jobs.ops.compare import comparison_table, night_runs

    settings, results = nights
    table = comparison_table(night_runs(settings, last=10))
    assert table["date"].tolist() == [n.isoformat() for n in reversed(NIGHTS)]
    by_date = table.set_index("date")
    for night in NIGHTS:
        cluster, label = results[night]
        row = by_date.loc[night.isoformat()]
        assert (row["night"], row["model_version"], row["k"]) in {
            (cluster["night_type"], cluster["model_version"], cluster["k"]),
            ("rerun", cluster["model_version"], cluster["k"]),  # the re-run test may have run first
        }
        assert row["silhouette"] == pytest.approx(night_run(settings, night).data.metrics["silhouette"])
        assert sum(int(size) for size in row["cluster_sizes"].split("/")) == label["customers"]
    assert table["stability_cluster"].iloc[:-1].notna().all() and pd.isna(table["stability_cluster"].iloc[-1])
    assert len(comparison_table(night_runs(settings, last=2))) == 2
