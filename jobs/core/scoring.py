"""Classic RFM scoring: quintile edges of a snapshot, 1-5 scores against them, named segments."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.config import SegmentRule
from jobs.definitions import FREQUENCY, MONETARY, RECENCY, UNCLASSIFIED

QUANTILES = [0.2, 0.4, 0.6, 0.8]


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
        snapshot.withColumn("r_score", score(RECENCY, edges[RECENCY], higher_is_better=False))
        .withColumn("f_score", score(FREQUENCY, edges[FREQUENCY], higher_is_better=True))
        .withColumn("m_score", score(MONETARY, edges[MONETARY], higher_is_better=True))
    )
    return scored.withColumn(
        "rfm_score", F.concat(*[F.col(c).cast("string") for c in ("r_score", "f_score", "m_score")])
    ).withColumn("rfm_segment", named_segment(rules))
