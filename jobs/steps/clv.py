"""Step 5 — predicted customer value: P(alive), P(purchase) and expected purchases in 90 days, 12-month CLV.

Extract: the customer state through the run date (``silver/customer_state``, which the night's
ingest merged; rebuilt from bronze up to the run date when the state has moved past it) and the
run date's gold segments, at pinned versions. Nothing scans the history on a normal night.
Transform: the BG/NBD + Gamma-Gamma summary (``jobs.core.rfm.value_summary``: library convention,
repeat purchase *days*; ``jobs.core.clv.customer_summary`` is its reference); on a retrain night of the clustering (or while ``rfm-clv`` has no champion)
MAP fits with pymc-marketing, registered as a new ``rfm-clv`` version that takes the champion alias;
every night the champion's parameters score every customer in closed form (numpy/scipy).
Load: ``p_alive``, ``p_purchase_90d``, ``expected_purchases_90d``, ``clv_12m`` and the
``at_risk_value`` flag into the run date's slice of gold/customer_segments; per-segment means into
gold/segment_summary; per-label distributions into the night's MLflow run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Param
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import clv_registry, lake, registry, tracking
from jobs.adapters.audit import write_audit
from jobs.adapters.customer_state import pinned, state_of
from jobs.adapters.publish import publish, published_versions
from jobs.adapters.spark import from_pandas, get_spark
from jobs.config import Settings, load_settings
from jobs.core.clv import ClvParams, at_risk_value, fit_params, score
from jobs.core.rfm import value_summary
from jobs.definitions import (
    AT_RISK_VALUE,
    CLV_COLUMNS,
    CLV_MODEL_VERSION_PARAM,
    CLV_PARAM_PREFIX,
    CLV_TOTAL_METRIC,
    LABEL_SCHEMES,
    NIGHT_TYPE_TAG,
)
from jobs.errors import LakeStateError

GOLD_CLV_COLUMNS = [*CLV_COLUMNS.values(), AT_RISK_VALUE]
SUMMARY_MEANS = {f"mean_{column}": column for column in CLV_COLUMNS.values()}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClvPlan:
    """Fit a new ``rfm-clv`` version tonight, or score with an existing one (and why)."""

    fit: bool
    version: str | None
    reason: str


def plan_clv(
    night_type: str | None, champion: str | None, trained_tonight: str | None, clustering_retrained: bool = False
) -> ClvPlan:
    """A re-run reuses the version trained on its date; a date the clustering retrained on (or no
    champion) fits; other nights score with the champion.

    ``clustering_retrained``: a clustering version was trained on this date. A retry of the
    cluster step after its retrain completed is a ``rerun`` night, yet the date is still a retrain
    date (found by fault injection at ``after:cluster``)."""
    if trained_tonight is not None:
        return ClvPlan(False, trained_tonight, f"version {trained_tonight} was trained on this date: reused")
    if champion is None:
        return ClvPlan(True, None, "no rfm-clv champion yet: fit")
    if night_type in ("retrain", "resume") or clustering_retrained:  # resume: the retry of a begun retrain
        return ClvPlan(True, None, f"the clustering retrained on this date ({night_type} night): refit")
    return ClvPlan(False, champion, f"scored with the champion, version {champion}")


def value_columns(
    segments: pd.DataFrame, scores: pd.DataFrame, max_p_purchase: float, min_recency_days: int
) -> pd.DataFrame:
    """customer_id and the gold CLV columns for every customer of ``segments`` (customer_id, monetary,
    recency_days). A customer without net spend (every purchase cancelled: monetary 0) is not a buyer:
    CLV 0."""
    merged = segments[["customer_id", "monetary", "recency_days"]].merge(scores, on="customer_id", how="left")
    merged.loc[merged["monetary"] <= 0, "clv"] = 0.0
    out = merged[["customer_id"]].assign(**{column: merged[score] for score, column in CLV_COLUMNS.items()})
    out[AT_RISK_VALUE] = at_risk_value(
        merged["monetary"], merged["p_purchase"], merged["recency_days"], max_p_purchase, min_recency_days
    )
    return out


def distribution_by_label(values: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """Per cluster label: quartiles, deciles' ends and mean of P(alive), P(purchase), CLV; at-risk-value count."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, group in values.groupby("cluster_label"):
        out[str(label)] = {
            column: {
                "mean": float(group[column].mean()),
                **{f"p{q}": float(group[column].quantile(q / 100)) for q in (10, 25, 50, 75, 90)},
            }
            for column in CLV_COLUMNS.values()
        }
        out[str(label)]["at_risk_value"] = {"customers": float(group[AT_RISK_VALUE].sum())}
    return out


def extract(spark: SparkSession, settings: Settings, run_date: date) -> tuple[DataFrame, DataFrame, dict[str, int]]:
    """The customer state through the run date and the run date's gold segments, at pinned versions."""
    state, versions = state_of(spark, settings, run_date)
    segments, versions["gold_customer_segments"] = pinned(spark, settings, "gold_customer_segments")
    gold = segments.filter(F.col("snapshot_date") == F.lit(run_date).cast("date")).drop(*GOLD_CLV_COLUMNS)
    if gold.isEmpty():
        raise LakeStateError(f"no gold segments for {run_date}: run the label step first")
    return state, gold, versions


def night_run(gold: DataFrame, settings: Settings) -> tuple[str, str | None]:
    """The night's MLflow run (recorded with the clusters) and its night type (retrain, score, rerun)."""
    run_ids = [row[0] for row in gold.select("mlflow_run_id").distinct().collect()]
    if len(run_ids) != 1:
        raise LakeStateError(f"expected the gold rows of one run, found runs {run_ids}")
    run = tracking.client(settings).get_run(run_ids[0])
    return run_ids[0], run.data.tags.get(NIGHT_TYPE_TAG)


def fit_and_register(settings: Settings, summary: pd.DataFrame, run_id: str, run_date: date) -> tuple[str, ClvParams]:
    """Fit tonight's parameters, log them to the night's run and register them as the new champion."""
    started = time.perf_counter()
    params = fit_params(summary)
    if not params.is_finite():
        raise LakeStateError(f"{run_date}: the CLV fit gave non-finite parameters {params}")
    seconds = time.perf_counter() - started
    repeaters = int((summary["frequency"] > 0).sum())
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params(logged_params(params))
        mlflow.log_metrics(
            {"clv_fit_seconds": seconds, "clv_fit_customers": len(summary), "clv_fit_repeat_customers": repeaters}
        )
        metadata = {
            "trained_on": run_date.isoformat(),
            "customers": len(summary),
            "repeat_customers": repeaters,
            "fit": "pymc-marketing MAP, default priors",
            "frequency": "repeat purchase days",
        }
        version = clv_registry.register(settings, params, summary.head(5), metadata)
    return str(version.version), params


def logged_params(params: ClvParams) -> dict[str, str]:
    """The CLV parameters as the night's MLflow run holds them."""
    return {f"{CLV_PARAM_PREFIX}{name}": str(value) for name, value in params.as_dict().items()}


def log_night_params(client: MlflowClient, run_id: str, version: str, params: ClvParams) -> None:
    """The version the night scored with and its parameters, on the night's run whatever its type,
    so analysts compare every night's CLV in MLflow. Params already there (a retrain's fit, an
    earlier attempt) are kept: MLflow params cannot change."""
    already = client.get_run(run_id).data.params
    wanted = {CLV_MODEL_VERSION_PARAM: version, **logged_params(params)}
    differing = sorted(name for name, value in wanted.items() if already.get(name, value) != value)
    if differing:
        log.warning("run %s already holds other values of %s: kept (see clv/customer_value.json)", run_id, differing)
    missing = [Param(name, value) for name, value in wanted.items() if name not in already]
    if missing:
        client.log_batch(run_id, params=missing)


def gold_frames(spark: SparkSession, gold: DataFrame, values: pd.DataFrame) -> tuple[DataFrame, DataFrame]:
    """Tonight's segments with the CLV columns, and the per-segment means of those columns."""
    schema = (
        "customer_id string, " + ", ".join(f"{c} double" for c in CLV_COLUMNS.values()) + f", {AT_RISK_VALUE} boolean"
    )
    scored = gold.join(from_pandas(spark, values, schema), "customer_id", "left")
    per_scheme = [
        scored.groupBy(F.col(column).alias("segment"))
        .agg(
            *[F.avg(c).alias(name) for name, c in SUMMARY_MEANS.items()],
            F.sum(F.col(AT_RISK_VALUE).cast("int")).alias("at_risk_value_customers"),
        )
        .withColumn("label_scheme", F.lit(scheme))
        for scheme, column in LABEL_SCHEMES.items()
    ]
    return scored, per_scheme[0].unionByName(per_scheme[1])


def write_gold(
    spark: SparkSession, settings: Settings, run_date: date, scored: DataFrame, means: DataFrame
) -> dict[str, int]:
    """Replace the run date's slices of gold/customer_segments and gold/segment_summary (means joined on)."""
    predicate = f"snapshot_date = {lake.date_literal(run_date)}"
    summary_path = settings.table_path("gold_segment_summary")
    summary = (
        lake.read(spark, summary_path, lake.current_version(summary_path))
        .filter(F.col("snapshot_date") == F.lit(run_date).cast("date"))
        .drop(*SUMMARY_MEANS, "at_risk_value_customers")
        .join(means, ["label_scheme", "segment"], "left")
    )
    segments_version = lake.replace_slice(
        scored, settings.table_path("gold_customer_segments"), predicate, "snapshot_date"
    )
    return {
        "gold_customer_segments": segments_version,
        "gold_segment_summary": lake.replace_slice(summary, summary_path, predicate, "snapshot_date"),
    }


def clv_day(run_date: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Fit (retrain nights) and score the predicted value of every customer of ``run_date``."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    label_published = (published_versions(settings.table_path("gold_published")) or {}).get(run_date, {})
    if not label_published:  # a failed label gate or a crash before its publish: nothing to add value to
        raise LakeStateError(f"{run_date}: the label step has not published this snapshot: run label first")
    state, gold, versions = extract(spark, settings, run_date)
    run_id, night_type = night_run(gold, settings)
    summary = value_summary(state, run_date).toPandas().sort_values("customer_id", ignore_index=True)
    champion = clv_registry.champion(settings)
    tonight = clv_registry.trained_on(settings, run_date.isoformat())
    retrained = registry.version_for_date(settings, run_date, settings.dag.dag_id) is not None
    plan = plan_clv(
        night_type, str(champion.version) if champion else None, str(tonight.version) if tonight else None, retrained
    )
    if plan.fit:
        version, params = fit_and_register(settings, summary, run_id, run_date)
    else:
        version, params = plan.version, clv_registry.params_of(settings, plan.version)
        if tonight is not None and (champion is None or int(tonight.version) > int(champion.version)):
            clv_registry.move_alias(settings, version)  # an earlier attempt registered it and died before the alias
    scores = score(params, summary, **clv_registry.scoring_config(settings))
    segments = gold.select("customer_id", F.col("monetary").cast("double"), "recency_days", "cluster_label").toPandas()
    values = value_columns(segments, scores, settings.clv.at_risk_max_p_purchase, settings.clv.at_risk_min_recency_days)
    if values[CLV_COLUMNS["clv"]].isna().any():
        missing = values.loc[values[CLV_COLUMNS["clv"]].isna(), "customer_id"].head(5).tolist()
        raise LakeStateError(f"{run_date}: gold customers without purchases in the customer state, e.g. {missing}")
    scored, means = gold_frames(spark, gold, values)
    written = write_gold(spark, settings, run_date, scored, means)
    read_versions = dict(versions)
    versions.update(written)
    versions["gold_published"] = publish(spark, settings, run_date, {**label_published, **written})  # last
    by_label = distribution_by_label(values.merge(segments[["customer_id", "cluster_label"]], on="customer_id"))
    client = tracking.client(settings)
    log_night_params(client, run_id, version, params)
    client.log_dict(
        run_id,
        {"plan": plan.reason, "version": version, "params": params.as_dict(), "by_cluster_label": by_label},
        "clv/customer_value.json",
    )
    metrics = {
        "clv_p_alive_min": float(values["p_alive"].min()),
        "clv_p_purchase_90d_median": float(values["p_purchase_90d"].median()),
        CLV_TOTAL_METRIC: float(values["clv_12m"].sum()),
        "at_risk_value_customers": float(values[AT_RISK_VALUE].sum()),
    }
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    write_audit(spark, settings, run_date, "clv", len(values), {}, versions)
    return {
        "run_date": run_date.isoformat(),
        "customers": len(values),
        "clv_model_version": version,
        "plan": plan.reason,
        "fitted": plan.fit,
        "params": params.as_dict(),
        **metrics,
        **versions,
        "read_versions": read_versions,
    }
