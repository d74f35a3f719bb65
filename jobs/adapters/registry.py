"""The MLflow model registry: the champion alias, registering a retrained model, loading a version.

A registered version is the whole Spark pipeline (assembler -> standard scaler -> clustering),
logged with the quintile cut points of its training snapshot as model metadata, so a version
scores and is scored the same way whenever it is loaded. Version tags record the training date
and k for quick look-ups.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from jobs.adapters import tracking
from jobs.config import Settings
from jobs.definitions import K_TAG, PROMOTION_TAG, RFM_MEASURES, TRAINED_ON_TAG

PREDICTION = "prediction"  # MLflow's signature inference expects Spark ML's default name


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def champion(settings: Settings) -> ModelVersion | None:
    """The version behind the alias, or None when there is none (yet)."""
    try:
        return tracking.client(settings).get_model_version_by_alias(
            settings.model.registered_name, settings.model.alias
        )
    except MlflowException:
        return None


def newest_version(settings: Settings) -> ModelVersion | None:
    """The most recently registered version (promoted or not), or None."""
    versions = tracking.client(settings).search_model_versions(f"name = '{settings.model.registered_name}'")
    return max(versions, key=lambda v: int(v.version), default=None)


def trained_on(version: ModelVersion) -> date:
    return date.fromisoformat(version.tags[TRAINED_ON_TAG])


def register(model: PipelineModel, features: DataFrame, settings: Settings, metadata: dict[str, Any]) -> ModelVersion:
    """Log ``model`` to the active run with its signature and metadata, and register it."""
    import pyspark
    from mlflow.models import infer_signature

    inputs = features.select(*RFM_MEASURES).limit(5)
    signature = infer_signature(inputs.toPandas(), model.transform(inputs).select(PREDICTION).toPandas())
    info = mlflow.spark.log_model(
        model,
        artifact_path="model",  # mlflow 3.17.2's Spark flavour has no `name=` (the other flavours do)
        signature=signature,
        pip_requirements=[f"pyspark=={pyspark.__version__}"],
        registered_model_name=settings.model.registered_name,
        metadata=metadata,
    )
    version = str(info.registered_model_version)
    client = tracking.client(settings)
    client.set_model_version_tag(settings.model.registered_name, version, TRAINED_ON_TAG, metadata["trained_on"])
    client.set_model_version_tag(settings.model.registered_name, version, K_TAG, str(metadata["k"]))
    return client.get_model_version(settings.model.registered_name, version)


def version_uri(settings: Settings, version: str) -> str:
    return f"models:/{settings.model.registered_name}/{version}"


def champion_uri(settings: Settings) -> str:
    return f"models:/{settings.model.registered_name}@{settings.model.alias}"


def load(settings: Settings, version: str) -> PipelineModel:
    """The Spark pipeline model of a registered version."""
    tracking.client(settings)
    return mlflow.spark.load_model(version_uri(settings, version))


def metadata(settings: Settings, version: str) -> dict[str, Any]:
    """The metadata a version was logged with (quintile edges, k, training date)."""
    tracking.client(settings)
    return mlflow.models.get_model_info(version_uri(settings, version)).metadata or {}


def decide_promotion(
    new_version: str,
    new_silhouette: float,
    current: ModelVersion | None,
    champion_silhouette: float | None,
    margin: float,
) -> Promotion:
    """The rule: promote when there is no champion, or the new model is not worse by more than ``margin``."""
    if current is None:
        return Promotion(True, "no champion yet", new_version, None, new_silhouette, None, margin)
    champion_version = str(current.version)
    threshold = champion_silhouette - margin
    promoted = new_silhouette >= threshold
    comparison = ">=" if promoted else "<"
    reason = (
        f"silhouette on tonight's data: new {new_silhouette:.4f} {comparison} champion "
        f"{champion_silhouette:.4f} - margin {margin}"
    )
    return Promotion(promoted, reason, new_version, champion_version, new_silhouette, champion_silhouette, margin)


def apply_promotion(settings: Settings, promotion: Promotion) -> None:
    """Move the alias when the decision says so, and record the decision on the new version."""
    client = tracking.client(settings)
    name = settings.model.registered_name
    if promotion.promoted:
        client.set_registered_model_alias(name, settings.model.alias, promotion.new_version)
    client.set_model_version_tag(name, promotion.new_version, PROMOTION_TAG, json.dumps(promotion.as_dict()))
