"""Step 3 — cluster the day's RFM snapshot with Spark ML and track it in MLflow.

Extract: the silver snapshot of the run date at a pinned Delta version.
Transform: log1p(R, F, M) -> standard scaling -> K-Means or Gaussian Mixture. On a retrain
night (no champion yet, or the newest registered version is ``model.retrain_every_days`` old)
every k of the sweep is fitted (``fit_candidate``), logged as an MLflow child run, and one is
chosen by ``choose_candidate``; the chosen pipeline is registered and takes the champion alias
unless it is worse than the champion by more than the margin, or it gives more than
``model.idle_relabel_max_share`` of the customers who bought nothing since the previous snapshot
another label than the champion does tonight without a clearly better silhouette
(``jobs.core.promotion.decide_promotion``; both models' labels carried as the label step carries them).
Other nights score with the champion; a re-run of a date scores with the version recorded for it.
A retry of a retrain night whose earlier attempt registered a version ("resume") reopens that
attempt's MLflow run and completes the version's promotion instead of training again.
Load: per-customer cluster ids with the scoring model version into ``silver/customer_clusters``;
params, metrics, the cluster profile and a PNG into one MLflow run per (DAG, run date).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import GaussianMixture, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake, registry, tracking
from jobs.adapters.faults import fault_point
from jobs.adapters.publish import last_published_before
from jobs.adapters.registry import PREDICTION
from jobs.adapters.spark import get_spark
from jobs.config import Clustering, Settings, load_settings
from jobs.core.features import (
    idle_customers,
    log_feature_profile,
    log_feature_scale,
    log_feature_sql,
    log_feature_transformer,
)
from jobs.core.labels import IdleAgreement, carry_labels, cluster_label_column, idle_agreement
from jobs.core.promotion import Promotion, decide_promotion
from jobs.core.scoring import quintile_edges
from jobs.definitions import (
    CHOSEN_K_TAG,
    CHOSEN_TAG,
    DAG_RUN_TAG,
    DAG_TAG,
    FAULT_RUN_TAGGED,
    FAULT_VERSION_REGISTERED,
    INPUT_VERSION_PARAM,
    K_RULE_TAG,
    MODEL_VERSION_TAG,
    NIGHT_TYPE_TAG,
    NOTE_TAG,
    PLAN_TAG,
    PROMOTED_TAG,
    RFM_MEASURES,
    RUN_DATE_TAG,
    STEP_TAG,
    TRAINED_VERSION_TAG,
)
from jobs.errors import LakeStateError

NightKind = Literal["retrain", "resume", "score", "rerun"]


@dataclass(frozen=True)
class NightPlan:
    """Which model scores the night: a fresh retrain, the champion, or the version recorded for a re-run."""

    kind: NightKind
    version: str | None
    reason: str


@dataclass
class CandidateFit:
    """One k of a retrain: the fitted pipeline and its metrics (same names for every k)."""

    k: int
    model: PipelineModel
    metrics: dict[str, float]


def feature_frame(snapshot: DataFrame, clustering: Clustering) -> DataFrame:
    """The raw RFM features as doubles, range-partitioned and sorted by customer for reproducible fits."""
    raw = snapshot.select("customer_id", *[F.col(name).cast("double").alias(name) for name in RFM_MEASURES])
    return raw.repartitionByRange(clustering.input_partitions, "customer_id").sortWithinPartitions("customer_id")


def build_pipeline(clustering: Clustering, k: int) -> Pipeline:
    """log1p features -> assembler -> scaler -> the configured clustering algorithm with ``k`` clusters."""
    from pyspark.ml.feature import StandardScaler, VectorAssembler

    assembler = VectorAssembler(inputCols=[f"log_{n}" for n in RFM_MEASURES], outputCol="log_features")
    scaler = StandardScaler(inputCol="log_features", outputCol="features", withMean=True, withStd=True)
    if clustering.algorithm == "gmm":
        estimator = GaussianMixture(k=k, seed=clustering.seed, maxIter=clustering.max_iter)
    else:
        estimator = KMeans(k=k, seed=clustering.seed, maxIter=clustering.max_iter)
    return Pipeline(stages=[log_feature_transformer(clustering), assembler, scaler, estimator])


def model_k(model: PipelineModel) -> int:
    return int(model.stages[-1].getK())


def davies_bouldin(scored: DataFrame, total: int, sample_rows: int, seed: int) -> float:
    """Davies–Bouldin index (lower is better) of the scaled features of ``total`` rows, on at most
    ``sample_rows`` of them."""
    from sklearn.metrics import davies_bouldin_score

    rows = scored if total <= sample_rows else scored.sample(fraction=sample_rows / total, seed=seed)
    points = rows.select("features", PREDICTION).toPandas()
    if points[PREDICTION].nunique() < 2:
        return float("nan")
    return float(davies_bouldin_score(np.stack(points["features"].map(lambda v: v.toArray())), points[PREDICTION]))


def quality_metrics(scored: DataFrame, k: int, clustering: Clustering) -> dict[str, float]:
    """Silhouette, Davies–Bouldin, cluster sizes and the smallest cluster's share of customers."""
    sizes = {int(row[PREDICTION]): int(row["count"]) for row in scored.groupBy(PREDICTION).count().collect()}
    customers = sum(sizes.values())
    separated = len(sizes) > 1
    metrics = {
        "silhouette": ClusteringEvaluator(featuresCol="features", predictionCol=PREDICTION).evaluate(scored)
        if separated
        else float("nan"),
        "davies_bouldin": davies_bouldin(scored, customers, clustering.metrics_sample, clustering.seed)
        if separated
        else float("nan"),
        "customers": float(customers),
        "clusters_non_empty": float(len(sizes)),
        "min_cluster_share": min(sizes.get(c, 0) for c in range(k)) / customers,
    }
    metrics.update({f"cluster_size_{c}": float(sizes.get(c, 0)) for c in range(k)})
    return metrics


def gmm_bic(log_likelihood: float, k: int, dimensions: int, rows: int) -> float:
    """Bayesian information criterion of a full-covariance Gaussian mixture (lower is better)."""
    parameters = (k - 1) + k * dimensions + k * dimensions * (dimensions + 1) // 2
    return parameters * float(np.log(rows)) - 2.0 * log_likelihood


def fit_candidate(features: DataFrame, clustering: Clustering, k: int) -> CandidateFit:
    """Fit the pipeline with ``k`` clusters; quality metrics plus the algorithm's own objective."""
    started = time.perf_counter()
    model = build_pipeline(clustering, k).fit(features)
    training_seconds = time.perf_counter() - started
    scored = model.transform(features).cache()
    metrics = {**quality_metrics(scored, k, clustering), "training_seconds": training_seconds}
    scored.unpersist()
    summary = model.stages[-1].summary
    if clustering.algorithm == "gmm":
        metrics["gmm_log_likelihood"] = float(summary.logLikelihood)
        metrics["gmm_bic"] = gmm_bic(metrics["gmm_log_likelihood"], k, len(RFM_MEASURES), int(metrics["customers"]))
    else:
        metrics["kmeans_cost"] = float(summary.trainingCost)
    return CandidateFit(k=k, model=model, metrics=metrics)


def choose_candidate(candidates: list[CandidateFit], clustering: Clustering) -> tuple[CandidateFit, str]:
    """The rule: among fits with k >= ``min_k`` whose smallest cluster holds at least
    ``min_cluster_share`` of the customers, the best silhouette (K-Means) or the lowest BIC
    (Gaussian Mixture); ties go to the smaller k. A fixed k is taken as it is. When no fit is
    eligible, the rule falls back to every fit and says so.
    """
    if clustering.k is not None:
        return candidates[0], f"k fixed at {clustering.k} by configuration"
    eligible = [
        c
        for c in candidates
        if c.k >= clustering.min_k and c.metrics["min_cluster_share"] >= clustering.min_cluster_share
    ]
    condition = f"k >= {clustering.min_k} and smallest cluster >= {clustering.min_cluster_share:.0%} of customers"
    pool, note = (eligible, condition) if eligible else (candidates, f"no fit met {condition}; all fits considered")
    if clustering.algorithm == "gmm":
        chosen = min(pool, key=lambda c: (c.metrics["gmm_bic"], c.k))
        return chosen, f"lowest BIC ({chosen.metrics['gmm_bic']:.1f}) among {note}"
    chosen = min(pool, key=lambda c: (-np.nan_to_num(c.metrics["silhouette"], nan=-2.0), c.k))
    return chosen, f"best silhouette ({chosen.metrics['silhouette']:.4f}) among {note}"


def plan_night(
    run_date: date,
    recorded_version: str | None,
    champion_version: str | None,
    newest_trained_on: date | None,
    retrain_every_days: int,
    began_version: str | None = None,
    force_retrain: bool = False,
) -> NightPlan:
    """Retrain, resume a retrain an earlier attempt began (``began_version``: registered for this
    date), score with the champion, or re-score a date with the version that scored it before.

    ``force_retrain`` makes the night a retrain night; one that already has its retrain (begun or
    completed: a retry of the forced run, or forcing a night that retrained) resumes that version,
    so a date never gets a second version or a second live MLflow run."""
    if force_retrain:
        if began_version is not None:
            return NightPlan(
                "resume",
                began_version,
                f"forced retrain: version {began_version} was already registered for {run_date}",
            )
        return NightPlan("retrain", None, "forced (force_retrain)")
    if recorded_version is not None:
        return NightPlan("rerun", recorded_version, f"{run_date} was scored by version {recorded_version}")
    if began_version is not None:
        return NightPlan(
            "resume", began_version, f"version {began_version} was registered for {run_date} by an earlier attempt"
        )
    if champion_version is None:
        return NightPlan("retrain", None, "no champion yet")
    if newest_trained_on is not None and (run_date - newest_trained_on).days >= retrain_every_days:
        age = (run_date - newest_trained_on).days
        return NightPlan("retrain", None, f"newest model trained on {newest_trained_on}, {age} days ago")
    return NightPlan("score", champion_version, f"champion version {champion_version}")


def cluster_profile(assignments: DataFrame, features: list[str]) -> pd.DataFrame:
    """Customers and mean of each feature per cluster."""
    return (
        assignments.groupBy("cluster")
        .agg(F.count("*").alias("customers"), *[F.avg(F.col(n).cast("double")).alias(f"mean_{n}") for n in features])
        .orderBy("cluster")
        .toPandas()
    )


def plot_clusters(sample: pd.DataFrame, path: Path) -> Path:
    """Recency vs monetary (log scale), coloured by cluster, sized by frequency."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for cluster, points in sample.groupby("cluster"):
        ax.scatter(
            points["recency_days"],
            points["monetary"].astype(float).clip(lower=1),
            s=8 + 4 * points["frequency"].clip(upper=40),
            alpha=0.55,
            label=f"cluster {cluster} ({len(points)})",
        )
    ax.set(xlabel="recency (days)", ylabel="monetary (log scale)", yscale="log", title="Customers in RFM space")
    ax.legend(title="sampled points", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(candidates: list[CandidateFit], chosen_k: int, metric: str, path: Path) -> Path:
    """One metric of the sweep against k, the chosen k marked."""
    plt = _pyplot()
    ks = [c.k for c in candidates]
    values = [c.metrics[metric] for c in candidates]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, values, marker="o")
    ax.axvline(chosen_k, color="grey", linestyle="--", label=f"chosen k = {chosen_k}")
    ax.set(xlabel="k", ylabel=metric, title=f"{metric} by k")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def extract_snapshot(spark: SparkSession, settings: Settings, run_date: date) -> tuple[DataFrame, int]:
    """The run date's RFM snapshot and the silver version it was read at."""
    path = settings.table_path("silver_customer_rfm")
    version = lake.current_version(path)
    if version is None:
        raise LakeStateError(f"no silver RFM table at {path}: run the ingest step first")
    snapshot = lake.read(spark, path, version).filter(F.col("snapshot_date") == F.lit(run_date).cast("date"))
    return snapshot, version


def recorded_model_version(spark: SparkSession, settings: Settings, run_date: date) -> str | None:
    """The model version that scored ``run_date`` before, if any."""
    path = settings.table_path("silver_customer_clusters")
    if not lake.exists(path):
        return None
    clusters = lake.read(spark, path)
    if "model_version" not in clusters.columns:
        return None
    found = clusters.filter(F.col("snapshot_date") == F.lit(run_date).cast("date")).select("model_version").distinct()
    versions = [row["model_version"] for row in found.collect() if row["model_version"] is not None]
    return versions[0] if len(versions) == 1 else None


def plan_for(
    spark: SparkSession, settings: Settings, run_date: date, dag_id: str, force_retrain: bool = False
) -> NightPlan:
    current = registry.champion(settings)
    newest = registry.newest_version(settings)
    began = registry.version_for_date(settings, run_date, dag_id)
    return plan_night(
        run_date,
        recorded_model_version(spark, settings, run_date),
        str(current.version) if current else None,
        registry.trained_on(newest) if newest else None,
        settings.model.retrain_every_days,
        str(began.version) if began else None,
        force_retrain,
    )


def sweep(features: DataFrame, clustering: Clustering, lineage: dict[str, str]) -> list[tuple[CandidateFit, str]]:
    """Fit every candidate k, each logged as a child run of the active run."""
    fitted = []
    for k in clustering.candidate_ks():
        with mlflow.start_run(run_name=f"k={k}", nested=True) as child:
            mlflow.set_tags({**lineage, STEP_TAG: "sweep"})
            mlflow.log_params(
                {"algorithm": clustering.algorithm, "k": k, "seed": clustering.seed, "max_iter": clustering.max_iter}
            )
            candidate = fit_candidate(features, clustering, k)
            mlflow.log_metrics(candidate.metrics)
            fitted.append((candidate, child.info.run_id))
    return fitted


def log_sweep(candidates: list[CandidateFit], chosen: CandidateFit, clustering: Clustering) -> None:
    """The elbow and silhouette plots and the sweep's table under ``sweep/`` of the active run."""
    objective = "gmm_bic" if clustering.algorithm == "gmm" else "kmeans_cost"
    with tempfile.TemporaryDirectory() as tmp:
        plot_sweep(candidates, chosen.k, objective, Path(tmp) / "elbow.png")
        plot_sweep(candidates, chosen.k, "silhouette", Path(tmp) / "silhouette.png")
        pd.DataFrame([{"k": c.k, **c.metrics} for c in candidates]).to_csv(Path(tmp) / "sweep.csv", index=False)
        mlflow.log_artifacts(tmp, artifact_path="sweep")


def silhouette_of(settings: Settings, version: str, features: DataFrame) -> float:
    """A registered version's silhouette on ``features``."""
    model = registry.load(settings, version)
    return quality_metrics(model.transform(features), model_k(model), settings.clustering)["silhouette"]


def carried_labels(
    snapshot: DataFrame,
    features: DataFrame,
    model: PipelineModel,
    same_model: bool,
    previous_profile: pd.DataFrame,
    scale: tuple[np.ndarray, np.ndarray],
    settings: Settings,
) -> DataFrame:
    """customer_id -> the cluster label ``model`` gives tonight, carried from the previous snapshot
    as the label step carries it (``carry_labels``)."""
    assigned = model.transform(features).select("customer_id", F.col(PREDICTION).cast("int").alias("cluster"))
    profile = log_feature_profile(snapshot.join(assigned, "customer_id"), ["cluster"], settings.clustering)
    decision = carry_labels(
        profile, previous_profile, same_model, settings.labels, settings.model.label_match_max_distance, scale
    )
    return assigned.select("customer_id", cluster_label_column(decision.mapping).alias("label"))


def idle_label_agreement(
    spark: SparkSession,
    settings: Settings,
    run_date: date,
    snapshot: DataFrame,
    features: DataFrame,
    champion_version: str,
    candidate: PipelineModel,
) -> IdleAgreement | None:
    """How the champion and the candidate would label tonight the customers who bought nothing since
    the previous published snapshot; None when there is no previous snapshot."""
    previous, previous_date = last_published_before(spark, settings, run_date)
    if previous is None:
        return None
    idle = idle_customers(previous, snapshot, (run_date - previous_date).days)
    previous_profile = log_feature_profile(previous, ["cluster", "cluster_label"], settings.clustering)
    previous_versions = {row["model_version"] for row in previous.select("model_version").distinct().collect()}
    scale = log_feature_scale(snapshot, settings.clustering)
    for name, model, version in (
        ("champion_label", registry.load(settings, champion_version), champion_version),
        ("candidate_label", candidate, None),
    ):
        labels = carried_labels(
            snapshot, features, model, previous_versions == {version}, previous_profile, scale, settings
        )
        idle = idle.join(labels.withColumnRenamed("label", name), "customer_id")
    return idle_agreement(idle.toPandas(), previous_date.isoformat())


def promote(
    spark: SparkSession,
    settings: Settings,
    run_date: date,
    snapshot: DataFrame,
    features: DataFrame,
    new_silhouette: float,
    version: str,
    candidate: PipelineModel | None = None,
) -> Promotion:
    """Compare the new version with the champion on tonight's data (silhouette, and the labels of
    idle customers), record the decision, then move the alias if the rule says so."""
    current = registry.champion(settings)
    champion_silhouette, idle = None, None
    if current is not None:
        champion_silhouette = silhouette_of(settings, str(current.version), features)
        candidate = candidate or registry.load(settings, version)
        idle = idle_label_agreement(spark, settings, run_date, snapshot, features, str(current.version), candidate)
    model = settings.model
    promotion = decide_promotion(
        version,
        new_silhouette,
        str(current.version) if current is not None else None,
        champion_silhouette,
        model.promotion_margin,
        idle,
        model.idle_relabel_max_share,
        model.clearly_better_silhouette,
    )
    registry.apply_promotion(settings, promotion)
    return promotion


def complete_retrain(
    spark: SparkSession,
    settings: Settings,
    run_date: date,
    snapshot: DataFrame,
    began: ModelVersion,
    features: DataFrame,
) -> Promotion:
    """Finish what an earlier attempt began with version ``began``: evaluate it if it never was, or
    re-apply the recorded decision (the alias moves only if it still points where the decision found it)."""
    version = str(began.version)
    recorded = registry.decision(began)
    if recorded is None:
        return promote(
            spark, settings, run_date, snapshot, features, silhouette_of(settings, version, features), version
        )
    current = registry.champion(settings)
    if recorded.promoted and (str(current.version) if current else None) == recorded.champion_version:
        registry.move_alias(settings, version)
    return recorded


def finish_retrain(version: str, promotion: Promotion) -> str:
    """Tag the night's run with the outcome; returns the version that scores tonight."""
    mlflow.set_tags({PROMOTED_TAG: str(promotion.promoted).lower(), TRAINED_VERSION_TAG: version})
    mlflow.log_dict(promotion.as_dict(), "promotion/decision.json")
    fault_point(FAULT_RUN_TAGGED)
    return version if promotion.promoted else promotion.champion_version


def retrain(
    spark: SparkSession,
    snapshot: DataFrame,
    features: DataFrame,
    settings: Settings,
    run_date: date,
    lineage: dict[str, str],
) -> tuple[str, Promotion]:
    """Sweep, choose, register and decide promotion; returns the version that scores tonight."""
    clustering = settings.clustering
    fitted = sweep(features, clustering, lineage)
    candidates = [candidate for candidate, _ in fitted]
    chosen, reason = choose_candidate(candidates, clustering)
    client = tracking.client(settings)
    for candidate, child_id in fitted:
        client.set_tag(child_id, CHOSEN_TAG, str(candidate is chosen).lower())
    mlflow.set_tags({CHOSEN_K_TAG: str(chosen.k), K_RULE_TAG: reason})
    log_sweep(candidates, chosen, clustering)
    metadata = {
        "trained_on": run_date.isoformat(),
        "k": chosen.k,
        "algorithm": clustering.algorithm,
        "features": log_feature_sql(clustering),
        "quintile_edges": quintile_edges(snapshot, RFM_MEASURES),
    }
    version_tags = {DAG_TAG: lineage[DAG_TAG], DAG_RUN_TAG: lineage[DAG_RUN_TAG]}
    version = str(registry.register(chosen.model, features, settings, metadata, version_tags).version)
    fault_point(FAULT_VERSION_REGISTERED)
    promotion = promote(
        spark, settings, run_date, snapshot, features, chosen.metrics["silhouette"], version, chosen.model
    )
    return finish_retrain(version, promotion), promotion


def cluster_day(
    run_date: date,
    settings: Settings | None = None,
    spark: SparkSession | None = None,
    lineage: dict[str, str] | None = None,
    force_retrain: bool = False,
) -> dict[str, Any]:
    """Pick or train the model, score ``run_date``, log to MLflow and store cluster ids.

    ``force_retrain`` (the DAG's param of a manual run) retrains whatever the plan would be, unless
    the date already has a version registered by this DAG: that retrain is resumed (``plan_night``).
    """
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    clustering = settings.clustering
    snapshot, silver_version = extract_snapshot(spark, settings, run_date)
    features = feature_frame(snapshot, clustering).cache()
    customers = features.count()
    if customers < max(clustering.candidate_ks()):
        raise LakeStateError(
            f"{run_date}: {customers} customers in the snapshot, fewer than the largest k "
            f"({max(clustering.candidate_ks())})"
        )
    lineage = {DAG_TAG: settings.dag.dag_id, DAG_RUN_TAG: "cli", **(lineage or {}), RUN_DATE_TAG: run_date.isoformat()}
    dag_id = lineage[DAG_TAG]
    mlflow.set_experiment(experiment_id=tracking.experiment_id(settings))
    plan = plan_for(spark, settings, run_date, dag_id, force_retrain)
    promotion = None
    began = registry.version(settings, plan.version) if plan.kind == "resume" else None
    with night_run(settings, dag_id, run_date, began, plan.kind) as run:
        mlflow.set_tags({**lineage, STEP_TAG: "cluster", NIGHT_TYPE_TAG: plan.kind, PLAN_TAG: plan.reason})
        mlflow.set_tag(NOTE_TAG, run_note(run_date, plan.kind, plan.reason, lineage))
        version = plan.version
        if plan.kind == "retrain":
            version, promotion = retrain(spark, snapshot, features, settings, run_date, lineage)
        elif began is not None:
            promotion = complete_retrain(spark, settings, run_date, snapshot, began, features)
            version = finish_retrain(str(began.version), promotion)
        model = registry.load(settings, version)
        k = model_k(model)
        scored = model.transform(features).cache()
        log_new_params(
            settings,
            run,
            {
                "algorithm": clustering.algorithm,
                "k": k,
                "seed": clustering.seed,
                "max_iter": clustering.max_iter,
                "features": ", ".join(log_feature_sql(clustering).values()),
                "scaling": "standard (mean 0, sd 1), inside the registered pipeline",
                "input_table": str(settings.table_path("silver_customer_rfm")),
                INPUT_VERSION_PARAM: silver_version,
                "row_count": customers,
                "model_name": settings.model.registered_name,
                "model_version": version,
            },
        )
        mlflow.set_tag(MODEL_VERSION_TAG, version)
        metrics = quality_metrics(scored, k, clustering)
        mlflow.log_metrics(metrics)
        assignments = scored.select("customer_id", *RFM_MEASURES, F.col(PREDICTION).cast("int").alias("cluster"))
        log_cluster_artifacts(assignments, clustering)
        run_id = run.info.run_id
    clusters_version = lake.replace_slice(
        assignments.select(
            F.lit(run_date).cast("date").alias("snapshot_date"),
            "customer_id",
            "cluster",
            F.lit(run_id).alias("mlflow_run_id"),
            F.lit(clustering.algorithm).alias("algorithm"),
            F.lit(k).alias("k"),
            F.lit(settings.model.registered_name).alias("model_name"),
            F.lit(version).alias("model_version"),
        ),
        settings.table_path("silver_customer_clusters"),
        f"snapshot_date = {lake.date_literal(run_date)}",
        "snapshot_date",
    )
    scored.unpersist()
    features.unpersist()
    superseded = tracking.supersede_earlier_runs(settings, dag_id, run_date, run_id)
    return {
        "run_date": run_date.isoformat(),
        "night_type": plan.kind,
        "plan": plan.reason,
        "model_version": version,
        "k": k,
        "promotion": promotion.as_dict() if promotion else None,
        "mlflow_run_id": run_id,
        "superseded_runs": superseded,
        "silhouette": metrics["silhouette"],
        "silver_customer_rfm": silver_version,
        "silver_customer_clusters": clusters_version,
    }


def night_run(
    settings: Settings, dag_id: str, run_date: date, began: ModelVersion | None, kind: str = "score"
) -> mlflow.ActiveRun:
    """The night's MLflow run: a new one named after the night and its type (``2011-12-08 retrain``,
    readable in the runs table), or, when resuming, the run that registered ``began`` (it holds the
    sweep; restored if an older attempt soft-deleted it)."""
    if began is None or not began.run_id:
        return mlflow.start_run(run_name=f"{run_date.isoformat()} {kind}")
    client = tracking.client(settings)
    if client.get_run(began.run_id).info.lifecycle_stage == "deleted":
        client.restore_run(began.run_id)
    return mlflow.start_run(run_id=began.run_id)


def run_note(run_date: date, kind: str, reason: str, lineage: dict[str, str]) -> str:
    """The run's description (Markdown, MLflow's Description box): the night, why this type, where
    it came from in Airflow and where its EDA report is."""
    return (
        f"**Night {run_date.isoformat()}** ({kind}: {reason}).\n\n"
        f"Airflow: DAG `{lineage.get(DAG_TAG)}`, run `{lineage.get(DAG_RUN_TAG)}` (task `cluster`; "
        "Browse > DAG runs in the Airflow UI).\n\n"
        "EDA report: the artifact `eda/report.html` of this run (Artifacts tab), written by the `eda` task.\n\n"
        "Clusters, labels and predicted values: the artifacts `clusters/`, `labels/` and `clv/`."
    )


def log_new_params(settings: Settings, run: mlflow.ActiveRun, params: dict[str, Any]) -> None:
    """Log the params a resumed run does not have yet (MLflow params cannot change once logged)."""
    logged = tracking.client(settings).get_run(run.info.run_id).data.params
    mlflow.log_params({key: value for key, value in params.items() if key not in logged})


def log_cluster_artifacts(assignments: DataFrame, clustering: Clustering) -> None:
    """The cluster profile (CSV) and a sampled scatter (PNG) under ``clusters/``."""
    profile = cluster_profile(assignments, RFM_MEASURES)
    with tempfile.TemporaryDirectory() as tmp:
        profile.to_csv(Path(tmp) / "cluster_profile.csv", index=False)
        total = int(profile["customers"].sum())
        fraction = min(1.0, clustering.plot_sample / max(total, 1))
        sample = (
            assignments.sample(fraction=fraction, seed=clustering.seed).toPandas()
            if fraction < 1
            else assignments.toPandas()
        )
        plot_clusters(sample, Path(tmp) / "clusters_rfm.png")
        mlflow.log_artifacts(tmp, artifact_path="clusters")
