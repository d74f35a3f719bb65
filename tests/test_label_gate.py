"""Quality gates of the labels, pure: the meaning checks before a night publishes, the warnings after,
and clusters far from every profile (issue 28, item 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.config import LabelCheck, Labels, load_settings
from jobs.core.labels import carry_labels, profile_label_map
from jobs.core.quality import bound_crossed, label_checks, night_warnings, share_moves
from tests.helpers import REAL_K4, REAL_K5, REAL_K6, UNIT_SCALE

RULES = load_settings().labels
ALERTS = load_settings().alerts
MEASURES = ["recency_days", "frequency", "monetary"]


def stats(rows: dict[str, tuple[int, float, float, float, float]]) -> pd.DataFrame:
    """Per label: customers, median recency, mean recency, mean F, mean M (median F and M = the means)."""
    frame = pd.DataFrame.from_dict(
        rows, orient="index", columns=["customers", "median_recency_days", "mean_recency_days", "f", "m"]
    )
    return frame.assign(
        mean_frequency=frame.f, median_frequency=frame.f, mean_monetary=frame.m, median_monetary=frame.m
    )


# The real 2011-12-09 labels at k = 4, 5, 6 (docs/model-lifecycle.md, "Label profiles on the real data").
REAL_LABELS = {
    4: {
        "VIP": (552, 8.0, 14.6, 16.0, 9076.6),
        "Loyal": (1372, 29.0, 41.8, 4.4, 1589.1),
        "At-Risk": (1236, 225.0, 229.7, 1.5, 412.7),
        "Low-Value": (1174, 40.0, 42.9, 1.5, 382.7),
    },
    5: {
        "VIP": (458, 8.5, 15.2, 17.7, 10362.6),
        "Loyal": (1128, 19.0, 24.3, 4.9, 1735.1),
        "At-Risk": (1715, 182.0, 190.7, 1.9, 633.0),
        "Low-Value": (1033, 33.0, 37.0, 1.5, 349.5),
    },
    6: {
        "VIP": (283, 5.0, 11.1, 22.7, 14298.8),
        "Loyal": (1621, 19.0, 23.6, 4.9, 1734.6),
        "At-Risk": (1670, 185.0, 193.4, 1.9, 656.3),
        "Low-Value": (760, 45.5, 46.6, 1.2, 257.3),
    },
}


@pytest.mark.parametrize("k", [4, 5, 6])
def test_the_real_years_labels_pass_every_check(k: int) -> None:
    assert len(RULES.checks) >= 6, "conf/ checks every label"
    assert {check.label for check in RULES.checks} == set(RULES.cluster_labels)
    assert label_checks(stats(REAL_LABELS[k]), k, RULES) == []


def test_lapsed_customers_labelled_low_value_fail_with_their_numbers() -> None:
    real = REAL_LABELS[4]
    swapped = stats({**real, "At-Risk": real["Low-Value"], "Low-Value": real["At-Risk"]})
    failures = label_checks(swapped, 4, RULES)
    assert "At-Risk: median recency_days 40.00 is not the highest (Low-Value: 225.00)" in failures
    assert "Loyal: median recency_days 29.00 is not below At-Risk's 40.00" not in failures  # 29 < 40 holds
    assert "Low-Value: mean monetary 412.70 is not below Loyal's 1589.10" not in failures
    assert len(failures) == 1


def test_a_vip_that_spends_less_than_loyal_fails_both_ways() -> None:
    real = REAL_LABELS[4]
    upside = stats({**real, "VIP": real["Loyal"], "Loyal": real["VIP"]})
    failures = label_checks(upside, 4, RULES)
    assert "VIP: mean frequency 4.40 is not the highest (Loyal: 16.00)" in failures
    assert "VIP: mean monetary 1589.10 is not the highest (Loyal: 9076.60)" in failures
    assert len(failures) == 2


def test_an_empty_label_fails_only_when_there_are_enough_clusters() -> None:
    real = {label: row for label, row in REAL_LABELS[4].items() if label != "Loyal"}
    assert label_checks(stats(real), 4, RULES) == ["Loyal: no customer carries it (4 clusters, 4 labels)"]
    assert label_checks(stats(real), 3, RULES) == [], "k = 3 cannot fill four labels; checks on Loyal do not apply"
    zero = stats({**REAL_LABELS[4], "Loyal": (0, 0.0, 0.0, 0.0, 0.0)})
    assert label_checks(zero, 4, RULES) == ["Loyal: no customer carries it (4 clusters, 4 labels)"]


def test_the_unprofiled_group_is_not_ranked() -> None:
    far = stats({**REAL_LABELS[5], RULES.unmatched_label: (10, 400.0, 400.0, 90.0, 99000.0)})
    assert label_checks(far, 5, RULES) == []


def test_lowest_and_above_comparisons() -> None:
    rules = RULES.model_copy(
        update={
            "checks": [
                LabelCheck(label="Low-Value", measure="monetary", statistic="mean", rank="lowest"),
                LabelCheck(label="Loyal", measure="recency_days", statistic="median", above="VIP"),
            ]
        }
    )
    assert label_checks(stats(REAL_LABELS[4]), 4, rules) == []
    tie = stats({**REAL_LABELS[4], "At-Risk": (1236, 225.0, 229.7, 1.5, 382.7)})
    assert label_checks(tie, 4, rules) == ["Low-Value: mean monetary 382.70 is not the lowest (At-Risk: 382.70)"]


def test_checks_are_validated() -> None:
    raw = RULES.model_dump()
    with pytest.raises(ValueError, match="exactly one of rank, above, below"):
        LabelCheck(label="VIP", measure="frequency", statistic="mean", rank="highest", above="Loyal")
    with pytest.raises(ValueError, match="unknown labels"):
        Labels(**{**raw, "checks": [{"label": "Gold", "measure": "frequency", "statistic": "mean", "rank": "highest"}]})
    with pytest.raises(ValueError, match="unmatched_label"):
        Labels(**{**raw, "unmatched_label": "VIP"})


# --- clusters far from every profile ------------------------------------------------------------------


@pytest.mark.parametrize("clusters", [REAL_K4, REAL_K5, REAL_K6], ids=["k4", "k5", "k6"])
def test_the_default_distance_leaves_the_real_labels_unchanged(clusters) -> None:
    unlimited = RULES.model_copy(update={"max_profile_distance": float("inf")})
    mapping = profile_label_map(clusters, UNIT_SCALE, RULES)
    assert mapping == profile_label_map(clusters, UNIT_SCALE, unlimited)
    assert RULES.unmatched_label not in mapping.values()


def far_cluster() -> pd.DataFrame:
    """REAL_K4 and a fifth cluster: very recent, very frequent, low spending: nobody's profile."""
    odd = REAL_K4[REAL_K4["cluster"] == 3].assign(
        cluster=7, mean_log_recency_days=-2.5, mean_log_frequency=3.0, mean_log_monetary=-2.0, mean_monetary=50.0
    )
    return pd.concat([REAL_K4, odd], ignore_index=True)


def test_a_cluster_far_from_every_profile_is_unprofiled_not_forced_onto_the_nearest() -> None:
    clusters = far_cluster()
    mapping = profile_label_map(clusters, UNIT_SCALE, RULES)
    assert mapping == {0: "Low-Value", 1: "At-Risk", 2: "Loyal", 3: "VIP", 7: "Unprofiled"}
    unlimited = RULES.model_copy(update={"max_profile_distance": float("inf")})
    assert profile_label_map(clusters, UNIT_SCALE, unlimited)[7] in RULES.cluster_labels


def test_an_unprofiled_cluster_does_not_take_a_label_from_the_assignment() -> None:
    """The VIP cluster and an extreme one beyond it: assigned together, the extreme one would take
    VIP and push the real VIPs to Loyal; left out of the assignment, the VIPs stay VIP."""
    vip = REAL_K4[REAL_K4["cluster"] == 3]
    extreme = vip.assign(cluster=7, mean_log_recency_days=-4.0, mean_log_frequency=9.0, mean_log_monetary=8.0)
    clusters = pd.concat([vip, extreme], ignore_index=True)
    assert profile_label_map(clusters, UNIT_SCALE, RULES) == {3: "VIP", 7: "Unprofiled"}
    unlimited = RULES.model_copy(update={"max_profile_distance": float("inf")})
    assert profile_label_map(clusters, UNIT_SCALE, unlimited) == {3: "Loyal", 7: "VIP"}


def test_carried_labels_and_the_guard_with_an_unprofiled_cluster() -> None:
    clusters = far_cluster()
    first = carry_labels(clusters, None, False, RULES, 1.0, UNIT_SCALE)
    assert first.mapping[7] == "Unprofiled"
    previous = clusters.assign(cluster=[10, 11, 12, 13, 14], cluster_label=[first.mapping[c] for c in clusters.cluster])
    refit = carry_labels(clusters, previous, False, RULES, 1.0, UNIT_SCALE)
    assert refit.mapping == first.mapping and "matched previous cluster 14" in refit.sources[7]
    same = carry_labels(clusters, previous.assign(cluster=clusters.cluster), True, RULES, 1.0, UNIT_SCALE)
    assert same.mapping == first.mapping


# --- warnings after publishing --------------------------------------------------------------------------


def test_share_moves_above_the_bound_only_largest_first() -> None:
    before = {("cluster", "VIP"): 0.10, ("cluster", "Loyal"): 0.40, ("rfm", "Lost"): 0.20, ("rfm", "New"): 0.05}
    after = {
        ("cluster", "VIP"): 0.12,
        ("cluster", "Loyal"): 0.30,
        ("rfm", "Lost"): 0.26,
        ("cluster", "Unprofiled"): 0.08,
    }
    assert share_moves(before, after, 5.0) == [
        "cluster segment Loyal: 40.0 % -> 30.0 % (-10.0 points)",
        "cluster segment Unprofiled: 0.0 % -> 8.0 % (+8.0 points)",
        "rfm segment Lost: 20.0 % -> 26.0 % (+6.0 points)",
    ]
    assert share_moves(before, before, 0.1) == []


def test_night_warnings() -> None:
    same = {("cluster", "VIP"): 0.1}
    assert night_warnings(None, same, None, 0, ALERTS) == [], "a first night has nothing to compare"
    assert night_warnings(same, same, 0.995, 1000, ALERTS) == []
    assert ALERTS.min_idle_stability == 0.99
    assert night_warnings(same, same, 0.98, 1000, ALERTS) == [
        "idle-customer label stability 98.00 % (980 of 1000 kept their cluster label) is below 99.00 %"
    ]
    assert night_warnings(same, same, float("nan"), 0, ALERTS) == [], "no idle customers: nothing to say"
    moved = night_warnings(same, {("cluster", "VIP"): 0.2}, 1.0, 10, ALERTS)
    assert moved == ["cluster segment VIP: 10.0 % -> 20.0 % (+10.0 points)"]


def test_measures_named_by_checks_are_the_rfm_measures() -> None:
    assert {check.measure for check in RULES.checks} <= set(MEASURES)
    assert np.isfinite(RULES.max_profile_distance)


def test_a_bound_crossed_either_way() -> None:
    assert bound_crossed("scorecard bias", 0.05, 0.1) == []
    assert bound_crossed("scorecard bias", -0.1, 0.1) == [], "on the bound is within it"
    assert bound_crossed("scorecard bias", -0.125, 0.1) == ["scorecard bias -0.125 is beyond its bound ±0.1"]
    assert bound_crossed("scorecard bias", 0.3, 0.1) == ["scorecard bias +0.3 is beyond its bound ±0.1"]
