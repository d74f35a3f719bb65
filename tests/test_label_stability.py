"""Labels that hold across nights: carried labels, the value-order guard, transitions, stability."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import permutations

import numpy as np
import pandas as pd
import pytest

from jobs.config import load_settings
from jobs.core.labels import carry_labels, dominance_violations, match_centroids, profile_label_map
from jobs.definitions import GONE_CUSTOMER, NEW_CUSTOMER
from jobs.steps.label import label_stability, segment_transitions
from tests.helpers import dominates, random_profile

LABELS = ["VIP", "Loyal", "At-Risk", "Low-Value"]
RULES = load_settings().labels  # profiles and guard from conf/
UNIT_SCALE = (np.zeros(3), np.ones(3))
DAY, PREVIOUS_DAY = date(2011, 12, 9), date(2011, 12, 8)


def profile(rows: list[tuple[int, float, float, float]], z: list[tuple[float, float, float]]) -> pd.DataFrame:
    """Cluster profiles from (cluster, mean recency, mean frequency, mean monetary) and standardised
    centroids (given as log means under ``UNIT_SCALE``)."""
    frame = pd.DataFrame(rows, columns=["cluster", "mean_recency_days", "mean_frequency", "mean_monetary"])
    frame["customers"] = 100
    for i, column in enumerate(("recency_days", "frequency", "monetary")):
        frame[f"mean_log_{column}"] = [row[i] for row in z]
    return frame


# Real 2011-12-09 clusters (k = 4): VIP, Loyal, lapsed (At-Risk), recent low spenders (Low-Value).
TONIGHT = profile(
    [(0, 14.6, 16.0, 9076.0), (1, 41.8, 4.35, 1589.0), (2, 229.7, 1.47, 412.7), (3, 42.9, 1.52, 382.7)],
    [(-1.01, 1.92, 1.53), (-0.46, 0.42, 0.52), (1.32, -0.70, -0.67), (-0.37, -0.66, -0.62)],
)
BY_PROFILE = {0: "VIP", 1: "Loyal", 2: "At-Risk", 3: "Low-Value"}


def previous_of(current: pd.DataFrame, ids: list[int], labels: list[str], shift: float = 0.01) -> pd.DataFrame:
    """The previous snapshot's clusters: the same centroids (slightly moved) under other ids and labels."""
    return current.assign(
        cluster=ids, cluster_label=labels, **{c: current[c] + shift for c in current if c.startswith("mean_log_")}
    )


# --- carried labels ---------------------------------------------------------------------------------


def test_first_night_uses_the_profile_rule() -> None:
    decision = carry_labels(TONIGHT, None, False, RULES, 1.0, UNIT_SCALE)
    assert decision.mapping == BY_PROFILE
    assert set(decision.sources.values()) == {"profile rule"}


def test_a_refit_with_permuted_ids_keeps_each_clusters_label() -> None:
    previous = previous_of(TONIGHT, ids=[2, 3, 0, 1], labels=["VIP", "Loyal", "At-Risk", "Low-Value"])
    decision = carry_labels(TONIGHT, previous, False, RULES, 1.0, UNIT_SCALE)
    assert decision.mapping == BY_PROFILE
    assert all(source.startswith("matched previous cluster") for source in decision.sources.values())
    assert "matched previous cluster 2" in decision.sources[0]


def test_a_matched_cluster_keeps_its_label_where_the_profile_rule_would_differ() -> None:
    # Last night clusters 2 and 3 (tonight's ids) were both At-Risk: k=5 style labels carried over.
    previous = previous_of(TONIGHT, ids=[7, 8, 9, 6], labels=["VIP", "Loyal", "At-Risk", "At-Risk"])
    decision = carry_labels(TONIGHT, previous, False, RULES, 1.0, UNIT_SCALE)
    assert BY_PROFILE[3] == "Low-Value" and decision.mapping[3] == "At-Risk", "matching, not the profiles, decided"
    assert decision.mapping == {0: "VIP", 1: "Loyal", 2: "At-Risk", 3: "At-Risk"}


def test_an_unmatched_cluster_gets_the_profile_rule() -> None:
    previous = previous_of(TONIGHT, ids=[0, 1, 2, 3], labels=["VIP", "Loyal", "Loyal", "Low-Value"])
    previous.loc[previous["cluster"] == 2, [c for c in previous if c.startswith("mean_log_")]] += 5.0  # far away
    decision = carry_labels(TONIGHT, previous, False, RULES, 1.0, UNIT_SCALE)
    assert decision.sources[2] == "profile rule" and decision.mapping[2] == "At-Risk"
    assert decision.sources[1].startswith("matched") and decision.mapping[1] == "Loyal"


def test_same_model_version_keeps_labels_by_cluster_id() -> None:
    previous = previous_of(TONIGHT, ids=[0, 1, 2, 3], labels=["VIP", "Loyal", "Loyal", "Low-Value"], shift=3.0)
    decision = carry_labels(TONIGHT, previous, True, RULES, 1.0, UNIT_SCALE)
    assert decision.mapping == {0: "VIP", 1: "Loyal", 2: "Loyal", 3: "Low-Value"}, "ids, not distances, decide"
    assert set(decision.sources.values()) == {"same model version: label kept"}


def test_inherited_labels_that_break_the_guard_give_way_to_the_profile_rule() -> None:
    # Last night's labels were upside down: keeping them would label the best cluster Low-Value.
    previous = previous_of(TONIGHT, ids=[0, 1, 2, 3], labels=["Low-Value", "At-Risk", "Loyal", "VIP"])
    decision = carry_labels(TONIGHT, previous, False, RULES, 1.0, UNIT_SCALE)
    assert decision.mapping == BY_PROFILE == profile_label_map(TONIGHT, UNIT_SCALE, RULES)
    assert "broke the guard" in decision.note


def test_inherited_labels_the_guard_does_not_forbid_are_kept() -> None:
    # Lapsed (2) and recent low spenders (3) swapped last night: not ordered by the guard, so kept.
    previous = previous_of(TONIGHT, ids=[0, 1, 2, 3], labels=["VIP", "Loyal", "Low-Value", "At-Risk"])
    decision = carry_labels(TONIGHT, previous, False, RULES, 1.0, UNIT_SCALE)
    assert decision.mapping == {0: "VIP", 1: "Loyal", 2: "Low-Value", 3: "At-Risk"}


def test_centroids_are_compared_in_standardised_units() -> None:
    current = np.array([[0.0, 0.0], [10.0, 0.0]])
    previous = np.array([[10.5, 0.0], [0.5, 0.0]])
    assert match_centroids(current, previous, max_distance=1.0) == {0: (1, 0.5), 1: (0, 0.5)}
    assert match_centroids(current, previous, max_distance=0.4) == {}


@pytest.mark.parametrize("k", range(2, 9))
def test_carried_labels_never_put_a_dominating_cluster_at_low_value_below_vip_or_loyal(k: int) -> None:
    checked = 0
    for seed in range(60):
        rng = np.random.default_rng(7000 + 100 * k + seed)
        current = random_profile(rng, k, discrete=seed % 2 == 0)
        for column in ("recency_days", "frequency", "monetary"):
            current[f"mean_log_{column}"] = np.log1p(current[f"mean_{column}"])
        previous = current.assign(cluster_label=rng.choice(LABELS, size=k))  # any labels at all last night
        mapping = carry_labels(current, previous, seed % 3 == 0, RULES, 1.0, UNIT_SCALE).mapping
        assert dominance_violations(current, mapping, RULES) == []
        for a, b in permutations(current.itertuples(index=False), 2):
            if dominates(a, b) and mapping[b.cluster] in {"VIP", "Loyal"}:
                checked += 1
                assert mapping[a.cluster] != "Low-Value", (seed, current, mapping)
    assert checked >= 5  # exercised, not vacuous


# --- transitions --------------------------------------------------------------------------------------

SEGMENT_SCHEMA = (
    "snapshot_date date, customer_id string, recency_days int, frequency int, monetary decimal(20,3), "
    "cluster_label string, rfm_segment string"
)


def segments(spark, day: date, rows: list[tuple]):
    return spark.createDataFrame([(day, *row) for row in rows], SEGMENT_SCHEMA)


PREVIOUS_ROWS = [
    ("a", 3, 9, Decimal("900.000"), "VIP", "Champions"),
    ("b", 10, 4, Decimal("300.000"), "Loyal", "Loyal"),
    ("c", 50, 2, Decimal("120.000"), "At-Risk", "At Risk"),
    ("d", 200, 1, Decimal("20.000"), "Low-Value", "Lost"),
    ("e", 90, 1, Decimal("35.500"), "Low-Value", "Hibernating"),
]
CURRENT_ROWS = [
    ("a", 0, 10, Decimal("1000.000"), "VIP", "Champions"),  # bought again
    ("b", 11, 4, Decimal("300.000"), "Loyal", "Loyal"),  # idle, kept both labels
    ("c", 51, 2, Decimal("120.000"), "Low-Value", "At Risk"),  # idle, cluster label changed
    ("d", 201, 1, Decimal("20.000"), "Low-Value", "Lost"),  # idle, kept
    ("f", 0, 1, Decimal("15.000"), "Low-Value", "New"),  # new customer
]  # "e" is gone


def test_transitions_count_every_customer_once_and_sum_to_both_snapshots(spark) -> None:
    previous, current = segments(spark, PREVIOUS_DAY, PREVIOUS_ROWS), segments(spark, DAY, CURRENT_ROWS)
    out = segment_transitions(previous, current, PREVIOUS_DAY).toPandas()
    assert set(out["snapshot_date"]) == {DAY} and set(out["previous_snapshot_date"]) == {PREVIOUS_DAY}
    before = pd.DataFrame(PREVIOUS_ROWS, columns=["customer_id", "r", "f", "m", "cluster_label", "rfm_segment"])
    after = pd.DataFrame(CURRENT_ROWS, columns=before.columns)
    for scheme, column in (("cluster", "cluster_label"), ("rfm", "rfm_segment")):
        part = out[out["label_scheme"] == scheme]
        assert part["customers"].sum() == len(set(before["customer_id"]) | set(after["customer_id"]))
        into = part[part["to_segment"] != GONE_CUSTOMER].groupby("to_segment")["customers"].sum()
        assert into.to_dict() == after[column].value_counts().to_dict()
        out_of = part[part["from_segment"] != NEW_CUSTOMER].groupby("from_segment")["customers"].sum()
        assert out_of.to_dict() == before[column].value_counts().to_dict()
        assert part["monetary_total"].sum() == after["m"].sum()
        assert part["previous_monetary_total"].sum() == before["m"].sum()
    cluster = out[out["label_scheme"] == "cluster"].set_index(["from_segment", "to_segment"])
    assert cluster.loc[(NEW_CUSTOMER, "Low-Value"), "customers"] == 1
    assert cluster.loc[("Low-Value", GONE_CUSTOMER), "customers"] == 1
    assert cluster.loc[("At-Risk", "Low-Value"), "monetary_total"] == Decimal("120.000")
    assert cluster.loc[("Low-Value", "Low-Value"), "customers"] == 1  # d


def test_first_snapshot_transitions_all_come_from_new(spark) -> None:
    current = segments(spark, DAY, CURRENT_ROWS)
    out = segment_transitions(current.limit(0), current, None).toPandas()
    assert set(out["from_segment"]) == {NEW_CUSTOMER}
    assert out["previous_snapshot_date"].isna().all()
    assert out.groupby("label_scheme")["customers"].sum().to_dict() == {"cluster": 5, "rfm": 5}


# --- stability --------------------------------------------------------------------------------------


def test_label_stability_counts_only_customers_who_bought_nothing() -> None:
    columns = ["customer_id", "recency_days", "frequency", "monetary", "cluster_label", "rfm_segment"]
    before = pd.DataFrame(PREVIOUS_ROWS, columns=columns)
    after = pd.DataFrame(CURRENT_ROWS, columns=columns)
    metrics = label_stability(before, after, days_between=1)
    assert metrics["customers_in_both"] == 4  # a, b, c, d
    assert metrics["stability_population"] == 3  # b, c, d (a bought again)
    assert metrics["label_stability_cluster"] == pytest.approx(2 / 3)
    assert metrics["label_changes_cluster"] == 1
    assert metrics["label_stability_rfm"] == 1.0 and metrics["label_changes_rfm"] == 0
    assert metrics["ari_rfm"] == 1.0 and metrics["ari_cluster"] < 1.0


def test_label_stability_needs_recency_to_age_by_the_gap() -> None:
    columns = ["customer_id", "recency_days", "frequency", "monetary", "cluster_label", "rfm_segment"]
    before = pd.DataFrame(PREVIOUS_ROWS, columns=columns)
    after = pd.DataFrame(CURRENT_ROWS, columns=columns)
    assert label_stability(before, after, days_between=2)["stability_population"] == 0


def test_the_stability_table_reports_each_night_type_apart() -> None:
    from jobs.ops.replay import stability_table

    def night(day: int, kind: str, kept: float, changed: int, promoted=None, relabelled=None) -> dict:
        return {
            "night": date(2011, 8, day),
            "kind": kind,
            "version": "1",
            "promoted": promoted,
            "idle_relabelled": relabelled,
            "stability_population": 3000.0,
            "label_stability_cluster": kept,
            "label_changes_cluster": float(changed),
        }

    rows = [
        {"night": date(2011, 8, 11), "kind": "retrain", "version": "1", "promoted": True, "idle_relabelled": None},
        night(12, "score", 0.995, 15),
        night(13, "score", 0.999, 3),
        night(18, "retrain", 0.997, 9, False, 140),
        night(25, "retrain", 0.990, 30, True, 25),
    ]
    table = stability_table(rows)
    assert "| score | 2 | 99.50%–99.90% | 3–15 |" in table
    assert "| retrain (champion kept) | 1 | 99.70%–99.70% | 9–9 |" in table
    assert "| retrain (promoted) | 1 | 99.00%–99.00% | 30–30 |" in table
    assert "| 2011-08-18 | retrain (champion kept) | 1 | 3,000 | 99.70% | 9 | 140 |" in table
    assert "2011-08-11" not in table, "the first night has no previous snapshot"
