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
stability of customers who bought nothing since then, logged to the night's MLflow run. The
previous snapshot is the last *published* one (``last_published_before``).

The label gate, before anything is written: tonight's labels must pass their meaning checks
(``labels.checks``; no empty label while k >= labels). Carried labels that fail them give way to the
profile rule; if that fails too, nothing is written or published (readers keep the last good
snapshot) and the step fails with ``LabelGateError`` naming each failed check. After publishing:
warnings (webhook and MLflow) when a segment's share moved more than ``alerts.max_share_move_points``
or the idle customers' label stability fell below ``alerts.min_idle_stability``.
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
from jobs.adapters.publish import ensure_publish_table, last_published_before, publish
from jobs.adapters.spark import get_spark
from jobs.adapters.webhook import report_warnings
from jobs.config import Settings, load_settings
from jobs.core.features import log_feature_profile, log_feature_scale
from jobs.core.labels import (
    PROFILE_RULE,
    LabelDecision,
    carry_labels,
    cluster_label_column,
    empty_labels,
    profile_decision,
    standardised_centroids,
)
from jobs.core.quality import label_checks, night_warnings
from jobs.core.scoring import add_rfm_scores
from jobs.definitions import (
    CLUSTER_SCHEME,
    GONE_CUSTOMER,
    LABEL_GATE_TAG,
    LABEL_SCHEMES,
    NEW_CUSTOMER,
    RFM_COLUMNS,
    RFM_MEASURES,
)
from jobs.errors import LabelGateError, LakeStateError

LOGGER = logging.getLogger(__name__)


def build_segments(
    snapshot: DataFrame, clusters: DataFrame, mapping: dict[int, str], edges: dict[str, list[float]], settings: Settings
) -> DataFrame:
    """Gold customer segments: RFM values, scores, both labels, country, model version, MLflow run id."""
    scored = add_rfm_scores(snapshot, edges, settings.labels.segment_rules)
    return scored.join(
        clusters.select("customer_id", "cluster", "model_version", "mlflow_run_id"), "customer_id", "inner"
    ).select(
        "snapshot_date",
        "customer_id",
        *RFM_COLUMNS,
        "rfm_segment",
        "cluster",
        cluster_label_column(mapping).alias("cluster_label"),
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
    """The latest gold snapshot published before ``run_date``, at its published version, or (None, None)."""
    return last_published_before(spark, settings, run_date)


def single_value(frame: DataFrame, column: str, what: str) -> str:
    values = [row[column] for row in frame.select(column).distinct().collect()]
    if len(values) != 1:
        raise LakeStateError(f"expected the {what} of one run, found {values}")
    return values[0]


def label_statistics(snapshot: DataFrame, clusters: DataFrame, mapping: dict[int, str]) -> pd.DataFrame:
    """Per cluster label under ``mapping``: customers, mean and median of each RFM measure."""
    labelled = snapshot.join(clusters.select("customer_id", "cluster"), "customer_id").withColumn(
        "cluster_label", cluster_label_column(mapping)
    )
    measures = [F.col(m).cast("double").alias(m) for m in RFM_MEASURES]
    aggregates = [F.count("*").alias("customers")]
    for m in RFM_MEASURES:
        aggregates += [F.avg(m).alias(f"mean_{m}"), F.median(m).alias(f"median_{m}")]
    stats = labelled.select("cluster_label", *measures).groupBy("cluster_label").agg(*aggregates).toPandas()
    return stats.set_index("cluster_label")


def decide_labels(
    snapshot: DataFrame, clusters: DataFrame, previous: DataFrame | None, model_version: str, settings: Settings
) -> tuple[LabelDecision, pd.DataFrame, list[str]]:
    """Tonight's cluster labels (see ``carry_labels``), the cluster profile they rest on and the meaning
    checks they fail (empty: they pass). Carried labels that fail a check give way to the profile rule."""
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
    failures = checks_of(snapshot, clusters, decision.mapping, settings)
    if failures and set(decision.sources.values()) != {PROFILE_RULE}:
        note = f"inherited labels failed {len(failures)} meaning check(s) ({'; '.join(failures)}): profile rule"
        decision = profile_decision(profile, scale, settings.labels, note)
        failures = checks_of(snapshot, clusters, decision.mapping, settings)
    z = standardised_centroids(profile, scale)
    profile = profile.assign(**{f"z_{c}": z[:, i] for i, c in enumerate(RFM_MEASURES)})
    return decision, profile, failures


def checks_of(snapshot: DataFrame, clusters: DataFrame, mapping: dict[int, str], settings: Settings) -> list[str]:
    """The meaning checks the labels of ``mapping`` fail on tonight's snapshot."""
    return label_checks(label_statistics(snapshot, clusters, mapping), len(mapping), settings.labels)


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


def record_gate(settings: Settings, run_id: str, decision: LabelDecision, failures: list[str]) -> None:
    """The label gate's outcome in the night's run: tag ``rfm.label_gate`` and ``labels/label_gate.json``
    (the labels checked, where each came from, the failed checks)."""
    client = tracking.client(settings)
    client.set_tag(run_id, LABEL_GATE_TAG, "failed" if failures else "passed")
    client.log_dict(
        run_id,
        {
            "passed": not failures,
            "failed_checks": failures,
            "cluster_labels": {str(c): label for c, label in sorted(decision.mapping.items())},
            "label_sources": {str(c): source for c, source in sorted(decision.sources.items())},
            "note": decision.note,
        },
        "labels/label_gate.json",
    )


def segment_shares(segments: DataFrame) -> dict[tuple[str, str], float]:
    """(label scheme, segment) -> its share of the snapshot's customers."""
    counts = {
        (scheme, row[column]): row["count"]
        for scheme, column in LABEL_SCHEMES.items()
        for row in segments.groupBy(column).count().collect()
    }
    customers = sum(n for (scheme, _), n in counts.items() if scheme == CLUSTER_SCHEME)
    return {key: n / customers for key, n in counts.items()} if customers else {}


def publish_warnings(
    settings: Settings, segments: DataFrame, previous: DataFrame | None, metrics: dict[str, float]
) -> list[str]:
    """Large share moves since the previous published snapshot and a low idle-customer label stability."""
    return night_warnings(
        segment_shares(previous) if previous is not None else None,
        segment_shares(segments),
        metrics.get("label_stability_cluster"),
        int(metrics.get("stability_population", 0)),
        settings.alerts,
    )


def label_day(run_date: date, settings: Settings | None = None, spark: SparkSession | None = None) -> dict[str, Any]:
    """Label every customer of ``run_date``; write gold segments, summary and transitions; log stability."""
    settings = settings or load_settings()
    spark = spark or get_spark(settings)
    snapshot, clusters, versions = extract_inputs(spark, settings, run_date)
    run_id = single_value(clusters, "mlflow_run_id", f"{run_date} clusters' MLflow run")
    model_version = single_value(clusters, "model_version", f"{run_date} clusters' model version")
    previous, previous_date = extract_previous(spark, settings, run_date)
    decision, profile, failures = decide_labels(snapshot, clusters, previous, model_version, settings)
    record_gate(settings, run_id, decision, failures)
    if failures:  # nothing written, nothing published: readers keep the last good snapshot
        raise LabelGateError(run_date, failures)
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
    log_labels(settings, run_id, decision, profile, edges, model_version, previous_date, metrics)
    write_audit(spark, settings, run_date, "label", customers, {}, versions)
    versions["gold_published"] = publish(spark, settings, run_date, versions)  # last: readers may now see it
    warnings = publish_warnings(settings, segments, previous, metrics)
    report_warnings(settings, run_id, run_date, "label", warnings)
    segments.unpersist()
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
        "warnings": warnings,
        **versions,
    }
