"""The clustering features, defined once: log1p of recency (in ``clustering.recency_unit_days``),
frequency and monetary. The same SQL runs as the first stage of the registered pipeline model
(so a loaded model takes raw R, F, M) and in the label step's centroid matching."""

from __future__ import annotations

from pyspark.ml.feature import SQLTransformer
from pyspark.sql import Column
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
