"""Airflow UI as the console: extra links on task instances, and the GX Data Docs served by the API server.

- "MLflow run" (cluster, label) and "Data Docs" (validate): global operator extra links, read
  from the XCom the task pushed (``jobs/orchestration/links.py``). They are evaluated in the API
  server, so a ``@task`` needs no operator subclass; other tasks show them disabled.
- ``/data-docs/``: the validation folder's Data Docs site (a local folder, or objects streamed
  from the bucket when ``paths.validation_dir`` is ``s3://…``), behind the Airflow login (issue 27,
  item 6): every request is authorised by the Airflow auth manager (the UI session's cookie)
  for reading the pipeline DAG's task instances. The pages render landed values as text
  (``jobs.adapters.data_docs``), their CSS/JS are local copies, and a Content-Security-Policy
  forbids anything from another origin.
"""

from __future__ import annotations

from pathlib import Path

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


# A reader's browser: pages and their local assets only; nothing fetched from elsewhere.
DATA_DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'none'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)


def _site_parts(path: str) -> list[str] | None:
    """The parts of a request path within the site, or None when it would leave it."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." or "\\" in p or "\0" in p for p in parts):
        return None
    return parts


def site_file(site: Path, path: str) -> Path | None:
    """The file of ``site`` that ``path`` names (a folder: its ``index.html``), or None: never a
    file outside the site, never through a symlink."""
    parts = _site_parts(path)
    if parts is None:
        return None
    candidate = site.joinpath(*parts)
    if candidate.is_dir() and not candidate.is_symlink():
        candidate = candidate / "index.html"
    current = site
    for part in candidate.relative_to(site).parts:
        current = current / part
        if current.is_symlink():
            return None
    return candidate if candidate.is_file() else None


def site_object(site, path: str) -> tuple[str, int] | None:
    """The key and size of the object of a site on a bucket (a ``UPath``) that ``path`` names (a
    folder: its ``index.html``), or None: never a key outside the site's prefix (no symlinks on
    a bucket). The key is built from the checked parts, never parsed as a URL."""
    parts = _site_parts(path)
    if parts is None:
        return None
    key = "/".join([site.path.rstrip("/"), *parts])
    for candidate in (key, f"{key}/index.html"):
        try:
            info = site.fs.info(candidate)
        except FileNotFoundError:
            continue
        if info.get("type") == "file":
            return candidate, int(info.get("size") or 0)
    return None


CHUNK_BYTES = 1 << 20


def _object_chunks(fs, key: str):
    with fs.open(key, "rb", block_size=CHUNK_BYTES) as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def data_docs_app(site, dag_id: str):
    """The Data Docs ``site`` (a local folder, or a ``UPath`` on a bucket whose objects are
    streamed) as files, each request authorised by the Airflow auth manager: the reader's Airflow
    session (its ``_token`` cookie, or a bearer token) must be allowed to read the task instances
    of ``dag_id``; else 401/403. (``app.state.authorise`` is the dependency.)"""
    import mimetypes

    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse, Response, StreamingResponse

    from jobs.storage import is_remote

    def authorise(user=Depends(get_user)) -> None:  # noqa: B008 (FastAPI's way)
        """The Airflow user (401 without a session) may read the DAG's task instances (else 403)."""
        allowed = get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, details=DagDetails(id=dag_id), user=user
        )
        if not allowed:
            raise HTTPException(status_code=403, detail=f"not allowed to read the task instances of {dag_id}")

    app = FastAPI(title="RFM Data Docs", dependencies=[Depends(authorise)], docs_url=None, redoc_url=None)
    app.openapi_url = None
    app.state.authorise = authorise
    on_bucket = is_remote(site)

    @app.get("/{path:path}")
    def page(path: str) -> Response:
        headers = {"Content-Security-Policy": DATA_DOCS_CSP, "X-Content-Type-Options": "nosniff"}
        if on_bucket:
            found = site_object(site, path)
            if found is None:
                raise HTTPException(status_code=404, detail="not in the Data Docs site")
            key, size = found
            media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            headers["Content-Length"] = str(size)
            return StreamingResponse(_object_chunks(site.fs, key), media_type=media_type, headers=headers)
        local = site_file(site, path)
        if local is None:
            raise HTTPException(status_code=404, detail="not in the Data Docs site")
        return FileResponse(local, headers=headers)

    return app


def _data_docs_app():
    from jobs.adapters.expectations import data_docs_site
    from jobs.config import load_settings

    settings = load_settings()
    return data_docs_app(data_docs_site(settings), settings.dag.dag_id)


class RfmLinksPlugin(AirflowPlugin):
    name = "rfm_links"
    global_operator_extra_links = [MlflowRunLink(), DataDocsLink()]
    fastapi_apps = [{"app": _data_docs_app(), "url_prefix": DATA_DOCS_URL_PREFIX, "name": "RFM Data Docs"}]
