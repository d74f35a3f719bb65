"""Step 3 — cluster the day's RFM snapshot with Spark ML and track it in MLflow.

Extract: the silver snapshot of the run date at a pinned Delta version.
Transform: log1p(R, F, M) -> standard scaling -> K-Means or Gaussian Mixture (``fit_clusters``).
Load: per-customer cluster ids into ``silver/customer_clusters``; params, metrics, the
cluster profile, a PNG of the clusters and the fitted pipeline model into one MLflow run
per (DAG, run date) — a re-run supersedes the earlier run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import GaussianMixture, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import lake, tracking
from jobs.cli import run_step
from jobs.config import Clustering, Settings, load_settings
from jobs.errors import LakeStateError
from jobs.spark import get_spark

PREDICTION = "prediction"  # MLflow's signature inference expects Spark ML's default name


@dataclass
class ClusterFit:
    """A fitted clustering pipeline, its assignments and quality metrics."""

    model: PipelineModel
    assignments: DataFrame
    metrics: dict[str, float]


def feature_frame(snapshot: DataFrame, clustering: Clustering) -> DataFrame:
    """log1p of each RFM feature, range-partitioned and sorted by customer for reproducible fits."""
    logged = snapshot.select(
        "customer_id",
        *clustering.features,
        *[F.log1p(F.col(name).cast("double")).alias(f"log_{name}") for name in clustering.features],
    )
    return logged.repartitionByRange(clustering.input_partitions, "customer_id").sortWithinPartitions("customer_id")


def build_pipeline(clustering: Clustering) -> Pipeline:
    """Assembler -> scaler -> the configured clustering algorithm."""
    assembler = VectorAssembler(inputCols=[f"log_{n}" for n in clustering.features], outputCol="log_features")
    scaler = StandardScaler(inputCol="log_features", outputCol="features", withMean=True, withStd=True)
    if clustering.algorithm == "gmm":
        estimator = GaussianMixture(k=clustering.k, seed=clustering.seed, maxIter=clustering.max_iter)
    else:
        estimator = KMeans(k=clustering.k, seed=clustering.seed, maxIter=clustering.max_iter)
    return Pipeline(stages=[assembler, scaler, estimator])


def fit_clusters(features: DataFrame, clustering: Clustering) -> ClusterFit:
    """Fit the pipeline and score every customer; metrics include silhouette and cluster sizes."""
    started = time.perf_counter()
    model = build_pipeline(clustering).fit(features)
    training_seconds = time.perf_counter() - started
    scored = model.transform(features).cache()
    summary = model.stages[-1].summary
    sizes = {int(row[PREDICTION]): int(row["count"]) for row in scored.groupBy(PREDICTION).count().collect()}
    metrics: dict[str, float] = {
        "silhouette": ClusteringEvaluator(featuresCol="features", predictionCol=PREDICTION).evaluate(scored)
        if len(sizes) > 1
        else float("nan"),
        "training_seconds": training_seconds,
        "customers": float(sum(sizes.values())),
        "clusters_non_empty": float(len(sizes)),
    }
    metrics.update({f"cluster_size_{c}": float(sizes.get(c, 0)) for c in range(clustering.k)})
    if clustering.algorithm == "gmm":
        metrics["gmm_log_likelihood"] = float(summary.logLikelihood)
    else:
        metrics["kmeans_cost"] = float(summary.trainingCost)
    assignments = scored.select("customer_id", *clustering.features, F.col(PREDICTION).cast("int").alias("cluster"))
    return ClusterFit(model=model, assignments=assignments, metrics=metrics)


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def extract_snapshot(spark: SparkSession, settings: Settings, run_date: date) -> tuple[DataFrame, int]:
    """The run date's RFM snapshot and the silver version it was read at."""
    path = lake.table_path(settings, "silver_customer_rfm")
    version = lake.current_version(spark, path)
    if version is None:
        raise LakeStateError(f"no silver RFM table at {path}: run the ingest step first")
    snapshot = lake.read(spark, path, version).filter(F.col("snapshot_date") == F.lit(run_date).cast("date"))
    return snapshot, version


def log_model(model: PipelineModel, features: DataFrame) -> None:
    """The fitted pipeline as an MLflow Spark model with its signature."""
    import pyspark
    from mlflow.models import infer_signature

    inputs = features.select([c for c in features.columns if c.startswith("log_")]).limit(5)
    signature = infer_signature(inputs.toPandas(), model.transform(inputs).select(PREDICTION).toPandas())
    mlflow.spark.log_model(
        model, artifact_path="model", signature=signature, pip_requirements=[f"pyspark=={pyspark.__version__}"]
    )


def cluster_day(
    run_date: date,
    settings: Settings | None = None,
    spark: SparkSession | None = None,
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Fit, log to MLflow and store cluster ids for ``run_date``; returns run id and versions."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    clustering = settings.clustering
    snapshot, silver_version = extract_snapshot(spark, settings, run_date)
    features = feature_frame(snapshot, clustering).cache()
    customers = features.count()
    if customers < clustering.k:
        raise LakeStateError(f"{run_date}: {customers} customers in the snapshot, fewer than k={clustering.k}")
    lineage = {tracking.DAG_TAG: settings.dag.dag_id, "airflow.run_id": "cli", **(lineage or {})}
    dag_id = lineage[tracking.DAG_TAG]
    mlflow.set_experiment(experiment_id=tracking.experiment_id(settings))
    with mlflow.start_run(run_name=f"{dag_id}__{run_date.isoformat()}") as run:
        mlflow.set_tags({**lineage, tracking.RUN_DATE_TAG: run_date.isoformat(), "rfm.step": "cluster"})
        mlflow.log_params(
            {
                "algorithm": clustering.algorithm,
                "k": clustering.k,
                "seed": clustering.seed,
                "max_iter": clustering.max_iter,
                "features": ",".join(f"log1p({n})" for n in clustering.features),
                "scaling": "standard (mean 0, sd 1)",
                "input_table": str(lake.table_path(settings, "silver_customer_rfm")),
                "input_version": silver_version,
                "row_count": customers,
            }
        )
        fit = fit_clusters(features, clustering)
        mlflow.log_metrics(fit.metrics)
        profile = cluster_profile(fit.assignments, clustering.features)
        with tempfile.TemporaryDirectory() as tmp:
            profile.to_csv(Path(tmp) / "cluster_profile.csv", index=False)
            sample = fit.assignments.toPandas()
            sample = sample.sample(n=min(len(sample), clustering.plot_sample), random_state=clustering.seed)
            plot_clusters(sample, Path(tmp) / "clusters_rfm.png")
            mlflow.log_artifacts(tmp, artifact_path="clusters")
        if settings.mlflow.log_model:
            log_model(fit.model, features)
        run_id = run.info.run_id
    assignments = fit.assignments.select(
        F.lit(run_date).cast("date").alias("snapshot_date"),
        "customer_id",
        "cluster",
        F.lit(run_id).alias("mlflow_run_id"),
        F.lit(clustering.algorithm).alias("algorithm"),
        F.lit(clustering.k).alias("k"),
    )
    clusters_version = lake.replace_slice(
        assignments,
        lake.table_path(settings, "silver_customer_clusters"),
        f"snapshot_date = {lake.date_literal(run_date)}",
        "snapshot_date",
    )
    superseded = tracking.supersede_earlier_runs(settings, dag_id, run_date, run_id)
    features.unpersist()
    return {
        "run_date": run_date.isoformat(),
        "mlflow_run_id": run_id,
        "superseded_runs": superseded,
        "silhouette": fit.metrics["silhouette"],
        "silver_customer_rfm": silver_version,
        "silver_customer_clusters": clusters_version,
    }


def main(argv: list[str] | None = None) -> int:
    return run_step(cluster_day, "Cluster one RFM snapshot and log the model to MLflow.", argv)


if __name__ == "__main__":
    sys.exit(main())
