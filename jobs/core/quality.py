"""Quality gates of a night's labels, pure: the meaning checks run before a night publishes
(``labels.checks`` in ``conf/``) and the warnings raised after it has published (``alerts``).

Messages carry label names, counts, aggregates and percentages only: never a customer's values.
"""

from __future__ import annotations

import math

import pandas as pd

from jobs.config import Alerts, LabelCheck, Labels


def statistic_column(check: LabelCheck) -> str:
    """The column of ``label_statistics`` a check reads: ``median_recency_days``, ``mean_frequency``, ..."""
    return f"{check.statistic}_{check.measure}"


def check_failure(check: LabelCheck, stats: pd.DataFrame) -> str | None:
    """Why ``check`` fails on ``stats`` (one row per label present, indexed by label), or None when
    it holds or cannot apply (its label, or the label it is compared with, has no customer tonight)."""
    column = statistic_column(check)
    if check.label not in stats.index or (check.other is not None and check.other not in stats.index):
        return None
    value = float(stats.loc[check.label, column])
    what = f"{check.label}: {check.statistic} {check.measure} {value:.2f}"
    if check.rank is not None:
        others = stats[column].drop(check.label)
        if others.empty:
            return None
        best = others.idxmax() if check.rank == "highest" else others.idxmin()
        beaten = others[best] >= value if check.rank == "highest" else others[best] <= value
        return f"{what} is not the {check.rank} ({best}: {float(others[best]):.2f})" if beaten else None
    other = float(stats.loc[check.other, column])
    holds = value > other if check.above is not None else value < other
    side = "above" if check.above is not None else "below"
    return None if holds else f"{what} is not {side} {check.other}'s {other:.2f}"


def label_checks(stats: pd.DataFrame, clusters: int, labels: Labels) -> list[str]:
    """Every failed meaning check of tonight's labels, described with its numbers (empty: all hold).

    ``stats``: one row per label carried by at least one customer, indexed by label, with
    ``customers`` and ``mean_*``/``median_*`` of each RFM measure. A label must not be empty while
    there are at least as many clusters as labels; the ranks compare the configured labels only
    (a cluster far from every profile, ``labels.unmatched_label``, is not ranked).
    """
    present = stats[stats.index.isin(labels.cluster_labels) & (stats["customers"] > 0)]
    failures = []
    if clusters >= len(labels.cluster_labels):
        failures += [
            f"{label}: no customer carries it ({clusters} clusters, {len(labels.cluster_labels)} labels)"
            for label in labels.cluster_labels
            if label not in present.index
        ]
    failures += [f for check in labels.checks if (f := check_failure(check, present)) is not None]
    return failures


def share_moves(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float], points: float) -> list[str]:
    """Segments (label scheme, name) whose share of customers moved more than ``points`` percentage
    points between two snapshots (a segment absent from one has share 0 there), largest move first."""
    moves = {key: 100 * (after.get(key, 0.0) - before.get(key, 0.0)) for key in {*before, *after}}
    large = sorted((key for key, move in moves.items() if abs(move) > points), key=lambda k: (-abs(moves[k]), k))
    return [
        f"{scheme} segment {name}: {100 * before.get((scheme, name), 0.0):.1f} % -> "
        f"{100 * after.get((scheme, name), 0.0):.1f} % ({moves[(scheme, name)]:+.1f} points)"
        for scheme, name in large
    ]


def night_warnings(
    before: dict[tuple[str, str], float] | None,
    after: dict[tuple[str, str], float],
    stability: float | None,
    idle_customers: int,
    alerts: Alerts,
) -> list[str]:
    """What to warn about once a night has published: segment shares that moved more than
    ``alerts.max_share_move_points`` since the previous published snapshot (``before``; None on a
    first night) and a cluster-label stability of idle customers below ``alerts.min_idle_stability``."""
    warnings = share_moves(before, after, alerts.max_share_move_points) if before is not None else []
    if stability is not None and math.isfinite(stability) and stability < alerts.min_idle_stability:
        kept = round(stability * idle_customers)
        warnings.append(
            f"idle-customer label stability {100 * stability:.2f} % ({kept} of {idle_customers} kept their "
            f"cluster label) is below {100 * alerts.min_idle_stability:.2f} %"
        )
    return warnings


def bound_crossed(name: str, value: float, bound: float) -> list[str]:
    """A warning when ``value`` lies beyond ``±bound`` (e.g. the CLV scorecard's bias), else none."""
    return [f"{name} {value:+.4g} is beyond its bound ±{bound:.4g}"] if abs(value) > bound else []
