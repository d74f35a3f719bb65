"""Calibration of P(purchase in the horizon): an isotonic map from predicted to observed, kept as numbers.

Fitted on data before the night (``jobs.steps.clv``: the model refitted as of the fit date minus
the horizon, its predictions against who bought in the horizon that followed) with scikit-learn's
``IsotonicRegression(out_of_bounds="clip")``; kept as its thresholds, so scoring is ``np.interp``
(what ``IsotonicRegression.predict`` computes) with no scikit-learn at scoring time. The identity
map (no thresholds) stands for "not calibrated", always with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from jobs.core.clv import ClvParams, customer_summary, fit_params, p_no_purchase

IDENTITY = "identity"
ISOTONIC = "isotonic"


@dataclass(frozen=True)
class Calibration:
    """An isotonic map (``x`` increasing predicted values -> ``y`` observed shares) or the identity."""

    method: str
    reason: str
    x: tuple[float, ...] = field(default=())
    y: tuple[float, ...] = field(default=())

    def apply(self, p: object) -> np.ndarray:
        """The calibrated probabilities of ``p`` (clipped at the ends of the map, as fitted)."""
        p = np.asarray(p, dtype=float)
        if self.method == IDENTITY:
            return p
        return np.interp(p, self.x, self.y)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "reason": self.reason, "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> Calibration:
        """The map a model version holds; a version without one (registered before calibration) is the identity."""
        if not values:
            return identity("the model version holds no calibration map")
        return cls(values["method"], values["reason"], tuple(values["x"]), tuple(values["y"]))


def identity(reason: str) -> Calibration:
    """No calibration, and why."""
    return Calibration(IDENTITY, reason)


def fit_isotonic(predicted: object, bought: object, min_customers: int, reason: str) -> Calibration:
    """The isotonic map of ``predicted`` to ``bought`` (0/1); the identity when fewer than
    ``min_customers`` or a single outcome (nothing to calibrate against)."""
    from sklearn.isotonic import IsotonicRegression

    predicted, bought = np.asarray(predicted, dtype=float), np.asarray(bought, dtype=float)
    if len(predicted) < min_customers:
        return identity(f"{len(predicted)} customers to calibrate on, fewer than {min_customers}")
    if bought.min() == bought.max():
        return identity("every calibration customer had the same outcome")
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(predicted, bought)
    return Calibration(ISOTONIC, reason, tuple(map(float, model.X_thresholds_)), tuple(map(float, model.y_thresholds_)))


def calibration_of(
    days: pd.DataFrame,
    origin: date,
    end: date,
    min_history_days: int,
    min_customers: int,
    fit: Callable[[pd.DataFrame], ClvParams] = fit_params,
) -> Calibration:
    """The map of P(purchase in (origin, end]) as the model predicts it from the history up to ``origin``
    (refitted on that history: nothing after ``origin`` is seen) to who bought in that window.

    ``days``: customer_id, purchase_date, amount, through ``end`` at least. The identity, with its reason,
    when the history before ``origin`` is shorter than ``min_history_days`` or the fit is not finite.
    """
    when = pd.to_datetime(days["purchase_date"])
    known = days[when <= pd.Timestamp(origin)]
    if known.empty:
        return identity(f"no purchase on or before the calibration origin {origin}")
    history = (pd.Timestamp(origin) - when[when <= pd.Timestamp(origin)].min()).days
    if history < min_history_days:
        return identity(
            f"{history} days of history before the calibration origin {origin}, fewer than {min_history_days}"
        )
    summary = customer_summary(known, origin)
    if len(summary) < min_customers:
        return identity(f"{len(summary)} customers before the calibration origin {origin}, fewer than {min_customers}")
    params = fit(summary)
    if not params.is_finite():
        return identity(f"the refit as of {origin} gave non-finite parameters")
    x, t_x, T = (summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T"))
    predicted = 1 - p_no_purchase(params, x, t_x, T, (end - origin).days)
    later = days.loc[(when > pd.Timestamp(origin)) & (when <= pd.Timestamp(end)), "customer_id"]
    bought = summary["customer_id"].isin(set(later)).to_numpy()
    reason = f"BG/NBD refitted as of {origin} on {len(summary)} customers; purchases in ({origin}, {end}]"
    return fit_isotonic(predicted, bought, min_customers, reason)
