"""Step 5 — predicted customer value: P(alive), P(purchase) and expected purchases in 90 days, 12-month CLV.

Extract: the customer state through the run date (``silver/customer_state``, which the night's
ingest merged; rebuilt from bronze up to the run date when the state has moved past it) and the
run date's gold segments, at pinned versions. Nothing scans the history on a normal night.
Transform: the BG/NBD + Gamma-Gamma summary (``jobs.core.rfm.value_summary``: library convention,
repeat purchase *days*; ``jobs.core.clv.customer_summary`` is its reference); on a retrain night of the clustering (or while ``rfm-clv`` has no champion)
MAP fits with pymc-marketing, registered as a new ``rfm-clv`` version that takes the champion alias;
every night the champion's parameters score every customer in closed form (numpy/scipy).
On a fit night the version also holds the calibration map of P(purchase) (``jobs.core.calibration``:
the model refitted as of the night - 90 days, from bronze's purchase days, against who bought since).
Load: the ``CLV_COLUMNS`` (raw and calibrated P(purchase), expected purchases and spend, ``clv_12m`` and
its P10/P90) and the ``at_risk_value`` flag into the run date's slice of gold/customer_segments;
per-segment means into gold/segment_summary; per-label distributions into the night's MLflow run.
Every night, the forecast of the snapshot 90 nights earlier scored against what its customers did
since (``jobs.core.scorecard``, bronze's lines of those 90 days) into gold/forecast_scorecard and the run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Param
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import clv_registry, lake, registry, tracking
from jobs.adapters.audit import write_audit
from jobs.adapters.customer_state import net_purchase_days_between, pinned, purchase_days, state_of
from jobs.adapters.publish import publish, published_versions
from jobs.adapters.spark import from_pandas, get_spark
from jobs.adapters.webhook import report_warnings
from jobs.config import Clv, Settings, load_settings
from jobs.core.calibration import Calibration, calibration_of
from jobs.core.clv import ClvParams, at_risk_value, expected_spend, fit_params, score, value_quantiles
from jobs.core.quality import bound_crossed
from jobs.core.rfm import value_summary
from jobs.core.scorecard import FORECAST_COLUMNS, actual_in_window, overall_bias, scorecard
from jobs.definitions import (
    AT_RISK_VALUE,
    CLV_CALIBRATION_PARAM,
    CLV_CALIBRATION_TAG,
    CLV_COLUMNS,
    CLV_HORIZON_DAYS,
    CLV_INTERVAL,
    CLV_MODEL_VERSION_PARAM,
    CLV_PARAM_PREFIX,
    CLV_TOTAL_METRIC,
    LABEL_SCHEMES,
    NIGHT_TYPE_TAG,
    SCORECARD_BIAS_TAG,
    SCORECARD_COLUMNS,
    SCORECARD_TAG,
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


def customer_scores(
    params: ClvParams, calibration: Calibration, summary: pd.DataFrame, scoring: dict[str, Any], conf: Clv
) -> pd.DataFrame:
    """Every ``CLV_COLUMNS`` score of the customers of ``summary``: the closed forms, P(purchase) through
    the calibration map, expected spend in the horizon, the Monte Carlo interval of the CLV."""
    scores = score(params, summary, **scoring)
    x, m_x = summary["frequency"].to_numpy(dtype=float), summary["monetary_value"].to_numpy(dtype=float)
    bounds = value_quantiles(
        params,
        summary,
        tuple(CLV_INTERVAL.values()),
        scoring["months"],
        scoring["monthly_discount_rate"],
        scoring["days_per_month"],
        conf.interval_draws,
        conf.interval_seed,
    )
    return scores.assign(
        p_purchase_calibrated=calibration.apply(scores["p_purchase"]),
        expected_spend=scores["expected_purchases"] * expected_spend(params, x, m_x),
        **{name: bounds[:, i] for i, name in enumerate(CLV_INTERVAL)},
    )


def value_columns(segments: pd.DataFrame, scores: pd.DataFrame, conf: Clv) -> pd.DataFrame:
    """customer_id and the gold CLV columns for every customer of ``segments`` (customer_id, monetary,
    recency_days). A customer without net spend (every purchase cancelled: monetary 0) is not a buyer:
    CLV 0 and its interval [0, 0]."""
    merged = segments[["customer_id", "monetary", "recency_days"]].merge(scores, on="customer_id", how="left")
    merged.loc[merged["monetary"] <= 0, ["clv", *CLV_INTERVAL]] = 0.0
    out = merged[["customer_id"]].assign(**{column: merged[score] for score, column in CLV_COLUMNS.items()})
    out[AT_RISK_VALUE] = at_risk_value(
        merged["monetary"],
        merged["p_purchase_calibrated"],
        merged["recency_days"],
        conf.at_risk_min_monetary_quantile,
        conf.at_risk_max_p_purchase,
        conf.at_risk_min_recency_days,
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


def extract(
    spark: SparkSession, settings: Settings, run_date: date
) -> tuple[DataFrame, DataFrame, pd.DataFrame, dict[str, int]]:
    """The customer state through the run date, the run date's gold segments and the forecast of the
    snapshot ``CLV_HORIZON_DAYS`` earlier (``FORECAST_COLUMNS``; empty without one), at pinned versions."""
    state, versions = state_of(spark, settings, run_date)
    segments, versions["gold_customer_segments"] = pinned(spark, settings, "gold_customer_segments")
    gold = segments.filter(F.col("snapshot_date") == F.lit(run_date).cast("date")).drop(*GOLD_CLV_COLUMNS)
    if gold.isEmpty():
        raise LakeStateError(f"no gold segments for {run_date}: run the label step first")
    return state, gold, forecast_of(segments, run_date - timedelta(days=CLV_HORIZON_DAYS)), versions


def forecast_of(segments: DataFrame, day: date) -> pd.DataFrame:
    """``FORECAST_COLUMNS`` of the customers ``day``'s snapshot scored (calibrated P(purchase) where it has
    it, else the raw one; expected spend null in a snapshot from before that column); empty when none."""
    columns = set(segments.columns)
    if CLV_COLUMNS["expected_purchases"] not in columns:  # no night scored yet (the first night of a lake)
        return pd.DataFrame(columns=FORECAST_COLUMNS)

    def column(name: str) -> Any:
        return F.col(CLV_COLUMNS[name]) if CLV_COLUMNS[name] in columns else F.lit(None).cast("double")

    return (
        segments.filter(F.col("snapshot_date") == F.lit(day).cast("date"))
        .filter(F.col(CLV_COLUMNS["expected_purchases"]).isNotNull())
        .select(
            "customer_id",
            *LABEL_SCHEMES.values(),
            F.coalesce(column("p_purchase_calibrated"), column("p_purchase")).alias("p_purchase"),
            F.col(CLV_COLUMNS["expected_purchases"]).alias("expected_purchases"),
            column("expected_spend").alias("expected_spend"),
        )
        .toPandas()[FORECAST_COLUMNS]
    )


def night_run(gold: DataFrame, settings: Settings) -> tuple[str, str | None]:
    """The night's MLflow run (recorded with the clusters) and its night type (retrain, score, rerun)."""
    run_ids = [row[0] for row in gold.select("mlflow_run_id").distinct().collect()]
    if len(run_ids) != 1:
        raise LakeStateError(f"expected the gold rows of one run, found runs {run_ids}")
    run = tracking.client(settings).get_run(run_ids[0])
    return run_ids[0], run.data.tags.get(NIGHT_TYPE_TAG)


def calibration_tonight(bronze: DataFrame, settings: Settings, run_date: date) -> Calibration:
    """The calibration map of a fit night: the model refitted as of the night - ``CLV_HORIZON_DAYS`` on
    bronze's purchase days (the nightly summary's: gross purchase days) up to then, against who bought
    in the days since (a scan of bronze, on fit nights only)."""
    origin = run_date - timedelta(days=CLV_HORIZON_DAYS)
    conf = settings.clv
    return calibration_of(
        purchase_days(bronze, settings, run_date),
        origin,
        run_date,
        conf.calibration_min_history_days,
        conf.calibration_min_customers,
    )


def fit_and_register(
    settings: Settings, summary: pd.DataFrame, calibration: Calibration, run_id: str, run_date: date
) -> tuple[str, ClvParams]:
    """Fit tonight's parameters, log them to the night's run and register them (with the calibration
    map) as the new champion."""
    started = time.perf_counter()
    params = fit_params(summary)
    if not params.is_finite():
        raise LakeStateError(f"{run_date}: the CLV fit gave non-finite parameters {params}")
    seconds = time.perf_counter() - started
    repeaters = int((summary["frequency"] > 0).sum())
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({**logged_params(params), CLV_CALIBRATION_PARAM: calibration.method})
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
        version = clv_registry.register(settings, params, calibration, summary.head(5), metadata)
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


def scorecard_frame(spark: SparkSession, table: pd.DataFrame) -> DataFrame:
    """The scorecard as the gold table holds it."""
    types = {"snapshot_date": "date", "forecast_date": "date", "label_scheme": "string", "segment": "string"}
    types["customers"] = "bigint"
    schema = ", ".join(f"{column} {types.get(column, 'double')}" for column in SCORECARD_COLUMNS)
    return from_pandas(spark, table[SCORECARD_COLUMNS], schema)


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
    spark: SparkSession, settings: Settings, run_date: date, scored: DataFrame, means: DataFrame, card: DataFrame
) -> dict[str, int]:
    """Replace the run date's slices of gold/customer_segments, gold/segment_summary (means joined on) and
    gold/forecast_scorecard."""
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
        "gold_forecast_scorecard": lake.replace_slice(
            card, settings.table_path("gold_forecast_scorecard"), predicate, "snapshot_date"
        ),
    }


def bias_warning(bias: float | None, forecast_date: date, bound: float) -> list[str]:
    """The warning of a scorecard whose overall bias is beyond ``±bound`` (no scorecard: none)."""
    if bias is None:
        return []
    return bound_crossed(
        f"the forecast of {forecast_date}: mean purchase days a customer, predicted - actual,", bias, bound
    )


def log_scorecard(
    client: MlflowClient, run_id: str, table: pd.DataFrame, forecast_date: date, bias: float | None, exceeded: bool
) -> None:
    """The scorecard on the night's run: the overall row as metrics, the table as an artifact, a tag
    saying whether it was scored (or why not) and whether the overall ``bias`` crossed its bound."""
    if bias is None:
        client.set_tag(run_id, SCORECARD_TAG, f"no forecast to score: no snapshot of {forecast_date} with predictions")
    else:
        client.set_tag(run_id, SCORECARD_TAG, f"the forecast of {forecast_date} scored")
        overall = table.iloc[0]
        for name in ("customers", "bias", "mae", "mean_predicted_p", "share_bought", "predicted_spend", "actual_spend"):
            if pd.notna(overall[name]):
                client.log_metric(run_id, f"scorecard_{name}", float(overall[name]))
        client.log_metric(run_id, "scorecard_bias_exceeded", float(exceeded))
        client.log_dict(
            run_id,
            table.astype({"snapshot_date": str, "forecast_date": str}).to_dict("records"),
            "clv/forecast_scorecard.json",
        )
    client.set_tag(run_id, SCORECARD_BIAS_TAG, str(exceeded).lower())


def clv_day(run_date: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Fit (retrain nights) and score the predicted value of every customer of ``run_date``."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    label_published = (published_versions(settings.table_path("gold_published")) or {}).get(run_date, {})
    if not label_published:  # a failed label gate or a crash before its publish: nothing to add value to
        raise LakeStateError(f"{run_date}: the label step has not published this snapshot: run label first")
    state, gold, forecast, versions = extract(spark, settings, run_date)
    bronze, bronze_version = pinned(spark, settings, "bronze_transactions")  # calibration and scorecard lines
    versions.setdefault("bronze_transactions", bronze_version)
    run_id, night_type = night_run(gold, settings)
    summary = value_summary(state, run_date).toPandas().sort_values("customer_id", ignore_index=True)
    champion = clv_registry.champion(settings)
    tonight = clv_registry.trained_on(settings, run_date.isoformat())
    retrained = registry.version_for_date(settings, run_date, settings.dag.dag_id) is not None
    plan = plan_clv(
        night_type, str(champion.version) if champion else None, str(tonight.version) if tonight else None, retrained
    )
    if plan.fit:
        calibration = calibration_tonight(bronze, settings, run_date)
        version, params = fit_and_register(settings, summary, calibration, run_id, run_date)
    else:
        version, (params, calibration) = plan.version, clv_registry.params_of(settings, plan.version)
        if tonight is not None and (champion is None or int(tonight.version) > int(champion.version)):
            clv_registry.move_alias(settings, version)  # an earlier attempt registered it and died before the alias
    scores = customer_scores(params, calibration, summary, clv_registry.scoring_config(settings), settings.clv)
    segments = gold.select("customer_id", F.col("monetary").cast("double"), "recency_days", "cluster_label").toPandas()
    values = value_columns(segments, scores, settings.clv)
    if values[CLV_COLUMNS["clv"]].isna().any():
        missing = values.loc[values[CLV_COLUMNS["clv"]].isna(), "customer_id"].head(5).tolist()
        raise LakeStateError(f"{run_date}: gold customers without purchases in the customer state, e.g. {missing}")
    forecast_date = run_date - timedelta(days=CLV_HORIZON_DAYS)
    actual = actual_in_window(
        net_purchase_days_between(bronze, settings, forecast_date, run_date),
        forecast_date,
        run_date,
    )
    card = scorecard(forecast, actual, forecast_date, run_date)
    scored, means = gold_frames(spark, gold, values)
    written = write_gold(spark, settings, run_date, scored, means, scorecard_frame(spark, card))
    read_versions = dict(versions)
    versions.update(written)
    versions["gold_published"] = publish(spark, settings, run_date, {**label_published, **written})  # last
    by_label = distribution_by_label(values.merge(segments[["customer_id", "cluster_label"]], on="customer_id"))
    client = tracking.client(settings)
    log_night_params(client, run_id, version, params)
    client.set_tag(run_id, CLV_CALIBRATION_TAG, f"{calibration.method} (version {version}): {calibration.reason}")
    client.log_dict(
        run_id,
        {
            "plan": plan.reason,
            "version": version,
            "params": params.as_dict(),
            "calibration": calibration.as_dict(),
            "by_cluster_label": by_label,
        },
        "clv/customer_value.json",
    )
    bias = overall_bias(card)
    warnings = bias_warning(bias, forecast_date, settings.clv.scorecard_max_abs_bias)
    log_scorecard(client, run_id, card, forecast_date, bias, bool(warnings))
    metrics = {
        "clv_p_alive_min": float(values["p_alive"].min()),
        "clv_p_purchase_90d_median": float(values["p_purchase_90d"].median()),
        "clv_p_purchase_90d_calibrated_median": float(values[CLV_COLUMNS["p_purchase_calibrated"]].median()),
        CLV_TOTAL_METRIC: float(values["clv_12m"].sum()),
        "at_risk_value_customers": float(values[AT_RISK_VALUE].sum()),
    }
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)
    write_audit(spark, settings, run_date, "clv", len(values), {}, versions)
    report_warnings(settings, run_id, run_date, "clv", warnings)
    return {
        "run_date": run_date.isoformat(),
        "customers": len(values),
        "clv_model_version": version,
        "plan": plan.reason,
        "fitted": plan.fit,
        "params": params.as_dict(),
        "calibration": calibration.method,
        "scorecard_rows": len(card),
        "forecast_bias": bias,
        "forecast_bias_exceeded": bool(warnings),
        **metrics,
        **versions,
        "read_versions": read_versions,
    }
