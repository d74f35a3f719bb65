"""The harnesses' bucket: which locations go on it, and what the S3 server counted.

``make fault-injection FAULTS_ARGS=--storage-outage`` and ``make bench-pipeline STORAGE=s3`` put
every location that can live on a bucket there, as ``tests/test_object_storage_nights.py`` does:
the lake, the EDA reports, the exports and the MLflow artifacts, through the ``RFM__PATHS__*``
variables a step process reads (and the settings of the harness process itself).
"""

from __future__ import annotations

import re
import urllib.request
from typing import Any

from jobs.config import Settings

# the lake and what the steps publish; the harnesses keep landing and validation results local so their
# figures and restores stay comparable with the runs before issue 29 (BucketDeployment puts the whole data dir on a bucket)
ON_THE_BUCKET = ("lake_dir", "reports_dir", "exports_dir")
REQUESTS = re.compile(r'^SeaweedFS_s3_request_seconds_(count|sum)\{bucket="[^"]*",type="([^"]+)"\} (\S+)$', re.M)


def locations(root: str) -> dict[str, str]:
    """``ON_THE_BUCKET`` under ``root`` (``s3://bucket/prefix``): ``lake_dir`` -> ``<root>/lake``."""
    return {name: f"{root}/{name.removesuffix('_dir')}" for name in ON_THE_BUCKET}


def bucket_env(root: str) -> dict[str, str]:
    """The environment putting ``ON_THE_BUCKET`` and the MLflow artifacts under ``root`` (a step
    process also needs the server's endpoint and keys: ``S3Server.env``)."""
    env = {f"RFM__PATHS__{name.upper()}": uri for name, uri in locations(root).items()}
    return {**env, "RFM__MLFLOW__ARTIFACTS_DESTINATION": f"{root}/mlflow"}


def on_bucket(settings: Settings, endpoint_url: str, root: str) -> Settings:
    """``settings`` with ``ON_THE_BUCKET`` and the MLflow artifacts under ``root`` on ``endpoint_url``."""
    return settings.model_copy(
        update={
            "paths": settings.paths.model_copy(update=locations(root)),
            "storage": settings.storage.model_copy(update={"endpoint_url": endpoint_url}),
            "mlflow": settings.mlflow.model_copy(update={"artifacts_destination": f"{root}/mlflow"}),
        }
    )


def request_counts(metrics_url: str) -> dict[str, dict[str, Any]]:
    """The S3 requests the server has answered so far, by type (GET, PUT, LIST, HEAD, DELETE, ...):
    their count and the seconds the server spent on them (SeaweedFS's Prometheus counters)."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    counts: dict[str, dict[str, Any]] = {}
    for kind, request, value in REQUESTS.findall(text):
        entry = counts.setdefault(request, {"count": 0, "seconds": 0.0})
        entry["count" if kind == "count" else "seconds"] += int(float(value)) if kind == "count" else float(value)
    return counts


def requests_between(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the server answered between two ``request_counts``, by type (types with none left out)."""
    spent = {}
    for request, now in after.items():
        then = before.get(request, {"count": 0, "seconds": 0.0})
        if now["count"] > then["count"]:
            spent[request] = {
                "count": now["count"] - then["count"],
                "seconds": round(now["seconds"] - then["seconds"], 3),
            }
    return spent
