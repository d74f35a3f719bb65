"""The pipeline's steps, one module per DAG task: extract -> transform -> load for one run date.

Steps never import each other; what two of them share lives in ``jobs.core`` (pure) or
``jobs.adapters`` (I/O). ``python -m jobs <step> --run-date D`` runs one on its own.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    """A runnable step: the function ``module.function(run_date)`` and what it does."""

    module: str
    function: str
    description: str


STEPS = {
    "validate": Step("jobs.steps.validate", "validate_day", "Validate one landed day with Great Expectations."),
    "ingest": Step(
        "jobs.steps.ingest", "ingest_day", "Ingest a validated day into bronze and compute its RFM snapshot."
    ),
    "cluster": Step("jobs.steps.cluster", "cluster_day", "Cluster one RFM snapshot and log the model to MLflow."),
    "label": Step("jobs.steps.label", "label_day", "Label the customers of one snapshot and write the gold tables."),
    "eda": Step(
        "jobs.steps.eda", "eda_day", "Write the EDA report (HTML + PNG charts) of one snapshot, also to MLflow."
    ),
}


def load_step(name: str) -> Callable[..., dict[str, Any]]:
    """The function of the step called ``name`` (imported on demand: a DAG parse imports no step)."""
    step = STEPS[name]
    return getattr(importlib.import_module(step.module), step.function)
