"""Links from a task instance in the Airflow UI to what it produced: the night's MLflow run, the day's Data Docs.

A task pushes the URL as an XCom (``push_*``); ``plugins/rfm_links.py`` turns the XCom into an
extra-link button on the task instance. The Data Docs are served by the same plugin inside the
Airflow API server under ``DATA_DOCS_URL_PREFIX``, so the link is a path on the Airflow host.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from jobs.adapters import tracking
from jobs.adapters.expectations import data_docs_site, site_pages
from jobs.config import Settings
from jobs.definitions import DATA_DOCS_URL_KEY, DATA_DOCS_URL_PREFIX, MLFLOW_RUN_URL_KEY

DEFAULT_MLFLOW_UI = tracking.DEFAULT_MLFLOW_UI  # `make mlflow-ui`


def mlflow_ui_base(settings: Settings) -> str:
    """The MLflow UI: ``mlflow.ui_url``, else the tracking server, else `make mlflow-ui`'s address."""
    return tracking.ui_base(settings)


def mlflow_run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return tracking.run_url(settings, experiment_id, run_id)


def data_docs_url(settings: Settings, day: date) -> str | None:
    """The path of the day's Data Docs page under the Airflow API server (None before one is built);
    the site is a local folder or on the bucket."""
    pages = site_pages(data_docs_site(settings), day)
    return f"{DATA_DOCS_URL_PREFIX}/{pages[-1]}" if pages else None


def push_mlflow_link(ti: Any, settings: Settings, run_id: str | None) -> None:
    """XCom for the task's "MLflow run" button."""
    if run_id:
        ti.xcom_push(key=MLFLOW_RUN_URL_KEY, value=mlflow_run_url(settings, tracking.experiment_id(settings), run_id))


def push_data_docs_link(ti: Any, settings: Settings, ds: str) -> None:
    """XCom for the task's "Data Docs" button (also after a failed validation: that page matters most)."""
    url = data_docs_url(settings, date.fromisoformat(ds))
    if url:
        ti.xcom_push(key=DATA_DOCS_URL_KEY, value=url)
