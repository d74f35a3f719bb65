"""Step 4 — business labels for every customer of the snapshot, written to the gold tables.

Two label schemes:
- cluster labels (VIP > Loyal > At-Risk > Low-Value by default): clusters ranked by the mean
  of their per-dimension ranks of mean recency (lower is better), frequency and monetary,
  then handed out best first by ``labels_per_rank`` — deterministic for any k >= 2, and a
  cluster at least as good in R, F and M (better in one) never gets a lower label;
- classic RFM: 1-5 scores against the snapshot's 20/40/60/80 % percentiles (ties share a
  score) and a named segment from the rule table in ``conf/``.
"""

from __future__ import annotations

import sys
from datetime import date
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs import lake, tracking
from jobs.cli import run_step
from jobs.config import SegmentRule, Settings, load_settings
from jobs.errors import LakeStateError
from jobs.rfm import write_audit
from jobs.spark import get_spark

QUANTILES = [0.2, 0.4, 0.6, 0.8]
UNCLASSIFIED = "Unclassified"


def labels_per_rank(k: int, labels: list[str]) -> list[str]:
    """The label of each cluster rank, best rank first.

    k < len(labels): the best label, then middle labels in order, then the worst
    (k=2: VIP, Low-Value; k=3: VIP, Loyal, Low-Value). k >= len(labels): each label covers
    k // len(labels) ranks and the remainder goes to the labels after the best, in order
    (k=5: VIP, Loyal, Loyal, At-Risk, Low-Value) so the top label stays the most exclusive.
    """
    if k < 2:
        raise ValueError("labelling needs at least two clusters")
    if k < len(labels):
        return [labels[0], *labels[1 : k - 1], labels[-1]]
    base, extra = divmod(k, len(labels))
    counts = [base + (1 if 0 < i <= extra else 0) for i in range(len(labels))]
    return [label for label, count in zip(labels, counts, strict=True) for _ in range(count)]


def rank_clusters(profile: pd.DataFrame) -> list[int]:
    """Cluster ids best first by the mean of their R, F and M ranks (ties: higher M, lower id)."""
    ranks = pd.DataFrame(
        {
            "r": (-profile["mean_recency_days"]).rank(method="average"),
            "f": profile["mean_frequency"].rank(method="average"),
            "m": profile["mean_monetary"].rank(method="average"),
        }
    )
    ordered = profile.assign(value_score=ranks.mean(axis=1)).sort_values(
        ["value_score", "mean_monetary", "cluster"], ascending=[False, False, True]
    )
    return [int(c) for c in ordered["cluster"]]


def cluster_label_map(profile: pd.DataFrame, labels: list[str]) -> dict[int, str]:
    """Cluster id -> business label."""
    ranked = rank_clusters(profile)
    return dict(zip(ranked, labels_per_rank(len(ranked), labels), strict=True))


def quintile_edges(snapshot: DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """Exact 20/40/60/80 % percentiles (linear interpolation) of each column."""
    row = snapshot.agg(
        *[F.percentile(F.col(c).cast("double"), F.array(*map(F.lit, QUANTILES))).alias(c) for c in columns]
    ).first()
    return {c: [float(v) for v in row[c]] for c in columns}


def score(column: str, edges: list[float], higher_is_better: bool) -> Column:
    """1 + the number of edges the value beats (ties with an edge do not beat it)."""
    value = F.col(column).cast("double")
    beats = [(value > e) if higher_is_better else (value < e) for e in edges]
    return (F.lit(1) + sum(b.cast("int") for b in beats)).cast("int")


def named_segment(rules: list[SegmentRule]) -> Column:
    """First rule whose R-score and FM-score ranges hold; FM = floor((F + M) / 2)."""
    r, fm = F.col("r_score"), F.floor((F.col("f_score") + F.col("m_score")) / 2)
    segment = None
    for rule in rules:
        condition = r.between(*rule.r) & fm.between(*rule.fm)
        segment = F.when(condition, rule.segment) if segment is None else segment.when(condition, rule.segment)
    return segment.otherwise(UNCLASSIFIED) if segment is not None else F.lit(UNCLASSIFIED)


def add_rfm_scores(snapshot: DataFrame, edges: dict[str, list[float]], rules: list[SegmentRule]) -> DataFrame:
    """R, F, M scores, the three-digit RFM score and the named segment."""
    scored = (
        snapshot.withColumn("r_score", score("recency_days", edges["recency_days"], higher_is_better=False))
        .withColumn("f_score", score("frequency", edges["frequency"], higher_is_better=True))
        .withColumn("m_score", score("monetary", edges["monetary"], higher_is_better=True))
    )
    return scored.withColumn(
        "rfm_score", F.concat(*[F.col(c).cast("string") for c in ("r_score", "f_score", "m_score")])
    ).withColumn("rfm_segment", named_segment(rules))


def build_segments(
    snapshot: DataFrame, clusters: DataFrame, mapping: dict[int, str], edges: dict[str, list[float]], settings: Settings
) -> DataFrame:
    """Gold customer segments: RFM values, scores, both labels, country, MLflow run id."""
    label_of = F.create_map(*[x for c, label in sorted(mapping.items()) for x in (F.lit(c), F.lit(label))])
    scored = add_rfm_scores(snapshot, edges, settings.labels.segment_rules)
    return scored.join(clusters.select("customer_id", "cluster", "mlflow_run_id"), "customer_id", "inner").select(
        "snapshot_date",
        "customer_id",
        "recency_days",
        "frequency",
        "monetary",
        "r_score",
        "f_score",
        "m_score",
        "rfm_score",
        "rfm_segment",
        "cluster",
        label_of[F.col("cluster")].alias("cluster_label"),
        "country",
        "first_purchase_date",
        "last_purchase_date",
        "tenure_days",
        "mlflow_run_id",
    )


def segment_summary(segments: DataFrame) -> DataFrame:
    """Per label scheme and segment: customers, shares, mean R/F/M and revenue share."""
    per_scheme = []
    for scheme, column in (("cluster", "cluster_label"), ("rfm", "rfm_segment")):
        per_scheme.append(
            segments.groupBy("snapshot_date", F.col(column).alias("segment")).agg(
                F.lit(scheme).alias("label_scheme"),
                F.count("*").alias("customers"),
                F.avg("recency_days").alias("mean_recency_days"),
                F.avg("frequency").alias("mean_frequency"),
                F.avg(F.col("monetary").cast("double")).alias("mean_monetary"),
                F.sum("monetary").alias("monetary_total"),
            )
        )
    summary = per_scheme[0].unionByName(per_scheme[1])
    totals = segments.agg(F.count("*").alias("all_customers"), F.sum("monetary").alias("all_monetary"))
    return summary.crossJoin(totals).select(
        "snapshot_date",
        "label_scheme",
        "segment",
        "customers",
        (F.col("customers") / F.col("all_customers")).alias("customer_share"),
        "mean_recency_days",
        "mean_frequency",
        "mean_monetary",
        "monetary_total",
        F.when(F.col("all_monetary") > 0, F.col("monetary_total") / F.col("all_monetary"))
        .otherwise(F.lit(0.0))
        .cast("double")
        .alias("revenue_share"),
    )


def extract_inputs(spark: SparkSession, settings: Settings, run_date: date) -> tuple[DataFrame, DataFrame, dict[str, int]]:
    """The run date's RFM snapshot and cluster assignments, at pinned versions."""
    day = F.col("snapshot_date") == F.lit(run_date).cast("date")
    frames, versions = [], {}
    for name in ("silver_customer_rfm", "silver_customer_clusters"):
        path = lake.table_path(settings, name)
        versions[name] = lake.current_version(spark, path)
        if versions[name] is None:
            raise LakeStateError(f"no {name} table at {path}: run the earlier steps first")
        frames.append(lake.read(spark, path, versions[name]).filter(day))
    return frames[0], frames[1], versions


def label_day(run_date: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Label every customer of ``run_date`` and write the gold tables; returns the mapping and versions."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    snapshot, clusters, versions = extract_inputs(spark, settings, run_date)
    run_ids = [row["mlflow_run_id"] for row in clusters.select("mlflow_run_id").distinct().collect()]
    if len(run_ids) != 1:
        raise LakeStateError(f"{run_date}: expected the clusters of one MLflow run, found {run_ids}")
    features = ["recency_days", "frequency", "monetary"]
    profile = (
        snapshot.join(clusters.select("customer_id", "cluster"), "customer_id")
        .groupBy("cluster")
        .agg(F.count("*").alias("customers"), *[F.avg(F.col(c).cast("double")).alias(f"mean_{c}") for c in features])
        .toPandas()
    )
    mapping = cluster_label_map(profile, settings.labels.cluster_labels)
    edges = quintile_edges(snapshot, features)
    segments = build_segments(snapshot, clusters, mapping, edges, settings).cache()
    predicate = f"snapshot_date = {lake.date_literal(run_date)}"
    versions["gold_customer_segments"] = lake.replace_slice(
        segments, lake.table_path(settings, "gold_customer_segments"), predicate, "snapshot_date"
    )
    versions["gold_segment_summary"] = lake.replace_slice(
        segment_summary(segments), lake.table_path(settings, "gold_segment_summary"), predicate, "snapshot_date"
    )
    customers = segments.count()
    segments.unpersist()
    tracking.client(settings).log_dict(
        run_ids[0],
        {
            "cluster_labels": {str(c): label for c, label in sorted(mapping.items())},
            "cluster_rank_best_first": rank_clusters(profile),
            "cluster_profile": profile.sort_values("cluster").to_dict(orient="records"),
            "quintile_edges": edges,
        },
        "labels/label_mapping.json",
    )
    write_audit(spark, settings, run_date, "label", customers, {}, versions)
    return {
        "run_date": run_date.isoformat(),
        "customers": customers,
        "mlflow_run_id": run_ids[0],
        "cluster_labels": {str(c): label for c, label in sorted(mapping.items())},
        **versions,
    }


def main(argv: list[str] | None = None) -> int:
    return run_step(label_day, "Label the customers of one snapshot and write the gold tables.", argv)


if __name__ == "__main__":
    sys.exit(main())
