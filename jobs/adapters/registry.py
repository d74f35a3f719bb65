"""The MLflow model registry: the champion alias, registering a retrained model, loading a version.

A registered version is the whole Spark pipeline (assembler -> standard scaler -> clustering),
logged with the quintile cut points of its training snapshot as model metadata, so a version
scores and is scored the same way whenever it is loaded. Version tags record the training date
and k for quick look-ups.

A retrain is several registry calls; each is written so that a crash between two of them leaves
a state the next attempt of the same date finds and completes:

1. ``register`` creates the version *with* its tags (training date, k, DAG, run) in one call,
   so no version is ever untagged;
2. ``record_decision`` tags the version with the promotion decision;
3. ``move_alias`` applies the recorded decision (idempotent).

``version_for_date`` finds what an earlier attempt of a date registered; ``decision`` reads what
it decided (None: not evaluated yet).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame

from jobs import storage
from jobs.adapters import tracking
from jobs.adapters.faults import fault_point
from jobs.config import Settings
from jobs.core.promotion import Promotion
from jobs.definitions import (
    DAG_TAG,
    FAULT_ALIAS_MOVED,
    FAULT_DECISION_RECORDED,
    FAULT_MODEL_LOGGED,
    K_TAG,
    PROMOTION_TAG,
    RFM_MEASURES,
    TRAINED_ON_TAG,
)
from jobs.storage import Location

PREDICTION = "prediction"  # MLflow's signature inference expects Spark ML's default name
MODEL_ARTIFACT = "model"  # the run artifact folder of the pipeline model
SPARK_MODEL_DATA = "sparkml"  # its Spark ML save, where mlflow.spark puts it


def is_missing(error: MlflowException) -> bool:
    """The registry answered "no such model" or "no such alias" (MLflow 3.17.2: the SQL store raises
    RESOURCE_DOES_NOT_EXIST for an unknown model and INVALID_PARAMETER_VALUE "... alias X not found."
    for an unknown alias; the REST store passes both codes through)."""
    if error.error_code == "RESOURCE_DOES_NOT_EXIST":
        return True
    return error.error_code == "INVALID_PARAMETER_VALUE" and "alias" in error.message and "not found" in error.message


def champion(settings: Settings) -> ModelVersion | None:
    """The version behind the alias, or None when there is none (yet).

    Only "not found" means no champion: any other registry error (the tracking server down, a
    locked database) propagates, so the task fails and is retried instead of retraining blind.
    """
    try:
        return tracking.client(settings).get_model_version_by_alias(
            settings.model.registered_name, settings.model.alias
        )
    except MlflowException as error:
        if is_missing(error):
            return None
        raise


def trained_versions(settings: Settings) -> list[ModelVersion]:
    """Every version that carries its training date, oldest first (versions registered without
    the tags by older code are ignored rather than failing every later night)."""
    versions = tracking.client(settings).search_model_versions(f"name = '{settings.model.registered_name}'")
    return sorted((v for v in versions if TRAINED_ON_TAG in v.tags), key=lambda v: int(v.version))


def newest_version(settings: Settings) -> ModelVersion | None:
    """The most recently registered version (promoted or not), or None."""
    return next(reversed(trained_versions(settings)), None)


def version_for_date(settings: Settings, run_date: date, dag_id: str) -> ModelVersion | None:
    """The newest version trained on ``run_date`` by ``dag_id`` (an earlier attempt of the date), or None."""
    found = [
        v for v in trained_versions(settings) if trained_on(v) == run_date and v.tags.get(DAG_TAG, dag_id) == dag_id
    ]
    return found[-1] if found else None


def version(settings: Settings, number: str) -> ModelVersion:
    return tracking.client(settings).get_model_version(settings.model.registered_name, number)


def trained_on(version: ModelVersion) -> date:
    return date.fromisoformat(version.tags[TRAINED_ON_TAG])


def decision(version: ModelVersion) -> Promotion | None:
    """The promotion decision recorded on a version, or None when it was never evaluated."""
    text = version.tags.get(PROMOTION_TAG)
    return Promotion.from_json(text) if text else None


def register(
    model: PipelineModel, features: DataFrame, settings: Settings, metadata: dict[str, Any], tags: dict[str, str]
) -> ModelVersion:
    """Log ``model`` to the active run with its signature and metadata, and register it with its
    training date, k and ``tags`` set in the same registry call."""
    from mlflow.models import infer_signature

    inputs = features.select(*RFM_MEASURES).limit(5)
    signature = infer_signature(inputs.toPandas(), model.transform(inputs).select(PREDICTION).toPandas())
    with model_folders(settings) as (shared, folder):
        save_spark_flavour(model, shared / MODEL_ARTIFACT, folder / MODEL_ARTIFACT, signature, metadata)
        mlflow.log_artifacts(str(folder / MODEL_ARTIFACT), MODEL_ARTIFACT)
    fault_point(FAULT_MODEL_LOGGED)
    version_tags = {**tags, TRAINED_ON_TAG: metadata["trained_on"], K_TAG: str(metadata["k"])}
    run_id = mlflow.active_run().info.run_id
    registered = mlflow.register_model(
        f"runs:/{run_id}/{MODEL_ARTIFACT}", settings.model.registered_name, tags=version_tags
    )
    tracking.describe_version(
        settings,
        settings.model.registered_name,
        str(registered.version),
        run_id,
        f"Spark ML clustering of customers on log R, F, M (k={metadata['k']} for this version)",
        metadata["trained_on"],
    )
    return registered


@contextmanager
def model_folders(settings: Settings) -> Iterator[tuple[Location, Path]]:
    """(a folder the Spark driver reads and writes, a local folder MLflow logs from and downloads
    to): one folder under the data dir when it is local, else a bucket prefix and a temporary
    local folder (the driver may run on another host; ``storage.scratch``)."""
    with storage.scratch(settings.path("data_dir"), "model-") as shared:
        if not storage.is_remote(shared):
            yield shared, Path(shared)
            return
        with tempfile.TemporaryDirectory(prefix="rfm-model-") as local:
            yield shared, Path(local)


def save_spark_flavour(
    model: PipelineModel, shared: Location, folder: Path, signature: Any, metadata: dict[str, Any]
) -> None:
    """``mlflow.spark.save_model``'s layout in ``folder`` (``sparkml/`` and an MLmodel with the spark
    and pyfunc flavours, so ``mlflow.spark.load_model`` reads it), written by Spark ML itself into
    ``shared`` (then copied to ``folder`` when that is on a bucket): mlflow 3.17.2's own save copies
    through the driver's JVM, which a Spark Connect client does not have."""
    import pyspark
    from mlflow.models import Model

    model.write().overwrite().save(storage.spark_uri(shared / SPARK_MODEL_DATA))
    if storage.is_remote(shared):
        storage.download_folder(shared / SPARK_MODEL_DATA, folder / SPARK_MODEL_DATA)
    description = Model(signature=signature, metadata=metadata)
    description.add_flavor(
        "spark",
        pyspark_version=pyspark.__version__,
        model_data=SPARK_MODEL_DATA,
        model_class="pyspark.ml.pipeline.PipelineModel",
    )
    mlflow.pyfunc.add_to_model(description, loader_module="mlflow.spark", data=SPARK_MODEL_DATA)
    description.save(str(folder / "MLmodel"))
    (folder / "requirements.txt").write_text(f"pyspark=={pyspark.__version__}\n")


def version_uri(settings: Settings, version: str) -> str:
    return f"models:/{settings.model.registered_name}/{version}"


def champion_uri(settings: Settings) -> str:
    return f"models:/{settings.model.registered_name}@{settings.model.alias}"


def load(settings: Settings, version: str) -> PipelineModel:
    """The Spark pipeline model of a registered version (read whole by Spark ML before the staged
    copy goes; works over Spark Connect as well)."""
    tracking.client(settings)
    with model_folders(settings) as (shared, folder):
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=version_uri(settings, version), dst_path=str(folder))
        )
        if storage.is_remote(shared):
            storage.upload_folder(local / SPARK_MODEL_DATA, shared / SPARK_MODEL_DATA)
            return PipelineModel.load(storage.spark_uri(shared / SPARK_MODEL_DATA))
        return PipelineModel.load(str(local / SPARK_MODEL_DATA))


def metadata(settings: Settings, version: str) -> dict[str, Any]:
    """The metadata a version was logged with (quintile edges, k, training date)."""
    tracking.client(settings)
    return mlflow.models.get_model_info(version_uri(settings, version)).metadata or {}


def record_decision(settings: Settings, promotion: Promotion) -> None:
    """Record the decision on the new version (before the alias moves, so a retry re-applies it)."""
    tracking.client(settings).set_model_version_tag(
        settings.model.registered_name, promotion.new_version, PROMOTION_TAG, json.dumps(promotion.as_dict())
    )


def move_alias(settings: Settings, version: str) -> None:
    """Point the alias at ``version`` (idempotent)."""
    tracking.client(settings).set_registered_model_alias(settings.model.registered_name, settings.model.alias, version)


def apply_promotion(settings: Settings, promotion: Promotion) -> None:
    """Record the decision on the new version, then move the alias when it says so."""
    record_decision(settings, promotion)
    fault_point(FAULT_DECISION_RECORDED)
    if promotion.promoted:
        move_alias(settings, promotion.new_version)
    fault_point(FAULT_ALIAS_MOVED)
