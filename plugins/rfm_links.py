"""Airflow UI as the console: extra links on task instances, and the GX Data Docs served by the API server.

- "MLflow run" (cluster, label) and "Data Docs" (validate): global operator extra links, read
  from the XCom the task pushed (``jobs/orchestration/links.py``). They are evaluated in the API
  server, so a ``@task`` needs no operator subclass; other tasks show them disabled.
- ``/data-docs/``: the validation folder's Data Docs site as static files. It is served without
  Airflow login, like the files themselves on the host: keep the API server on loopback
  (``make prod-local``, ``make airflow``) or behind the proxy that authenticates users.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from jobs.definitions import DATA_DOCS_URL_KEY, DATA_DOCS_URL_PREFIX, MLFLOW_RUN_URL_KEY


class _XComLink(BaseOperatorLink):
    """A link whose URL the task pushed as an XCom under ``xcom_key``."""

    name = ""
    key = ""

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.serialization.definitions.operatorlink import XComOperatorLink

        return XComOperatorLink(name=self.name, xcom_key=self.key).get_link(operator, ti_key=ti_key)


class MlflowRunLink(_XComLink):
    name = "MLflow run"
    key = MLFLOW_RUN_URL_KEY


class DataDocsLink(_XComLink):
    name = "Data Docs"
    key = DATA_DOCS_URL_KEY


def _data_docs_app():
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from jobs.adapters.expectations import data_docs_site
    from jobs.config import load_settings

    app = FastAPI(title="RFM Data Docs")
    app.mount("/", StaticFiles(directory=data_docs_site(load_settings()), html=True, check_dir=False))
    return app


class RfmLinksPlugin(AirflowPlugin):
    name = "rfm_links"
    global_operator_extra_links = [MlflowRunLink(), DataDocsLink()]
    fastapi_apps = [{"app": _data_docs_app(), "url_prefix": DATA_DOCS_URL_PREFIX, "name": "RFM Data Docs"}]
