"""The second registered model, ``rfm-clv``: BG/NBD + Gamma-Gamma parameters as a small pyfunc.

A version is an ``mlflow.pyfunc`` model whose artifacts are the parameters JSON and the calibration
map of P(purchase) (``jobs.core.calibration``: isotonic thresholds, or the identity and why); its
``predict`` scores a customer summary with the closed forms of ``jobs.core.clv`` (numpy/scipy, no
PyMC). Both are also the version's metadata, so a night reads them without loading the model.
A version is registered with its training date in one call, then takes the alias; a retry of the
night that finds the date's version newer than the champion moves the alias to it (``clv_day``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from jobs.adapters import tracking
from jobs.adapters.faults import fault_point
from jobs.config import Settings
from jobs.core.calibration import Calibration
from jobs.core.clv import ClvParams, score
from jobs.definitions import CLV_HORIZON_DAYS, CLV_MONTHS, FAULT_CLV_ALIAS_MOVED, FAULT_CLV_REGISTERED, TRAINED_ON_TAG


class ClvModel(mlflow.pyfunc.PythonModel):
    """Input: customer_id, frequency, recency, T, monetary_value (``jobs.core.clv.customer_summary``).
    Output per customer: p_alive, p_purchase, expected_purchases (next ``horizon_days``), clv, and
    p_purchase_calibrated (p_purchase through the version's calibration map)."""

    def load_context(self, context: Any) -> None:
        self.params = ClvParams.from_json(Path(context.artifacts["params"]).read_text())
        self.calibration = Calibration.from_dict(json.loads(Path(context.artifacts["calibration"]).read_text()))
        self.settings = context.model_config

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        scores = score(self.params, model_input, **self.settings)
        return scores.assign(p_purchase_calibrated=self.calibration.apply(scores["p_purchase"]))


def scoring_config(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``jobs.core.clv.score`` (horizon and months fixed by the gold column names)."""
    return {
        "horizon_days": CLV_HORIZON_DAYS,
        "months": CLV_MONTHS,
        "monthly_discount_rate": settings.clv.monthly_discount_rate,
        "days_per_month": settings.clv.days_per_month,
    }


def register(
    settings: Settings, params: ClvParams, calibration: Calibration, example: pd.DataFrame, metadata: dict[str, Any]
) -> ModelVersion:
    """Log the parameters and the calibration map as a pyfunc model to the active run and register it
    under ``clv.registered_name``."""
    from mlflow.models import infer_signature

    conf = settings.clv
    model_config = scoring_config(settings)
    with tempfile.TemporaryDirectory() as tmp:
        path, calibration_path = Path(tmp) / "clv_params.json", Path(tmp) / "clv_calibration.json"
        path.write_text(params.to_json())
        calibration_path.write_text(json.dumps(calibration.as_dict()))
        output = score(params, example, **model_config)
        output = output.assign(p_purchase_calibrated=calibration.apply(output["p_purchase"]))
        info = mlflow.pyfunc.log_model(
            name="clv_model",
            python_model=ClvModel(),
            artifacts={"params": str(path), "calibration": str(calibration_path)},
            model_config=model_config,
            signature=infer_signature(example, output),
            pip_requirements=["numpy", "scipy", "pandas"],
            metadata={**metadata, "params": params.as_dict(), "calibration": calibration.as_dict(), **model_config},
        )
    # the version and its training date in one registry call: a crash never leaves it untagged
    version = str(
        mlflow.register_model(
            info.model_uri, conf.registered_name, tags={TRAINED_ON_TAG: metadata["trained_on"]}
        ).version
    )
    tracking.describe_version(
        settings,
        conf.registered_name,
        version,
        mlflow.active_run().info.run_id,
        "Predicted customer value: BG/NBD + Gamma-Gamma parameters as a pyfunc model",
        metadata["trained_on"],
    )
    fault_point(FAULT_CLV_REGISTERED)
    move_alias(settings, version)
    fault_point(FAULT_CLV_ALIAS_MOVED)
    return tracking.client(settings).get_model_version(conf.registered_name, version)


def move_alias(settings: Settings, version: str) -> None:
    """Point the ``clv.alias`` at ``version`` (idempotent)."""
    tracking.client(settings).set_registered_model_alias(settings.clv.registered_name, settings.clv.alias, version)


def champion(settings: Settings) -> ModelVersion | None:
    """The version holding the ``clv.alias``, or None."""
    try:
        return tracking.client(settings).get_model_version_by_alias(settings.clv.registered_name, settings.clv.alias)
    except MlflowException:
        return None


def trained_on(settings: Settings, day: str) -> ModelVersion | None:
    """The newest version trained on ``day`` (a re-run of that night reuses it), or None."""
    try:
        found = tracking.client(settings).search_model_versions(
            f"name = '{settings.clv.registered_name}' and tag.`{TRAINED_ON_TAG}` = '{day}'"
        )
    except MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def params_of(settings: Settings, version: str) -> tuple[ClvParams, Calibration]:
    """The parameters and calibration map a version was registered with (from its metadata: no model
    load); a version registered before calibration maps has the identity, saying so."""
    tracking.client(settings)
    uri = f"models:/{settings.clv.registered_name}/{version}"
    metadata = mlflow.models.get_model_info(uri).metadata
    return ClvParams(**metadata["params"]), Calibration.from_dict(metadata.get("calibration"))
