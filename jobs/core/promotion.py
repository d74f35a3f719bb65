"""The promotion rule: does a retrained clustering model take the champion alias, and why (pure)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jobs.core.labels import IdleAgreement


@dataclass(frozen=True)
class Promotion:
    """Whether a retrained version takes the alias, and why."""

    promoted: bool
    reason: str
    new_version: str
    champion_version: str | None
    new_silhouette: float
    champion_silhouette: float | None
    margin: float
    idle: dict[str, Any] | None = None  # IdleAgreement fields: idle customers and who relabels them
    max_relabel_share: float | None = None
    clear_gain: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Promotion:
        return cls(**json.loads(text))


def decide_promotion(
    new_version: str,
    new_silhouette: float,
    champion_version: str | None,
    champion_silhouette: float | None,
    margin: float,
    idle: IdleAgreement | None = None,
    max_relabel_share: float = 1.0,
    clear_gain: float = 0.0,
) -> Promotion:
    """The rule: promote when there is no champion (``champion_version`` None); otherwise never when the new model's silhouette
    is worse than the champion's by more than ``margin``; and when it relabels more than
    ``max_relabel_share`` of the idle customers (compared with the champion's labels tonight), only
    if its silhouette is clearly better: at least the champion's + ``clear_gain``. Without idle
    customers to compare (``idle`` None: no previous snapshot), the silhouette alone decides."""
    if champion_version is None:
        return Promotion(True, "no champion yet", new_version, None, new_silhouette, None, margin)
    fit = f"silhouette on tonight's data: new {new_silhouette:.4f}, champion {champion_silhouette:.4f}"
    if new_silhouette < champion_silhouette - margin:
        promoted, reason = False, f"{fit}: worse than the champion by more than the margin {margin}"
    elif idle is None or idle.idle_customers == 0:
        promoted, reason = True, f"{fit}: within the margin {margin}; no idle customers to compare labels on"
    else:
        share = idle.relabelled_share
        agreement = (
            f"it relabels {idle.relabelled} of {idle.idle_customers} idle customers ({share:.2%}) "
            f"compared with the champion"
        )
        if share <= max_relabel_share:
            promoted, reason = True, f"{fit}; {agreement}, within {max_relabel_share:.0%}"
        elif new_silhouette >= champion_silhouette + clear_gain:
            promoted, reason = (
                True,
                (
                    f"{fit}; {agreement}, over {max_relabel_share:.0%}, but its fit is "
                    f"clearly better (gain >= {clear_gain})"
                ),
            )
        else:
            promoted, reason = (
                False,
                (
                    f"{fit}; {agreement}, over {max_relabel_share:.0%}, and its fit is not "
                    f"clearly better (gain < {clear_gain}): the champion keeps the labels"
                ),
            )
    return Promotion(
        promoted,
        reason,
        new_version,
        champion_version,
        new_silhouette,
        champion_silhouette,
        margin,
        idle.__dict__ | {"relabelled_share": idle.relabelled_share} if idle else None,
        max_relabel_share,
        clear_gain,
    )
