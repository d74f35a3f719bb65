"""Data Docs as served (issue 27 item 6, issue 30 item 4): a landed payload renders as text in
Chromium (no script runs), the pages load nothing from another origin, and the plugin serves
them only to an Airflow session allowed to read the DAG."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import pytest

from jobs.adapters.data_docs import escape_landed, localise_page, remote_references

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = "<img src=x onerror=alert(document.domain)>"
SCRIPT = "<script>alert('s')</script>"


def plugin():
    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    try:
        import rfm_links
    finally:
        sys.path.remove(str(REPO_ROOT / "plugins"))
    return rfm_links


def test_every_landed_string_is_escaped_once() -> None:
    observed = {"partial_unexpected_list": [PAYLOAD, 3], "details": {"file": "<b>.csv"}, "n": 1}
    assert escape_landed(observed) == {
        "partial_unexpected_list": ["&lt;img src=x onerror=alert(document.domain)&gt;", 3],
        "details": {"file": "&lt;b&gt;.csv"},
        "n": 1,
    }


def test_cdn_links_become_local_copies(tmp_path: Path) -> None:
    page = tmp_path / "validations" / "s" / "d" / "p.html"
    page.parent.mkdir(parents=True)
    page.write_text(
        '<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>'
        '<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>'
        '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script><a href="https://example.org/">docs</a>'
    )
    assert localise_page(page, tmp_path)
    text = page.read_text()
    assert '<link rel="stylesheet" href="../../../static/vendor/css/bootstrap.min.css">' in text
    assert '<script src="../../../static/vendor/js/jquery.min.js"></script>' in text
    assert "vega" not in text and '<a href="https://example.org/">' in text  # links to read stay
    assert remote_references(page) == []


# --- the plugin: behind the Airflow login --------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>index</p>")
    (tmp_path / "secret.txt").write_text("outside")
    (tmp_path / "site" / "link.html").symlink_to(tmp_path / "secret.txt")
    return tmp_path / "site"


PLUGIN_PROBE = """
import sys
from pathlib import Path
sys.path.insert(0, "plugins")
from airflow import settings
from airflow.models.revoked_token import RevokedToken
RevokedToken.__table__.create(settings.engine)  # the one table token checks read
from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from fastapi.testclient import TestClient
import rfm_links
http = TestClient(rfm_links.data_docs_app(Path(sys.argv[1]), "rfm_segmentation"))
manager = create_auth_manager()  # the configured (simple) one; not init(): no password file written
admin = manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
nobody = manager.generate_jwt(SimpleAuthManagerUser(username="nobody", role=None))
seen = [http.get("/").status_code, http.get("/", headers={"Authorization": "Bearer not-a-token"}).status_code]
http.cookies.set("_token", nobody)
seen.append(http.get("/").status_code)
http.cookies.set("_token", admin)  # the UI session's cookie
answer = http.get("/")
seen += [answer.status_code, answer.text, "default-src 'self'" in answer.headers.get("content-security-policy", "")]
seen += [http.get("/link.html").status_code, http.get("/..%2Fsecret.txt").status_code]
print(seen)
"""


@pytest.mark.airflow
def test_the_plugin_serves_data_docs_only_to_an_authorised_airflow_session(site: Path, tmp_path: Path) -> None:
    """In its own Airflow home (an sqlite DB with the revoked-token table): no session 401, a bad
    token 401/403, a user without the DAG 403, the admin's UI cookie 200 with a CSP; a symlink or
    a path out of the site 404."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "a-test-secret-of-enough-length-for-hs512-signing-0123456789abcdef",
    }
    out = subprocess.run(
        [sys.executable, "-c", PLUGIN_PROBE, str(site)], capture_output=True, text=True, cwd=REPO_ROOT, env=env
    )
    seen = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-3000:]
    assert seen in (
        "[401, 403, 403, 200, '<p>index</p>', True, 404, 404]",
        "[401, 401, 403, 200, '<p>index</p>', True, 404, 404]",
    ), seen


# --- the real page in Chromium ------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.spark
@pytest.mark.browser
def test_a_landed_payload_renders_as_text_in_chromium_and_nothing_loads_from_elsewhere(spark, settings, page) -> None:
    import pandas as pd
    import uvicorn

    from jobs.adapters.expectations import data_docs_site, day_page
    from jobs.adapters.landing import write_day
    from jobs.errors import DataValidationError
    from jobs.steps.validate import validate_day

    day = date(2011, 3, 1)
    header = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
    line = ["85123A", "T-LIGHT HOLDER", "6", "2011-03-01 08:26:00", "2.55", "17850", "France"]
    rows = [[f"5400{i:02d}", *line] for i in range(10)]
    frame = pd.DataFrame(rows, columns=header)
    frame.loc[3, "Quantity"], frame.loc[5, "Quantity"] = PAYLOAD, SCRIPT
    write_day(settings.path("landing_dir"), day, frame, settings.landing.marker, settings.landing.format)
    with pytest.raises(DataValidationError):  # 2 of 10 rows: above the quarantine share, the day fails
        validate_day(day, settings, spark)
    site = data_docs_site(settings)
    pages = sorted(site.rglob("*.html"))
    assert day_page(settings, day) in pages and all(remote_references(p) == [] for p in pages)

    app = plugin().data_docs_app(site, "rfm_segmentation")
    app.dependency_overrides[app.state.authorise] = lambda: None  # the login is the test above
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    try:
        while not server.started:
            time.sleep(0.05)
        dialogs, elsewhere = [], []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(f"http://127.0.0.1:{port}/")
                else (elsewhere.append(route.request.url), route.abort())
            ),
        )
        base = f"http://127.0.0.1:{port}"
        page.goto(f"{base}/index.html")
        assert page.get_by_text(day.isoformat()).count() > 0  # the index lists the validation
        page.goto(f"{base}/{day_page(settings, day).relative_to(site).as_posix()}")
        page.wait_for_load_state("load")
        assert page.get_by_text(PAYLOAD, exact=True).count() > 0  # the value, shown as text
        assert page.get_by_text(SCRIPT, exact=True).count() > 0
        assert page.locator("img[src=x]").count() == 0
        styled = page.evaluate(
            "() => [typeof window.jQuery, [...document.styleSheets].filter(s => s.href && "
            "s.href.endsWith('bootstrap.min.css')).map(s => s.cssRules.length)[0] || 0]"
        )
        time.sleep(0.5)
        assert dialogs == [] and elsewhere == []
        assert styled[0] == "function" and styled[1] > 1000  # jQuery and Bootstrap's CSS, from the site
    finally:
        server.should_exit = True
