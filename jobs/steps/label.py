"""Step 4 — business labels for every customer of the snapshot, written to the gold tables.

Two label schemes:
- cluster labels (VIP, Loyal, At-Risk, Low-Value by default), each a profile in ``conf/``
  (labels.profiles: a point in the snapshot's standardised log R, F, M). The profile rule assigns
  clusters to labels by minimum total centroid-to-profile distance; clusters beyond one per label
  take their nearest profile's label, and with fewer clusters than labels the rest stay empty
  (reported). Kept stable across nights by ``carry_labels``: a cluster of the same model version
  as the previous snapshot keeps its label; after a retrain, tonight's centroids are matched to the
  previous snapshot's and a matched cluster keeps its label; unmatched clusters — and every cluster
  on the first night — get the profile rule. The guard: a cluster at least as good as another in
  mean R, F and M (better in one) never gets Low-Value while the other gets VIP or Loyal; inherited
  labels that break it give way to the profile rule, which itself swaps violating pairs;
- classic RFM: 1-5 scores against the 20/40/60/80 % percentiles frozen with the scoring model
  (computed on its training snapshot; ties share a score) and a named segment from ``conf/``.

Also per night: ``segment_transitions`` from the previous snapshot (both schemes) and the label
stability of customers who bought nothing since then, logged to the night's MLflow run.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import date
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake, registry, tracking
from jobs.adapters.audit import write_audit
from jobs.adapters.publish import ensure_publish_table, publish
from jobs.adapters.spark import get_spark
from jobs.config import Settings, load_settings
from jobs.core.features import log_feature_profile, log_feature_scale
from jobs.core.labels import LabelDecision, carry_labels, empty_labels, standardised_centroids
from jobs.core.scoring import add_rfm_scores
from jobs.definitions import GONE_CUSTOMER, LABEL_SCHEMES, NEW_CUSTOMER, RFM_COLUMNS, RFM_MEASURES
from jobs.errors import LakeStateError

LOGGER = logging.getLogger(__name__)


def build_segments(
    snapshot: DataFrame, clusters: DataFrame, mapping: dict[int, str], edges: dict[str, list[float]], settings: Settings
) -> DataFrame:
    """Gold customer segments: RFM values, scores, both labels, country, model version, MLflow run id."""
    label_of = F.create_map(*[x for c, label in sorted(mapping.items()) for x in (F.lit(c), F.lit(label))])
    scored = add_rfm_scores(snapshot, edges, settings.labels.segment_rules)
    return scored.join(
        clusters.select("customer_id", "cluster", "model_version", "mlflow_run_id"), "customer_id", "inner"
    ).select(
        "snapshot_date",
        "customer_id",
        *RFM_COLUMNS,
        "rfm_segment",
        "cluster",
        label_of[F.col("cluster")].alias("cluster_label"),
        "country",
        "first_purchase_date",
        "last_purchase_date",
        "tenure_days",
        "model_version",
        "mlflow_run_id",
    )


def segment_summary(segments: DataFrame) -> DataFrame:
    """Per label scheme and segment: customers, shares, mean R/F/M and revenue share."""
    per_scheme = []
    for scheme, column in LABEL_SCHEMES.items():
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


def segment_transitions(previous: DataFrame, current: DataFrame, previous_date: date | None) -> DataFrame:
    """From-segment -> to-segment of every customer of either snapshot, for both label schemes:
    customers and monetary value (tonight's and the previous snapshot's). A customer absent from
    the previous snapshot comes from "new"; one absent tonight goes to "gone"."""
    per_scheme = []
    for scheme, column in LABEL_SCHEMES.items():
        before = previous.select("customer_id", F.col(column).alias("from_segment"), F.col("monetary").alias("before"))
        after = current.select("customer_id", F.col(column).alias("to_segment"), "snapshot_date", "monetary")
        per_scheme.append(
            before.join(after, "customer_id", "full_outer")
            .groupBy(
                F.coalesce("from_segment", F.lit(NEW_CUSTOMER)).alias("from_segment"),
                F.coalesce("to_segment", F.lit(GONE_CUSTOMER)).alias("to_segment"),
            )
            .agg(
                F.count("*").alias("customers"),
                F.coalesce(F.sum("monetary"), F.lit(0)).alias("monetary_total"),
                F.coalesce(F.sum("before"), F.lit(0)).alias("previous_monetary_total"),
            )
            .withColumn("label_scheme", F.lit(scheme))
        )
    snapshot_date = current.select("snapshot_date").first()[0] if not current.isEmpty() else None
    return (
        per_scheme[0]
        .unionByName(per_scheme[1])
        .select(
            F.lit(snapshot_date).cast("date").alias("snapshot_date"),
            F.lit(previous_date).cast("date").alias("previous_snapshot_date"),
            "label_scheme",
            "from_segment",
            "to_segment",
            "customers",
            "monetary_total",
            "previous_monetary_total",
        )
    )


def label_stability(previous: pd.DataFrame, current: pd.DataFrame, days_between: int) -> dict[str, float]:
    """Per label scheme: among customers who bought nothing in between (F and M unchanged, R older by
    ``days_between``) the share that kept their label and how many changed; and the adjusted Rand
    index of the labels of every customer in both snapshots."""
    from sklearn.metrics import adjusted_rand_score

    both = previous.merge(current, on="customer_id", suffixes=("_before", "_after"))
    idle = both[
        (both["frequency_before"] == both["frequency_after"])
        & (both["monetary_before"] == both["monetary_after"])
        & (both["recency_days_after"] == both["recency_days_before"] + days_between)
    ]
    metrics = {"stability_population": float(len(idle)), "customers_in_both": float(len(both))}
    for scheme, column in LABEL_SCHEMES.items():
        kept = idle[f"{column}_before"] == idle[f"{column}_after"]
        metrics[f"label_stability_{scheme}"] = float(kept.mean()) if len(idle) else float("nan")
        metrics[f"label_changes_{scheme}"] = float((~kept).sum())
        metrics[f"ari_{scheme}"] = (
            float(adjusted_rand_score(both[f"{column}_before"], both[f"{column}_after"])) if len(both) else float("nan")
        )
    return metrics


def extract_inputs(
    spark: SparkSession, settings: Settings, run_date: date
) -> tuple[DataFrame, DataFrame, dict[str, int]]:
    """The run date's RFM snapshot and cluster assignments, at pinned versions."""
    day = F.col("snapshot_date") == F.lit(run_date).cast("date")
    frames, versions = [], {}
    for name in ("silver_customer_rfm", "silver_customer_clusters"):
        path = settings.table_path(name)
        versions[name] = lake.current_version(path)
        if versions[name] is None:
            raise LakeStateError(f"no {name} table at {path}: run the earlier steps first")
        frames.append(lake.read(spark, path, versions[name]).filter(day))
    return frames[0], frames[1], versions


def extract_previous(spark: SparkSession, settings: Settings, run_date: date) -> tuple[DataFrame | None, date | None]:
    """The latest gold snapshot before ``run_date`` (partition-pruned), or (None, None)."""
    return lake.latest_slice_before(spark, settings.table_path("gold_customer_segments"), run_date)


def single_value(frame: DataFrame, column: str, what: str) -> str:
    values = [row[column] for row in frame.select(column).distinct().collect()]
    if len(values) != 1:
        raise LakeStateError(f"expected the {what} of one run, found {values}")
    return values[0]


def decide_labels(
    snapshot: DataFrame, clusters: DataFrame, previous: DataFrame | None, model_version: str, settings: Settings
) -> tuple[LabelDecision, pd.DataFrame]:
    """Tonight's cluster labels (see ``carry_labels``) and the cluster profile they rest on."""
    clustering = settings.clustering
    profile = log_feature_profile(
        snapshot.join(clusters.select("customer_id", "cluster"), "customer_id"), ["cluster"], clustering
    )
    previous_profile, same_model = None, False
    if previous is not None:
        previous_profile = log_feature_profile(previous, ["cluster", "cluster_label"], clustering)
        same_model = (
            "model_version" in previous.columns
            and single_value(previous, "model_version", "previous model version") == model_version
        )
    scale = log_feature_scale(snapshot, clustering)
    decision = carry_labels(
        profile, previous_profile, same_model, settings.labels, settings.model.label_match_max_distance, scale
    )
    z = standardised_centroids(profile, scale)
    profile = profile.assign(**{f"z_{c}": z[:, i] for i, c in enumerate(RFM_MEASURES)})
    return decision, profile


def change_cause(previous: DataFrame | None, model_version: str) -> str | None:
    """Why an idle customer's cluster label can change tonight: ageing across a recency boundary
    (same model version as the previous snapshot), or the recorded model change (the promotion
    decision of the new version says how many idle customers it relabels)."""
    if previous is None:
        return None
    before = single_value(previous, "model_version", "previous model version")
    if before == model_version:
        return f"ageing (model version {model_version} on both snapshots)"
    return f"model change (version {before} -> {model_version}; its promotion decision records the relabelling)"


def write_gold(segments: DataFrame, transitions: DataFrame, settings: Settings, run_date: date) -> dict[str, int]:
    """Replace the run date's slice of the three gold tables; returns their versions."""
    predicate = f"snapshot_date = {lake.date_literal(run_date)}"
    outputs = {
        "gold_customer_segments": segments,
        "gold_segment_summary": segment_summary(segments),
        "gold_segment_transitions": transitions,
    }
    return {
        name: lake.replace_slice(frame, settings.table_path(name), predicate, "snapshot_date")
        for name, frame in outputs.items()
    }


def night_metrics(
    segments: DataFrame, previous: DataFrame | None, previous_date: date | None, run_date: date, labels: list[str]
) -> dict[str, float]:
    """Cluster-label shares (0 for an empty label), how many labels are empty, and the label stability
    against the previous snapshot when there is one."""
    metrics: dict[str, float] = {}
    if previous is not None:
        columns = ["customer_id", *RFM_MEASURES, *LABEL_SCHEMES.values()]
        before, after = previous.select(columns).toPandas(), segments.select(columns).toPandas()
        metrics = label_stability(before, after, (run_date - previous_date).days)
    shares = {row["cluster_label"]: row["count"] for row in segments.groupBy("cluster_label").count().collect()}
    customers = sum(shares.values())
    shares = {label: shares.get(label, 0) / customers for label in dict.fromkeys([*labels, *shares])}
    empty = sum(1 for label in labels if shares[label] == 0)
    return {**metrics, "empty_labels": float(empty), **{f"label_share_{label}": s for label, s in shares.items()}}


def log_labels(
    settings: Settings,
    run_id: str,
    decision: LabelDecision,
    profile: pd.DataFrame,
    edges: dict[str, list[float]],
    model_version: str,
    previous_date: date | None,
    metrics: dict[str, float],
) -> None:
    """The label mapping (with each label's source) and the night's metrics, into the night's run."""
    from mlflow.entities import Metric

    client = tracking.client(settings)
    client.log_dict(
        run_id,
        {
            "cluster_labels": {str(c): label for c, label in sorted(decision.mapping.items())},
            "label_sources": {str(c): source for c, source in sorted(decision.sources.items())},
            "note": decision.note,
            "previous_snapshot": previous_date.isoformat() if previous_date else None,
            "empty_labels": empty_labels(decision.mapping, settings.labels),
            "label_profiles": {label: list(z) for label, z in settings.labels.profiles.items()},
            "cluster_profile": profile.to_dict(orient="records"),
            "quintile_edges": edges,
            "quintile_edges_from_model_version": model_version,
        },
        "labels/label_mapping.json",
    )
    now = int(time.time() * 1000)
    finite = {name: value for name, value in metrics.items() if math.isfinite(value)}  # no NaN on a first night
    client.log_batch(run_id, metrics=[Metric(name, value, now, 0) for name, value in finite.items()])


def label_day(run_date: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Label every customer of ``run_date``; write gold segments, summary and transitions; log stability."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    snapshot, clusters, versions = extract_inputs(spark, settings, run_date)
    run_id = single_value(clusters, "mlflow_run_id", f"{run_date} clusters' MLflow run")
    model_version = single_value(clusters, "model_version", f"{run_date} clusters' model version")
    previous, previous_date = extract_previous(spark, settings, run_date)
    decision, profile = decide_labels(snapshot, clusters, previous, model_version, settings)
    edges = registry.metadata(settings, model_version)["quintile_edges"]
    segments = build_segments(snapshot, clusters, decision.mapping, edges, settings).cache()
    transitions = segment_transitions(previous if previous is not None else segments.limit(0), segments, previous_date)
    ensure_publish_table(spark, settings)  # a fresh lake: readers see nothing until the first publish
    versions.update(write_gold(segments, transitions, settings, run_date))
    customers = segments.count()
    metrics = night_metrics(segments, previous, previous_date, run_date, settings.labels.cluster_labels)
    empty = empty_labels(decision.mapping, settings.labels)
    if empty:
        LOGGER.warning("%s: no cluster carries the label(s) %s tonight", run_date, empty)
    segments.unpersist()
    log_labels(settings, run_id, decision, profile, edges, model_version, previous_date, metrics)
    write_audit(spark, settings, run_date, "label", customers, {}, versions)
    versions["gold_published"] = publish(spark, settings, run_date, versions)  # last: readers may now see it
    return {
        "run_date": run_date.isoformat(),
        "customers": customers,
        "mlflow_run_id": run_id,
        "model_version": model_version,
        "previous_snapshot": previous_date.isoformat() if previous_date else None,
        "cluster_labels": {str(c): label for c, label in sorted(decision.mapping.items())},
        "label_note": decision.note,
        "idle_change_cause": change_cause(previous, model_version),
        "empty_labels": empty,
        "stability": metrics,
        **versions,
    }
