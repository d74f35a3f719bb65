"""The clustering features, defined once: log1p of recency (in ``clustering.recency_unit_days``),
frequency and monetary. The same SQL runs as the first stage of the registered pipeline model
(so a loaded model takes raw R, F, M) and in the centroid matching (label step; the cluster step's
idle-customer agreement)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.config import Clustering
from jobs.definitions import RFM_MEASURES


def log_feature_sql(clustering: Clustering) -> dict[str, str]:
    """Output column ``log_<feature>`` -> its SQL expression over the raw RFM columns."""
    expressions = {}
    for name in RFM_MEASURES:
        value = f"CAST({name} AS DOUBLE)"
        if name == "recency_days" and clustering.recency_unit_days != 1:
            value = f"{value} / {clustering.recency_unit_days}"
        expressions[f"log_{name}"] = f"log1p({value})"
    return expressions


def log_feature_transformer(clustering: Clustering) -> SQLTransformer:
    """The pipeline stage that adds the ``log_*`` columns."""
    selected = ", ".join(f"{sql} AS {column}" for column, sql in log_feature_sql(clustering).items())
    return SQLTransformer(statement=f"SELECT *, {selected} FROM __THIS__")


def log_feature_columns(clustering: Clustering) -> list[Column]:
    """The ``log_*`` columns as expressions, for frames outside the model."""
    return [F.expr(sql).alias(column) for column, sql in log_feature_sql(clustering).items()]


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
    row = (
        snapshot.select(*log_feature_columns(clustering))
        .agg(*[F.avg(x) for x in logs], *[F.stddev_pop(x) for x in logs])
        .first()
    )
    center = np.array(row[: len(RFM_MEASURES)], dtype=float)
    sd = np.array(row[len(RFM_MEASURES) :], dtype=float)
    return center, np.where(sd > 0, sd, 1.0)


def idle_customers(previous: DataFrame, current: DataFrame, days: int) -> DataFrame:
    """Customers of both snapshots who bought nothing in between: F and M unchanged, R older by
    ``days`` (the label step's stability population). Columns: customer_id and the previous
    snapshot's ``cluster_label`` as ``previous_label``."""
    before = previous.select(
        "customer_id",
        F.col("cluster_label").alias("previous_label"),
        *[F.col(name).alias(f"{name}_before") for name in RFM_MEASURES],
    )
    idle = before.join(current.select("customer_id", *RFM_MEASURES), "customer_id").filter(
        (F.col("frequency") == F.col("frequency_before"))
        & (F.col("monetary") == F.col("monetary_before"))
        & (F.col("recency_days") == F.col("recency_days_before") + F.lit(days))
    )
    return idle.select("customer_id", "previous_label")
