"""Cluster labels, pure: profiles, the optimal assignment of clusters to labels, the dominance
guard, and carrying labels across nights by matching standardised centroids.

Shared by the label step (tonight's labels) and the cluster step (the labels a retrained
candidate would give, for the promotion rule's idle-customer agreement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from jobs.config import Labels
from jobs.definitions import RFM_MEASURES

if TYPE_CHECKING:
    from pyspark.sql import Column

LOG_MEANS = [f"mean_log_{c}" for c in RFM_MEASURES]
PROFILE_RULE = "profile rule"


@dataclass
class LabelDecision:
    """Cluster id -> label, and for each cluster where its label came from."""

    mapping: dict[int, str]
    sources: dict[int, str] = field(default_factory=dict)
    note: str = ""


def standardised_centroids(profile: pd.DataFrame, scale: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Each cluster's centroid in the snapshot's standardised log features (rows as in ``profile``)."""
    center, sd = scale
    return (profile[LOG_MEANS].to_numpy(dtype=float) - center) / sd


def dominance_violations(profile: pd.DataFrame, mapping: dict[int, str], labels: Labels) -> list[tuple[int, int]]:
    """Pairs (a, b): cluster a is at least as good as b in mean R (lower), F and M, better in one, yet
    a has the guard's low label while b has one of its high labels."""
    rows = profile.set_index("cluster")[["mean_recency_days", "mean_frequency", "mean_monetary"]]
    better = rows.assign(mean_recency_days=-rows["mean_recency_days"])
    found = []
    for a in better.index:
        for b in better.index:
            at_least, strictly = (better.loc[a] >= better.loc[b]).all(), (better.loc[a] > better.loc[b]).any()
            if at_least and strictly and mapping[a] == labels.guard.low and mapping[b] in labels.guard.high:
                found.append((int(a), int(b)))
    return found


def enforce_guard(profile: pd.DataFrame, mapping: dict[int, str], labels: Labels) -> dict[int, str]:
    """Swap the labels of each violating pair until none is left. Terminates: every swap moves the low
    label to a dominated cluster, i.e. strictly down the dominance order."""
    mapping = dict(mapping)
    while violations := dominance_violations(profile, mapping, labels):
        a, b = violations[0]
        mapping[a], mapping[b] = mapping[b], mapping[a]
    return mapping


def profile_label_map(profile: pd.DataFrame, scale: tuple[np.ndarray, np.ndarray], labels: Labels) -> dict[int, str]:
    """Cluster id -> label by profile: a cluster farther than ``labels.max_profile_distance`` from every
    profile is ``labels.unmatched_label``; the others are assigned to label profiles with the least
    total Euclidean distance in standardised (R, F, M); clusters beyond one per label take their
    nearest profile's label; with fewer clusters than labels, the labels left over stay empty. The
    guard holds."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    names = list(labels.profiles)
    distances = cdist(standardised_centroids(profile, scale), np.array([labels.profiles[n] for n in names]))
    nearest = distances.argmin(axis=1)
    near = np.flatnonzero(distances.min(axis=1) <= labels.max_profile_distance).tolist()
    rows, columns = linear_sum_assignment(distances[near])
    assigned = {near[r]: int(c) for r, c in zip(rows, columns, strict=True)}
    clusters = profile["cluster"].astype(int).tolist()
    mapping = {
        cluster: names[assigned.get(row, nearest[row])] if row in near else labels.unmatched_label
        for row, cluster in enumerate(clusters)
    }
    return enforce_guard(profile, mapping, labels)


def profile_decision(
    profile: pd.DataFrame, scale: tuple[np.ndarray, np.ndarray], labels: Labels, note: str
) -> LabelDecision:
    """The profile rule's labels for every cluster, with ``note`` saying why."""
    mapping = profile_label_map(profile, scale, labels)
    return LabelDecision(mapping, {c: PROFILE_RULE for c in mapping}, note)


def cluster_label_column(mapping: dict[int, str]) -> Column:
    """The Spark expression of the label ``mapping`` gives the ``cluster`` column (null: a cluster it lacks)."""
    from pyspark.sql import functions as F

    label_of = F.create_map(*[x for cluster, label in sorted(mapping.items()) for x in (F.lit(cluster), F.lit(label))])
    return label_of[F.col("cluster")]


def empty_labels(mapping: dict[int, str], labels: Labels) -> list[str]:
    """The labels no cluster carries tonight, in display order."""
    return [label for label in labels.cluster_labels if label not in mapping.values()]


def match_centroids(current: np.ndarray, previous: np.ndarray, max_distance: float) -> dict[int, tuple[int, float]]:
    """Row of ``current`` -> (row of ``previous``, distance) by minimum total Euclidean distance,
    keeping only pairs closer than ``max_distance``."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    distances = cdist(current, previous)
    rows, cols = linear_sum_assignment(distances)
    return {
        int(r): (int(c), float(distances[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if distances[r, c] <= max_distance
    }


def carry_labels(
    current: pd.DataFrame,
    previous: pd.DataFrame | None,
    same_model: bool,
    labels: Labels,
    max_distance: float,
    scale: tuple[np.ndarray, np.ndarray],
) -> LabelDecision:
    """Tonight's cluster labels: inherited from the previous snapshot where the cluster is the same
    (same model version) or its standardised centroid matches, the profile rule elsewhere.

    ``current``: cluster, customers, mean R/F/M and ``mean_log_*`` per cluster; ``previous``:
    cluster, cluster_label and ``mean_log_*``; ``scale``: (mean, sd) of tonight's log features.
    """
    by_profile = profile_label_map(current, scale, labels)
    if previous is None or previous.empty:
        return profile_decision(current, scale, labels, "no previous snapshot: profile rule")
    decision = LabelDecision(dict(by_profile), {c: PROFILE_RULE for c in by_profile})
    previous_label = dict(zip(previous["cluster"].astype(int), previous["cluster_label"], strict=True))
    if same_model:
        for cluster in by_profile:
            if cluster in previous_label:
                decision.mapping[cluster] = previous_label[cluster]
                decision.sources[cluster] = "same model version: label kept"
        decision.note = "same model version as the previous snapshot"
    else:
        standardised = [standardised_centroids(frame, scale) for frame in (current, previous)]
        for row, (prev_row, distance) in match_centroids(*standardised, max_distance).items():
            cluster, matched = int(current["cluster"].iloc[row]), int(previous["cluster"].iloc[prev_row])
            decision.mapping[cluster] = previous_label[matched]
            decision.sources[cluster] = f"matched previous cluster {matched} (distance {distance:.3f}): label kept"
        decision.note = "new model version: centroids matched to the previous snapshot's"
    violations = dominance_violations(current, decision.mapping, labels)
    if violations:
        return profile_decision(current, scale, labels, f"inherited labels broke the guard {violations}: profile rule")
    return decision


@dataclass(frozen=True)
class IdleAgreement:
    """Customers who bought nothing since the previous snapshot ("idle"), labelled tonight by the
    champion and by a retrained candidate (each carried from the previous snapshot's labels).

    ``champion_changes``: idle customers whose label the champion changes (ageing across a
    recency boundary: same model, only R grew); ``candidate_changes``: the same for the candidate;
    ``relabelled``: idle customers on whose label the two models disagree (the model change).
    """

    previous_snapshot: str
    idle_customers: int
    champion_changes: int
    candidate_changes: int
    relabelled: int

    @property
    def relabelled_share(self) -> float:
        return self.relabelled / self.idle_customers if self.idle_customers else 0.0


def idle_agreement(frame: pd.DataFrame, previous_snapshot: str) -> IdleAgreement:
    """``frame``: one row per idle customer with ``previous_label``, ``champion_label`` and
    ``candidate_label``."""
    return IdleAgreement(
        previous_snapshot=previous_snapshot,
        idle_customers=len(frame),
        champion_changes=int((frame["champion_label"] != frame["previous_label"]).sum()),
        candidate_changes=int((frame["candidate_label"] != frame["previous_label"]).sum()),
        relabelled=int((frame["candidate_label"] != frame["champion_label"]).sum()),
    )
