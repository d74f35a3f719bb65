"""Labelling: cluster labels follow the R/F/M values (never the ids), quintile scores and named segments."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import permutations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.config import Labels
from jobs.core.labels import dominance_violations, empty_labels, profile_label_map
from jobs.core.scoring import QUANTILES, add_rfm_scores, named_segment, quintile_edges
from jobs.definitions import UNCLASSIFIED
from jobs.steps.label import segment_summary
from tests.helpers import REAL_K4, REAL_K5, REAL_K6, UNIT_SCALE, dominates, random_profile

LABELS = ["VIP", "Loyal", "At-Risk", "Low-Value"]
FEATURES = ["recency_days", "frequency", "monetary"]
SNAPSHOT_SCHEMA = "snapshot_date date, customer_id string, recency_days int, frequency int, monetary decimal(20,3)"
DAY = date(2011, 12, 9)
SEGMENT_NAMES = {
    "Champions",
    "Loyal",
    "Potential Loyalist",
    "New",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Can't Lose",
    "Hibernating",
    "Lost",
}


# --- cluster labels -------------------------------------------------------------------------------


def test_default_labels_are_the_configured_ones(settings) -> None:
    assert settings.labels.cluster_labels == LABELS
    assert list(settings.labels.profiles) == LABELS
    assert settings.labels.guard.low == "Low-Value" and settings.labels.guard.high == ["VIP", "Loyal"]


def test_profiles_must_name_each_label_once(settings) -> None:
    raw = settings.labels.model_dump()
    with pytest.raises(ValueError, match="profiles"):
        Labels(**{**raw, "profiles": {k: v for k, v in raw["profiles"].items() if k != "Loyal"}})
    with pytest.raises(ValueError, match="guard"):
        Labels(**{**raw, "guard": {"low": "Lost", "high": ["VIP"]}})


@pytest.mark.parametrize(
    ("clusters", "expected"),
    [
        (REAL_K4, {0: "Low-Value", 1: "At-Risk", 2: "Loyal", 3: "VIP"}),
        (REAL_K5, {0: "At-Risk", 1: "Loyal", 2: "At-Risk", 3: "VIP", 4: "Low-Value"}),
        (REAL_K6, {0: "Loyal", 1: "VIP", 2: "At-Risk", 3: "Loyal", 4: "At-Risk", 5: "Low-Value"}),
    ],
    ids=["k4", "k5", "k6"],
)
def test_real_clusters_get_the_label_their_profile_means(settings, clusters, expected) -> None:
    mapping = profile_label_map(clusters, UNIT_SCALE, settings.labels)
    assert mapping == expected
    lapsed = clusters.loc[clusters["mean_recency_days"].idxmax(), "cluster"]
    assert mapping[lapsed] == "At-Risk", "the customers gone longest are the ones at risk"
    richest = clusters.loc[clusters["mean_monetary"].idxmax(), "cluster"]
    assert mapping[richest] == "VIP"
    assert empty_labels(mapping, settings.labels) == []


@pytest.mark.parametrize("k", [2, 3])
def test_fewer_clusters_than_labels_leave_labels_empty(settings, k: int) -> None:
    clusters = REAL_K4[REAL_K4["cluster"].isin([3, 1, 0][:k])]
    mapping = profile_label_map(clusters, UNIT_SCALE, settings.labels)
    assert len(set(mapping.values())) == k, "each cluster gets a label of its own"
    assert mapping[3] == "VIP" and mapping[1] == "At-Risk"
    assert len(empty_labels(mapping, settings.labels)) == len(LABELS) - k
    assert "Loyal" in empty_labels(mapping, settings.labels)


def test_extra_clusters_take_the_nearest_profiles_label(settings) -> None:
    twin = REAL_K4[REAL_K4["cluster"] == 3].assign(cluster=9, mean_log_frequency=2.6)  # an even stronger VIP
    mapping = profile_label_map(pd.concat([REAL_K4, twin]), UNIT_SCALE, settings.labels)
    assert mapping == {0: "Low-Value", 1: "At-Risk", 2: "Loyal", 3: "VIP", 9: "VIP"}


def test_the_guard_allows_a_recent_low_value_cluster_to_beat_a_lapsed_at_risk_one(settings) -> None:
    # Real 2011-12-09: Low-Value (42.9 days, F 1.52, M 383) does not dominate At-Risk (230 days, 1.47, 413),
    # but on 2011-08-31 it did: recent one-off buyers beat lapsed ones in all three. That is allowed.
    clusters = REAL_K4.assign(mean_monetary=[566.0, 266.0, 1589.12, 9076.55], mean_frequency=[1.95, 1.15, 4.35, 16.0])
    mapping = profile_label_map(clusters, UNIT_SCALE, settings.labels)
    assert mapping[0] == "Low-Value" and mapping[1] == "At-Risk"
    assert dominance_violations(clusters, mapping, settings.labels) == []


def test_the_guard_swaps_a_low_value_cluster_that_dominates_a_loyal_one(settings) -> None:
    # Centroids put cluster 0 nearest Low-Value and cluster 2 nearest Loyal, yet 0 is better in R, F and M.
    clusters = REAL_K4.assign(
        mean_recency_days=[20.0, 229.67, 41.81, 14.6],
        mean_frequency=[5.0, 1.47, 4.35, 16.0],
        mean_monetary=[1600.0, 412.7, 1589.12, 9076.55],
    )
    mapping = {0: "Low-Value", 1: "At-Risk", 2: "Loyal", 3: "VIP"}
    assert dominance_violations(clusters, mapping, settings.labels) == [(0, 2)]
    assert profile_label_map(clusters, UNIT_SCALE, settings.labels) == {
        0: "Loyal",
        1: "At-Risk",
        2: "Low-Value",
        3: "VIP",
    }


@pytest.mark.parametrize("k", range(2, 9))
def test_a_dominating_cluster_is_never_low_value_below_a_vip_or_loyal_one(settings, k: int) -> None:
    checked = 0
    for seed in range(150):
        rng = np.random.default_rng(1000 * k + seed)
        profile = with_log_means(random_profile(rng, k, discrete=seed % 2 == 0))
        unlimited = settings.labels.model_copy(update={"max_profile_distance": float("inf")})
        mapping = profile_label_map(profile, scale_of(profile), unlimited)
        assert sorted(mapping) == sorted(profile["cluster"].tolist())
        assert len(set(mapping.values())) == min(k, len(LABELS)), "every label is used while k allows"
        bounded = profile_label_map(profile, scale_of(profile), settings.labels)  # far clusters: Unprofiled
        for a, b in permutations(profile.itertuples(index=False), 2):
            if dominates(a, b):
                checked += 1
                for labels in (mapping, bounded):
                    assert not (labels[a.cluster] == "Low-Value" and labels[b.cluster] in {"VIP", "Loyal"}), seed
    assert checked > 50  # the property was exercised, not vacuously true


@pytest.mark.parametrize("k", range(2, 9))
def test_labels_follow_the_values_not_the_ids(settings, k: int) -> None:
    rng = np.random.default_rng(k)
    profile = with_log_means(random_profile(rng, k, discrete=False).assign(cluster=range(k)))
    base = profile_label_map(profile, scale_of(profile), settings.labels)
    for _ in range(5):
        ids = rng.permutation(k)
        relabelled = profile_label_map(profile.assign(cluster=ids), scale_of(profile), settings.labels)
        assert [relabelled[i] for i in ids] == [base[i] for i in range(k)]


def with_log_means(profile: pd.DataFrame) -> pd.DataFrame:
    """Log means from the plain means (enough for a centroid's position)."""
    return profile.assign(
        mean_log_recency_days=np.log1p(profile["mean_recency_days"] / 30),
        mean_log_frequency=np.log1p(profile["mean_frequency"]),
        mean_log_monetary=np.log1p(profile["mean_monetary"]),
    )


def scale_of(profile: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    logs = profile[["mean_log_recency_days", "mean_log_frequency", "mean_log_monetary"]].to_numpy()
    sd = logs.std(axis=0)
    return logs.mean(axis=0), np.where(sd > 0, sd, 1.0)


# --- quintile scores and named segments -----------------------------------------------------------


def snapshot(spark, recency: list[int], frequency: list[int], monetary: list[float]):
    rows = [
        (DAY, f"c{i:03d}", r, f, Decimal(str(m)))
        for i, (r, f, m) in enumerate(zip(recency, frequency, monetary, strict=True))
    ]
    return spark.createDataFrame(rows, SNAPSHOT_SCHEMA)


def scored(spark, settings, recency, frequency, monetary) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    frame = snapshot(spark, recency, frequency, monetary)
    edges = quintile_edges(frame, FEATURES)
    out = add_rfm_scores(frame, edges, settings.labels.segment_rules).toPandas()
    return out.sort_values("customer_id").reset_index(drop=True), edges


def expected_scores(values, higher_is_better: bool) -> list[int]:
    """Independent reference: numpy's linear-interpolation percentiles, 1 + edges strictly beaten."""
    values = np.asarray(values, dtype=float)
    edges = np.percentile(values, [q * 100 for q in QUANTILES], method="linear")
    beats = (values[:, None] > edges) if higher_is_better else (values[:, None] < edges)
    return (1 + beats.sum(axis=1)).tolist()


def test_ten_distinct_values_use_every_score_twice_and_ties_share_a_score(spark, settings) -> None:
    recency = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 5, 5]  # 5 three times
    frequency = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 1]
    monetary = [10.5, 20.5, 30.5, 40.5, 50.5, 60.5, 70.5, 80.5, 90.5, 100.5, 10.5, 100.5]
    out, edges = scored(spark, settings, recency[:10], frequency[:10], monetary[:10])
    for column in ("r_score", "f_score", "m_score"):
        assert out[column].value_counts().to_dict() == {s: 2 for s in range(1, 6)}
    assert out["f_score"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert out["r_score"].tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1], "lower recency is better"
    assert edges["frequency"] == pytest.approx([2.8, 4.6, 6.4, 8.2])

    out, _ = scored(spark, settings, recency, frequency, monetary)
    for column, score in (("recency_days", "r_score"), ("frequency", "f_score"), ("monetary", "m_score")):
        assert out[score].between(1, 5).all()
        assert (out.groupby(column)[score].nunique() == 1).all(), f"ties must share {score}"
        higher = column != "recency_days"
        assert out[score].tolist() == expected_scores(out[column].astype(float), higher)
    assert out["rfm_score"].tolist() == [
        f"{r}{f}{m}" for r, f, m in zip(out.r_score, out.f_score, out.m_score, strict=False)
    ]


@pytest.mark.parametrize(
    ("recency", "frequency", "monetary", "r", "f", "m"),
    [
        # one customer: every edge equals its value, nothing is beaten -> all scores 1
        ([12], [3], [99.5], [1], [1], [1]),
        # two customers: the better one beats all four edges
        ([10, 30], [1, 4], [250.0, 50.0], [5, 1], [1, 5], [5, 1]),
        # three customers: edges at 20/40/60/80 % between the three values; equal values tie
        ([3, 1, 2], [2, 2, 7], [1.0, 2.0, 3.0], [1, 5, 3], [1, 1, 5], [1, 3, 5]),
    ],
    ids=["1-customer", "2-customers", "3-customers"],
)
def test_fewer_than_five_customers(spark, settings, recency, frequency, monetary, r, f, m) -> None:
    out, edges = scored(spark, settings, recency, frequency, monetary)
    for column, values in zip(FEATURES, (recency, frequency, monetary), strict=True):
        assert edges[column] == pytest.approx(np.percentile(values, [20, 40, 60, 80], method="linear").tolist())
    assert out["r_score"].tolist() == r == expected_scores(recency, higher_is_better=False)
    assert out["f_score"].tolist() == f == expected_scores(frequency, higher_is_better=True)
    assert out["m_score"].tolist() == m == expected_scores(monetary, higher_is_better=True)
    if len(recency) == 1:
        assert out["rfm_segment"].tolist() == ["Lost"]


def test_segment_rules_cover_every_score_combination(spark, settings) -> None:
    grid = spark.range(1, 6).select(F.col("id").cast("int").alias("r_score"))
    for name in ("f_score", "m_score"):
        grid = grid.crossJoin(spark.range(1, 6).select(F.col("id").cast("int").alias(name)))
    out = grid.withColumn("rfm_segment", named_segment(settings.labels.segment_rules)).toPandas()
    assert len(out) == 125
    assert UNCLASSIFIED not in set(out["rfm_segment"])
    assert set(out["rfm_segment"]) == SEGMENT_NAMES
    out["fm"] = (out["f_score"] + out["m_score"]) // 2
    assert out.groupby(["r_score", "fm"]).ngroups == 25
    assert (out.groupby(["r_score", "fm"])["rfm_segment"].nunique() == 1).all(), "segment depends on (R, FM) only"
    segment = out.set_index(["r_score", "f_score", "m_score"])["rfm_segment"]
    assert segment[(5, 5, 5)] == "Champions"
    assert segment[(1, 1, 1)] == "Lost"
    assert segment[(1, 5, 5)] == "Can't Lose"
    assert segment[(5, 1, 1)] == "New"
    assert segment[(3, 3, 3)] == "Need Attention"
    assert segment[(2, 1, 2)] == "Hibernating"


def test_segment_summary_shares(spark) -> None:
    rows = [
        (DAY, "a", 5, 10, Decimal("1000.000"), "VIP", "Champions"),
        (DAY, "b", 8, 7, Decimal("600.500"), "VIP", "Champions"),
        (DAY, "c", 40, 3, Decimal("200.250"), "Loyal", "Loyal"),
        (DAY, "d", 90, 2, Decimal("80.000"), "At-Risk", "At Risk"),
        (DAY, "e", 200, 1, Decimal("0.000"), "Low-Value", "Lost"),
        (DAY, "f", 150, 1, Decimal("19.250"), "Low-Value", "At Risk"),
    ]
    schema = SNAPSHOT_SCHEMA + ", cluster_label string, rfm_segment string"
    frame = spark.createDataFrame(rows, schema)
    out = segment_summary(frame).toPandas()
    source = pd.DataFrame(rows, columns=[c.split()[0] for c in schema.split(", ")])
    total = float(sum(r[4] for r in rows))
    for scheme, column in (("cluster", "cluster_label"), ("rfm", "rfm_segment")):
        part = out[out["label_scheme"] == scheme].set_index("segment")
        assert part["customer_share"].sum() == pytest.approx(1.0)
        assert part["revenue_share"].sum() == pytest.approx(1.0)
        assert part["customers"].to_dict() == source[column].value_counts().to_dict()
        money = source.assign(m=source["monetary"].astype(float)).groupby(column)["m"].sum()
        assert part["revenue_share"].to_dict() == pytest.approx((money / total).to_dict())
    assert out.set_index(["label_scheme", "segment"]).loc[("cluster", "VIP"), "mean_recency_days"] == 6.5


def test_the_duckdb_and_pandas_summaries_equal_the_spark_reference(spark) -> None:
    """One reference (``segment_summary``, Spark); the bench's DuckDB and the fixture's pandas copies agree with it."""
    import pyarrow as pa

    from harness.bench_dashboard import summarise
    from tests.dashboard_fixture import customers_of, summary_of

    customers = customers_of(DAY, count=300, seed=3)
    reference = segment_summary(spark.createDataFrame(customers)).toPandas()
    key = ["label_scheme", "segment"]
    columns = ["customers", "customer_share", "mean_recency_days", "mean_frequency", "mean_monetary", "revenue_share"]

    def aligned(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.sort_values(key).reset_index(drop=True)
        return frame[key + columns].astype({c: float for c in columns})

    for name, other in (
        ("pandas", summary_of(customers)),
        ("duckdb", summarise(pa.Table.from_pandas(customers)).to_pandas()),
    ):
        pd.testing.assert_frame_equal(aligned(other), aligned(reference), check_exact=False, rtol=1e-9, obj=name)
        assert sorted(other["monetary_total"].astype(float)) == pytest.approx(
            sorted(reference["monetary_total"].astype(float))
        )
