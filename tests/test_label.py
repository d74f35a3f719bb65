"""Labelling: cluster labels follow the R/F/M values (never the ids), quintile scores and named segments."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from itertools import permutations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from jobs.core.scoring import QUANTILES, add_rfm_scores, named_segment, quintile_edges
from jobs.definitions import UNCLASSIFIED
from jobs.steps.label import (
    cluster_label_map,
    labels_per_rank,
    segment_summary,
)
from tests.helpers import dominates, random_profile

LABELS = ["VIP", "Loyal", "At-Risk", "Low-Value"]
FEATURES = ["recency_days", "frequency", "monetary"]
SNAPSHOT_SCHEMA = "snapshot_date date, customer_id string, recency_days int, frequency int, monetary decimal(20,3)"
DAY = date(2011, 12, 9)
SEGMENT_NAMES = {
    "Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Need Attention",
    "About to Sleep", "At Risk", "Can't Lose", "Hibernating", "Lost",
}  # fmt: skip


# --- cluster labels -------------------------------------------------------------------------------


def test_default_labels_are_the_configured_ones(settings) -> None:
    assert settings.labels.cluster_labels == LABELS


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (2, ["VIP", "Low-Value"]),
        (3, ["VIP", "Loyal", "Low-Value"]),
        (4, ["VIP", "Loyal", "At-Risk", "Low-Value"]),
        (5, ["VIP", "Loyal", "Loyal", "At-Risk", "Low-Value"]),
        (6, ["VIP", "Loyal", "Loyal", "At-Risk", "At-Risk", "Low-Value"]),
        (7, ["VIP", "Loyal", "Loyal", "At-Risk", "At-Risk", "Low-Value", "Low-Value"]),
        (8, ["VIP", "VIP", "Loyal", "Loyal", "At-Risk", "At-Risk", "Low-Value", "Low-Value"]),
    ],
)
def test_labels_per_rank(k: int, expected: list[str]) -> None:
    got = labels_per_rank(k, LABELS)
    assert got == expected
    order = [LABELS.index(label) for label in got]
    assert order == sorted(order), "labels must never improve down the ranks"
    assert got[0] == "VIP" and got[-1] == "Low-Value"
    if k >= len(LABELS):
        assert set(got) == set(LABELS)


@pytest.mark.parametrize("k", [1, 0, -3])
def test_labels_per_rank_needs_two_clusters(k: int) -> None:
    with pytest.raises(ValueError):
        labels_per_rank(k, LABELS)


@pytest.mark.parametrize("k", range(2, 9))
def test_a_dominating_cluster_never_gets_a_lower_label(settings, k: int) -> None:
    labels = settings.labels.cluster_labels
    checked = 0
    for seed in range(150):
        rng = np.random.default_rng(1000 * k + seed)
        profile = random_profile(rng, k, discrete=seed % 2 == 0)
        mapping = cluster_label_map(profile, labels)
        assert sorted(mapping) == sorted(profile["cluster"].tolist())
        assert sorted(mapping.values(), key=labels.index) == labels_per_rank(k, labels)
        rows = list(profile.itertuples(index=False))
        for a, b in permutations(rows, 2):
            if dominates(a, b):
                checked += 1
                assert labels.index(mapping[a.cluster]) <= labels.index(mapping[b.cluster]), (seed, profile)
    assert checked > 50  # the property was exercised, not vacuously true


def test_obvious_vip_and_low_value(settings) -> None:
    profile = pd.DataFrame(
        {
            "cluster": [2, 0, 3, 1],
            "customers": [40, 900, 300, 500],
            "mean_recency_days": [300.0, 40.0, 5.0, 120.0],
            "mean_frequency": [1.0, 6.0, 25.0, 2.0],
            "mean_monetary": [80.0, 1500.0, 9000.0, 300.0],
        }
    )
    assert cluster_label_map(profile, settings.labels.cluster_labels) == {
        3: "VIP",
        0: "Loyal",
        1: "At-Risk",
        2: "Low-Value",
    }


@pytest.mark.parametrize("k", range(2, 9))
def test_labels_follow_the_values_not_the_ids(settings, k: int) -> None:
    labels = settings.labels.cluster_labels
    rng = np.random.default_rng(k)
    profile = random_profile(rng, k, discrete=False).assign(cluster=range(k))
    base = cluster_label_map(profile, labels)
    for _ in range(5):
        ids = rng.permutation(k)
        relabelled = cluster_label_map(profile.assign(cluster=ids), labels)
        assert [relabelled[i] for i in ids] == [base[i] for i in range(k)]


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

    from app.bench import summarise
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
