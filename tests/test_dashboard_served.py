"""The dashboard as served (issue 27, item 7): credentials by where it actually listens (gunicorn
included), and the customer table's filters typed and capped, bad input answered 400."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from app.data import FilterLimits, InvalidInput, grid_filter_sql
from tests.conftest import settings_for
from tests.dashboard_fixture import SNAPSHOTS, OffLoopClient, grid_request, write_gold_fixture

ROOT = Path(__file__).resolve().parents[1]
LAST = SNAPSHOTS[-1]
WORKER = ["--workers", "1", "--timeout", "180"]  # a loaded CI machine: a slow first request is no failure


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("served")
    write_gold_fixture(data_dir / "lake")
    return data_dir


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def outside_address() -> str | None:
    """A non-loopback IPv4 address of this machine (None on a machine without one)."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def status(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"} if auth else {})
    try:
        with urllib.request.urlopen(request, timeout=90) as answer:  # noqa: S310 (a local test URL)
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def gunicorn(data_dir: Path, bind: str, *extra: str, env: dict | None = None) -> subprocess.Popen:
    environ = {**os.environ, "RFM__PATHS__DATA_DIR": str(data_dir), **(env or {})}
    command = [sys.executable, "-m", "gunicorn", "--bind", bind, *WORKER, *extra, "app.wsgi:server"]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(url: str, server: subprocess.Popen, seconds: float = 60) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"gunicorn exited {server.returncode}: {server.stdout.read()}")
        try:
            return status(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.3)
    raise AssertionError(f"{url} never answered")


def stop(server: subprocess.Popen) -> str:
    """Stop gunicorn and its workers (its own process group: a worker left behind would hold the pipe)."""
    for signal_number, seconds in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(server.pid, signal_number)
        except ProcessLookupError:
            pass
        try:
            out, _ = server.communicate(timeout=seconds)
            return out
        except subprocess.TimeoutExpired:
            continue
    return ""


def test_gunicorn_on_all_interfaces_without_credentials_refuses_to_serve(data_dir: Path) -> None:
    """``dashboard.host`` says 127.0.0.1 (the default), gunicorn binds 0.0.0.0: the worker sees
    the real socket and refuses to boot, so gunicorn exits and nothing is served."""
    server = gunicorn(data_dir, f"0.0.0.0:{free_port()}")
    try:
        server.wait(timeout=90)
    finally:
        out = stop(server)
    assert server.returncode != 0
    assert "ExposedWithoutAuth" in out and "0.0.0.0" in out


def test_gunicorn_preloaded_on_all_interfaces_answers_403(data_dir: Path) -> None:
    """``--preload`` loads the app before gunicorn binds (no socket to see yet): every request is
    then refused, because the listener it came in on is not loopback."""
    port = free_port()
    server = gunicorn(data_dir, f"0.0.0.0:{port}", "--preload")
    try:
        assert wait_for(f"http://127.0.0.1:{port}/", server) == 403
        outside = outside_address()
        if outside:
            assert status(f"http://{outside}:{port}/") == 403
    finally:
        stop(server)


def test_gunicorn_on_loopback_serves_without_login_and_with_credentials_anywhere(data_dir: Path) -> None:
    port = free_port()
    server = gunicorn(data_dir, f"127.0.0.1:{port}")
    try:
        assert wait_for(f"http://127.0.0.1:{port}/", server) == 200
    finally:
        stop(server)
    port = free_port()
    credentials = {"RFM__DASHBOARD__AUTH_USER": "analyst", "RFM__DASHBOARD__AUTH_PASSWORD": "s3cret"}
    server = gunicorn(data_dir, f"0.0.0.0:{port}", env=credentials)
    try:
        assert wait_for(f"http://127.0.0.1:{port}/", server) == 401
        assert status(f"http://127.0.0.1:{port}/", base64.b64encode(b"analyst:s3cret").decode()) == 200
    finally:
        stop(server)


# --- the customer table's filters ------------------------------------------------------------


@pytest.fixture(scope="module")
def client(data_dir: Path):
    from app.data import SegmentLake
    from app.views import create_app

    settings = settings_for(data_dir)
    app = create_app(SegmentLake.from_settings(settings), settings.dashboard, warm_up=False)
    http = OffLoopClient(app.server.test_client())
    http.get("/")
    return http, settings.dashboard


def with_filter(filter_model) -> dict:
    request = grid_request(LAST.isoformat(), "rfm", 0, 10)
    request["inputs"][0]["value"]["filterModel"] = filter_model
    return request


def number(kind: str, value, **more) -> dict:
    return {"filterType": "number", "type": kind, "filter": value, **more}


def text(kind: str, value) -> dict:
    return {"filterType": "text", "type": kind, "filter": value}


BAD_FILTERS = {
    "wrong-typed-number": ({"monetary": number("greaterThan", "abc")}, "takes a number"),
    "boolean-as-number": ({"frequency": number("equals", True)}, "takes a number"),
    "range-without-end": ({"recency_days": number("inRange", 1)}, "takes a number"),
    "number-on-text": ({"customer_id": number("greaterThan", 5)}, "text filter on customer_id"),
    "text-op-on-number": ({"monetary": text("contains", "1")}, "number filter on monetary"),
    "unknown-column": ({"secret; DROP": text("equals", "x")}, "no filter on column"),
    "unknown-type": ({"country": text("regexp", "x")}, "no condition 'regexp'"),
    "too-many-conditions": (
        {"customer_id": {"operator": "OR", "conditions": [text("equals", str(i)) for i in range(20_000)]}},
        "at most 2 conditions",
    ),
    "too-long": ({"country": text("contains", "x" * 5000)}, "at most 200"),
    "bad-operator": ({"country": {"operator": "XOR", "conditions": [text("equals", "a")]}}, "AND or OR"),
    "not-an-object": (["country"], "must be an object"),
}


@pytest.mark.parametrize(("filter_model", "why"), BAD_FILTERS.values(), ids=BAD_FILTERS.keys())
def test_a_bad_grid_filter_is_a_400_not_a_500(client, filter_model, why) -> None:
    http, _ = client
    answer = http.post("/_dash-update-component", json=with_filter(filter_model))
    assert answer.status_code == 400, answer.get_data(as_text=True)[:300]
    assert why in answer.get_json()["error"]


def test_good_grid_filters_still_filter(client) -> None:
    http, _ = client
    wide = http.post("/_dash-update-component", json=with_filter({}))
    narrow = http.post(
        "/_dash-update-component",
        json=with_filter(
            {
                "monetary": number("inRange", 100, filterTo=1e9),
                "last_purchase_date": text("startsWith", "2011"),
                "country": {"operator": "OR", "conditions": [text("equals", "France"), text("equals", "EIRE")]},
            }
        ),
    )
    assert wide.status_code == narrow.status_code == 200
    rows = narrow.get_json()["response"]["customer-grid"]["getRowsResponse"]
    total = wide.get_json()["response"]["customer-grid"]["getRowsResponse"]["rowCount"]
    assert 0 < rows["rowCount"] < total
    assert all(r["country"] in ("France", "EIRE") and r["monetary"] >= 100 for r in rows["rowData"])


def test_the_caps_come_from_conf() -> None:
    limits = FilterLimits(max_conditions=3, max_chars=5)
    three = {"customer_id": {"operator": "OR", "conditions": [text("equals", "a")] * 3}}
    assert grid_filter_sql(three, limits)[1] == ["a", "a", "a"]
    with pytest.raises(InvalidInput, match="at most 5"):
        grid_filter_sql({"country": text("equals", "abcdef")}, limits)
