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
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from jobs.adapters import lake, registry, tracking
from jobs.adapters.audit import write_audit
from jobs.adapters.publish import ensure_publish_table, publish
from jobs.adapters.spark import get_spark
from jobs.config import Clustering, Labels, Settings, load_settings
from jobs.core.features import log_feature_columns
from jobs.core.scoring import add_rfm_scores
from jobs.definitions import GONE_CUSTOMER, LABEL_SCHEMES, NEW_CUSTOMER, RFM_MEASURES
from jobs.errors import LakeStateError

LOG_MEANS = [f"mean_log_{c}" for c in RFM_MEASURES]
PROFILE_RULE = "profile rule"
LOGGER = logging.getLogger(__name__)


@dataclass
class LabelDecision:
    """Cluster id -> label, and for each cluster where its label came from."""

    mapping: dict[int, str]
    sources: dict[int, str] = field(default_factory=dict)
    note: str = ""


def standardised_centroids(profile: pd.DataFrame, scale: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Each cluster's centroid in the snapshot's standardised log features (rows as in ``profile``)."""
    center, sd = scale
    return (profile[LOG_MEANS].to_numpy(dtype=float) - center) / sd


def dominance_violations(profile: pd.DataFrame, mapping: dict[int, str], labels: Labels) -> list[tuple[int, int]]:
    """Pairs (a, b): cluster a is at least as good as b in mean R (lower), F and M, better in one, yet
    a has the guard's low label while b has one of its high labels."""
    rows = profile.set_index("cluster")[["mean_recency_days", "mean_frequency", "mean_monetary"]]
    better = rows.assign(mean_recency_days=-rows["mean_recency_days"])
    found = []
    for a in better.index:
        for b in better.index:
            at_least, strictly = (better.loc[a] >= better.loc[b]).all(), (better.loc[a] > better.loc[b]).any()
            if at_least and strictly and mapping[a] == labels.guard.low and mapping[b] in labels.guard.high:
                found.append((int(a), int(b)))
    return found


def enforce_guard(profile: pd.DataFrame, mapping: dict[int, str], labels: Labels) -> dict[int, str]:
    """Swap the labels of each violating pair until none is left. Terminates: every swap moves the low
    label to a dominated cluster, i.e. strictly down the dominance order."""
    mapping = dict(mapping)
    while violations := dominance_violations(profile, mapping, labels):
        a, b = violations[0]
        mapping[a], mapping[b] = mapping[b], mapping[a]
    return mapping


def profile_label_map(profile: pd.DataFrame, scale: tuple[np.ndarray, np.ndarray], labels: Labels) -> dict[int, str]:
    """Cluster id -> label by profile: the assignment of clusters to label profiles with the least total
    Euclidean distance in standardised (R, F, M); clusters beyond one per label take their nearest
    profile's label; with fewer clusters than labels, the labels left over stay empty. The guard holds."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    names = list(labels.profiles)
    distances = cdist(standardised_centroids(profile, scale), np.array([labels.profiles[n] for n in names]))
    nearest = distances.argmin(axis=1)
    assigned = dict(zip(*linear_sum_assignment(distances), strict=True))
    clusters = profile["cluster"].astype(int).tolist()
    mapping = {cluster: names[assigned.get(row, nearest[row])] for row, cluster in enumerate(clusters)}
    return enforce_guard(profile, mapping, labels)


def empty_labels(mapping: dict[int, str], labels: Labels) -> list[str]:
    """The labels no cluster carries tonight, in display order."""
    return [label for label in labels.cluster_labels if label not in mapping.values()]


def match_centroids(current: np.ndarray, previous: np.ndarray, max_distance: float) -> dict[int, tuple[int, float]]:
    """Row of ``current`` -> (row of ``previous``, distance) by minimum total Euclidean distance,
    keeping only pairs closer than ``max_distance``."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    distances = cdist(current, previous)
    rows, cols = linear_sum_assignment(distances)
    return {
        int(r): (int(c), float(distances[r, c]))
        for r, c in zip(rows, cols, strict=True)
        if distances[r, c] <= max_distance
    }


def carry_labels(
    current: pd.DataFrame,
    previous: pd.DataFrame | None,
    same_model: bool,
    labels: Labels,
    max_distance: float,
    scale: tuple[np.ndarray, np.ndarray],
) -> LabelDecision:
    """Tonight's cluster labels: inherited from the previous snapshot where the cluster is the same
    (same model version) or its standardised centroid matches, the profile rule elsewhere.

    ``current``: cluster, customers, mean R/F/M and ``mean_log_*`` per cluster; ``previous``:
    cluster, cluster_label and ``mean_log_*``; ``scale``: (mean, sd) of tonight's log features.
    """
    by_profile = profile_label_map(current, scale, labels)
    if previous is None or previous.empty:
        return LabelDecision(by_profile, {c: PROFILE_RULE for c in by_profile}, "no previous snapshot: profile rule")
    decision = LabelDecision(dict(by_profile), {c: PROFILE_RULE for c in by_profile})
    previous_label = dict(zip(previous["cluster"].astype(int), previous["cluster_label"], strict=True))
    if same_model:
        for cluster in by_profile:
            if cluster in previous_label:
                decision.mapping[cluster] = previous_label[cluster]
                decision.sources[cluster] = "same model version: label kept"
        decision.note = "same model version as the previous snapshot"
    else:
        standardised = [standardised_centroids(frame, scale) for frame in (current, previous)]
        for row, (prev_row, distance) in match_centroids(*standardised, max_distance).items():
            cluster, matched = int(current["cluster"].iloc[row]), int(previous["cluster"].iloc[prev_row])
            decision.mapping[cluster] = previous_label[matched]
            decision.sources[cluster] = f"matched previous cluster {matched} (distance {distance:.3f}): label kept"
        decision.note = "new model version: centroids matched to the previous snapshot's"
    violations = dominance_violations(current, decision.mapping, labels)
    if violations:
        return LabelDecision(
            by_profile,
            {c: PROFILE_RULE for c in by_profile},
            f"inherited labels broke the guard {violations}: profile rule",
        )
    return decision


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
            )  # fmt: skip
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


def log_feature_profile(frame: DataFrame, by: list[str], clustering: Clustering) -> pd.DataFrame:
    """Per group: customers, mean R/F/M and mean of the clustering's log features — the centroid."""
    logged = frame.select(*by, *RFM_MEASURES, *log_feature_columns(clustering))
    return (
        logged.groupBy(*by)
        .agg(
            F.count("*").alias("customers"),
            *[F.avg(F.col(c).cast("double")).alias(f"mean_{c}") for c in RFM_MEASURES],
            *[F.avg(f"log_{c}").alias(f"mean_log_{c}") for c in RFM_MEASURES],
        )
        .orderBy(*by)
        .toPandas()
    )


def log_feature_scale(snapshot: DataFrame, clustering: Clustering) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the clustering's log features over the snapshot (zero sd taken as 1)."""
    logs = [F.col(f"log_{c}") for c in RFM_MEASURES]
    row = snapshot.select(*log_feature_columns(clustering)).agg(*[F.avg(x) for x in logs],
                                                                *[F.stddev_pop(x) for x in logs]).first()  # fmt: skip
    center = np.array(row[: len(RFM_MEASURES)], dtype=float)
    sd = np.array(row[len(RFM_MEASURES) :], dtype=float)
    return center, np.where(sd > 0, sd, 1.0)


def extract_inputs(
    spark: SparkSession, settings: Settings, run_date: date
) -> tuple[DataFrame, DataFrame, dict[str, int]]:
    """The run date's RFM snapshot and cluster assignments, at pinned versions."""
    day = F.col("snapshot_date") == F.lit(run_date).cast("date")
    frames, versions = [], {}
    for name in ("silver_customer_rfm", "silver_customer_clusters"):
        path = settings.table_path(name)
        versions[name] = lake.current_version(spark, path)
        if versions[name] is None:
            raise LakeStateError(f"no {name} table at {path}: run the earlier steps first")
        frames.append(lake.read(spark, path, versions[name]).filter(day))
    return frames[0], frames[1], versions


def extract_previous(spark: SparkSession, settings: Settings, run_date: date) -> tuple[DataFrame | None, date | None]:
    """The latest gold snapshot before ``run_date`` (partition-pruned), or (None, None)."""
    path = settings.table_path("gold_customer_segments")
    if not lake.exists(spark, path):
        return None, None
    gold = lake.read(spark, path)
    previous_date = (
        gold.filter(F.col("snapshot_date") < F.lit(run_date).cast("date")).agg(F.max("snapshot_date")).first()[0]
    )
    if previous_date is None:
        return None, None
    return gold.filter(F.col("snapshot_date") == F.lit(previous_date)), previous_date


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


def log_labels(settings: Settings, run_id: str, decision: LabelDecision, profile: pd.DataFrame,
               edges: dict[str, list[float]], model_version: str, previous_date: date | None,
               metrics: dict[str, float]) -> None:  # fmt: skip
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
    client.log_batch(run_id, metrics=[Metric(name, value, now, 0) for name, value in metrics.items()])


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
        "empty_labels": empty,
        "stability": metrics,
        **versions,
    }
