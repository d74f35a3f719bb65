"""Validation results and Data Docs on the bucket (issue 29): ``paths.validation_dir`` on a real
S3 server (SeaweedFS, the ``s3`` fixture). GX runs in a temporary local project seeded from the
bucket; nothing is left under the local data dir. No Spark: the suite runs on pandas frames
shaped as ``validation_frame`` makes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from harness.bench_validation_bucket import day_frame
from jobs.adapters import gx_bucket
from jobs.adapters.expectations import SuiteRunner, check_day, data_docs_site, day_page, read_latest_report
from jobs.definitions import DATA_DOCS_URL_PREFIX
from jobs.orchestration import alerts, links
from tests.conftest import s3_settings

pytestmark = pytest.mark.s3

REPO_ROOT = Path(__file__).resolve().parents[1]
DAY, NEXT_DAY = date(2011, 3, 1), date(2011, 3, 2)
PAYLOAD = "<img src=x onerror=alert(1)>"


def validate(settings, day: date, frame: pd.DataFrame | None = None):
    """One night's validation as ``validate_day`` runs it after Spark: check, build, close."""
    with SuiteRunner(settings) as runner:
        report = check_day(runner, day_frame(day) if frame is None else frame, day, f"fingerprint-{day}")
        runner.build_data_docs([day])
    assert not runner.project.exists(), "the temporary GX project is removed at close"
    return report, runner


def bucket_keys(s3, settings) -> dict[str, dict]:
    """The objects under the validation dir: relative key -> (ETag, size)."""
    prefix = str(settings.path("validation_dir")).removeprefix("s3://lake/") + "/"
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket="lake", Prefix=prefix)
    return {
        o["Key"].removeprefix(prefix): {"etag": o["ETag"], "size": o["Size"]}
        for page in pages
        for o in page.get("Contents", [])
    }


@pytest.fixture
def bucket_settings(s3, tmp_path):
    return s3_settings(s3, tmp_path / "data", uuid.uuid4().hex)


def test_a_validated_day_leaves_its_results_and_pages_on_the_bucket_and_nothing_local(
    bucket_settings, s3, tmp_path
) -> None:
    report, runner = validate(bucket_settings, DAY)
    assert report.success, report.failures
    data_dir = tmp_path / "data"
    assert not data_dir.exists() or not any(data_dir.rglob("*")), list(data_dir.rglob("*"))
    assert not runner.project.is_relative_to(data_dir)

    keys = bucket_keys(s3, bucket_settings)
    results = f"results/date={DAY.isoformat()}/"
    assert f"{results}latest.json" in keys
    assert [k for k in keys if k.startswith(f"{results}result-") and k.endswith(".json")]
    assert report.result_file.startswith("s3://lake/") and report.result_file.endswith(".json")
    stored = [k for k in keys if k.startswith(f"{gx_bucket.VALIDATIONS}/transactions/{DAY.isoformat()}/")]
    assert len(stored) == 1 and stored[0].endswith(".json")
    site = gx_bucket.SITE + "/"
    page = [k for k in keys if k.startswith(f"{site}validations/transactions/{DAY.isoformat()}/")]
    assert len(page) == 1 and page[0].endswith(".html")
    assert f"{site}index.html" in keys and f"{site}static/vendor/css/bootstrap.min.css" in keys

    kept = read_latest_report(bucket_settings, DAY)  # read back from the bucket
    assert kept is not None and kept.success and kept.landing_fingerprint == f"fingerprint-{DAY}"
    assert kept.result_file == report.result_file
    result = json.loads((bucket_settings.path("validation_dir") / keys_of(report)).read_text())
    assert result["great_expectations"]["success"] is True

    found = day_page(bucket_settings, DAY)
    assert str(found) == f"{data_docs_site(bucket_settings)}/{page[0].removeprefix(site)}"
    assert links.data_docs_url(bucket_settings, DAY) == f"{DATA_DOCS_URL_PREFIX}/{page[0].removeprefix(site)}"
    assert links.data_docs_url(bucket_settings, NEXT_DAY) is None and day_page(bucket_settings, NEXT_DAY) is None
    assert alerts.data_docs_url(bucket_settings).endswith(f"{DATA_DOCS_URL_PREFIX}/index.html")
    configured = bucket_settings.model_copy(
        update={"alerts": bucket_settings.alerts.model_copy(update={"data_docs_url": "https://docs.example/dq/"})}
    )
    assert alerts.data_docs_url(configured) == "https://docs.example/dq/"


def keys_of(report) -> str:
    """The result file's key under the validation dir."""
    return "results/" + report.result_file.split("/results/", 1)[1]


def test_a_second_day_keeps_the_first_days_page_and_the_index_lists_both(bucket_settings, s3, monkeypatch) -> None:
    validate(bucket_settings, DAY)
    before = bucket_keys(s3, bucket_settings)
    put: list[str] = []
    publish = gx_bucket.BucketProject.publish

    def recorded(self) -> list[str]:
        put.extend(publish(self))
        return put

    monkeypatch.setattr(gx_bucket.BucketProject, "publish", recorded)
    validate(bucket_settings, NEXT_DAY)
    after = bucket_keys(s3, bucket_settings)

    assert set(before) <= set(after)  # nothing deleted
    unchanged = {k: v for k, v in before.items() if not k.endswith("index.html")}
    assert all(after[k] == v for k, v in unchanged.items())  # the first day's page and result untouched
    # the night put its result, its page and the index, the index last; no static asset, no other page
    day = NEXT_DAY.isoformat()
    assert [p.split("/")[2] for p in put[:-1]] == ["validations", "data_docs"], put
    assert put[0].startswith(f"{gx_bucket.VALIDATIONS}/transactions/{day}/")
    assert put[1].startswith(f"{gx_bucket.SITE}/validations/transactions/{day}/")
    assert put[-1] == gx_bucket.INDEX
    index = (data_docs_site(bucket_settings) / "index.html").read_text()
    assert DAY.isoformat() in index and day in index
    assert day_page(bucket_settings, DAY) is not None and day_page(bucket_settings, NEXT_DAY) is not None


def test_a_missing_static_asset_is_put_again(bucket_settings, s3) -> None:
    validate(bucket_settings, DAY)
    prefix = str(bucket_settings.path("validation_dir")).removeprefix("s3://lake/")
    asset = f"{prefix}/{gx_bucket.STATIC}/vendor/js/jquery.min.js"
    s3.client().delete_object(Bucket="lake", Key=asset)
    validate(bucket_settings, NEXT_DAY)
    assert s3.client().head_object(Bucket="lake", Key=asset)["ContentLength"] > 10_000


def test_a_landed_payload_is_escaped_on_the_bucket_page(bucket_settings) -> None:
    report, _ = validate(bucket_settings, DAY, day_frame(DAY, rows=100, quantity_raw=PAYLOAD))
    assert report.quarantined_rows == 1, report
    text = day_page(bucket_settings, DAY).read_text()
    assert "&amp;lt;img src=x" in text or "&lt;img src=x" in text
    assert PAYLOAD not in text
    raw = read_latest_report(bucket_settings, DAY)
    assert raw.quarantined[0]["source_row"] == 1


def test_a_failed_run_removes_the_temporary_project_and_publishes_nothing(bucket_settings, s3) -> None:
    with pytest.raises(RuntimeError, match="stop"), SuiteRunner(bucket_settings) as runner:
        runner.run(day_frame(DAY), DAY)
        raise RuntimeError("stop")
    assert not runner.project.exists()
    assert bucket_keys(s3, bucket_settings) == {}


PLUGIN_PROBE = """
import sys
sys.path.insert(0, "plugins")
from fastapi.testclient import TestClient
import rfm_links
from jobs.adapters.expectations import data_docs_site
from jobs.config import load_settings
site = data_docs_site(load_settings())
app = rfm_links.data_docs_app(site, "rfm_segmentation")
http = TestClient(app)
seen = [http.get("/").status_code]  # no session: the login still guards the bucket's site
app.dependency_overrides[app.state.authorise] = lambda: None
index, page = http.get("/"), http.get(sys.argv[1])
seen += [index.status_code, "landed-transactions" in index.text, index.headers["content-type"]]
seen += [page.status_code, len(page.content) == int(page.headers["content-length"]) > 1000]
seen += ["default-src 'self'" in page.headers.get("content-security-policy", "")]
seen += [http.get("/validations").status_code]  # a folder without an index
seen += [http.get(p).status_code for p in ("/../results/date=2011-03-01/latest.json", "/..%2F..%2Fresults",
         "/static/%2E%2E/%2E%2E/index.html", "/s3:/lake/x", "/nothing.html")]
print(seen)
"""


@pytest.mark.airflow
def test_the_plugin_serves_the_site_from_the_bucket_and_refuses_leaving_it(bucket_settings, s3, tmp_path) -> None:
    validate(bucket_settings, DAY)
    page = links.data_docs_url(bucket_settings, DAY).removeprefix(DATA_DOCS_URL_PREFIX)
    env = {
        **os.environ,
        **s3.env,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "a-test-secret-of-enough-length-for-hs512-signing-0123456789abcdef",
        "RFM__PATHS__DATA_DIR": str(tmp_path / "data"),
        "RFM__PATHS__VALIDATION_DIR": str(bucket_settings.path("validation_dir")),
        "RFM__STORAGE__ENDPOINT_URL": s3.endpoint_url,
    }
    out = subprocess.run(
        [sys.executable, "-c", PLUGIN_PROBE, page], capture_output=True, text=True, cwd=REPO_ROOT, env=env
    )
    seen = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-3000:]
    assert seen == "[401, 200, True, 'text/html; charset=utf-8', 200, True, True, 404, 404, 404, 404, 404, 404]", seen
