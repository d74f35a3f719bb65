"""Served pages render landed values as text (issue 27, item 6): the EDA report quotes landed
product descriptions and country names in its tables; they must reach the page escaped."""

from __future__ import annotations

import html
import threading
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from app.data import SegmentLake
from app.views import create_app
from jobs.steps.eda import Section, render_html
from tests import dashboard_fixture
from tests.conftest import settings_for

PAYLOAD = "<img src=x onerror=alert(document.domain)>"
SCROLL_TO_COUNTRY = """() => {
  try {
    dash_ag_grid.getApi("customer-grid").ensureColumnVisible("country");
    return true;
  } catch (notRendered) {
    return false;
  }
}"""


def test_the_eda_report_escapes_landed_values(tmp_path: Path) -> None:
    (tmp_path / "top.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    table = pd.DataFrame({"stock_code": ["85123A", "X<1>"], "description": [PAYLOAD, "A & B"], "revenue": [1.0, 2.0]})
    page = render_html(
        date(2011, 12, 9),
        "run<1>",
        {"top <product>": PAYLOAD},
        [Section("Top <b>products</b>", "top.png", table)],
        tmp_path,
    )
    assert "<img src=x" not in page and "<b>products" not in page and "run<1>" not in page
    assert page.count(html.escape(PAYLOAD, quote=False)) == 2  # the table cell and the figure, as text
    assert "A &amp; B" in page and "X&lt;1&gt;" in page


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium"}


@pytest.fixture(scope="module")
def hostile_lake(tmp_path_factory) -> Iterator[Path]:
    """The dashboard fixture whose second-commonest country is the payload (a landed value that
    reaches gold through ingest: the country column is not validated against a list)."""
    data_dir = tmp_path_factory.mktemp("hostile-dashboard")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dashboard_fixture, "COUNTRIES", ["United Kingdom", PAYLOAD, "Germany", "EIRE"])
        customers = dashboard_fixture.write_gold_fixture(data_dir / "lake")
    assert (customers["country"] == PAYLOAD).any()
    return data_dir


@pytest.mark.browser
def test_the_dashboard_shows_a_landed_payload_as_text_in_chromium(page, hostile_lake: Path) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    settings = settings_for(hostile_lake)
    server = make_server("127.0.0.1", 0, create_app(SegmentLake.from_settings(settings), settings.dashboard).server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        page.goto(url)
        page.click("#country")
        option = page.locator(".dash-dropdown-option", has_text=PAYLOAD)
        expect(option).to_have_count(1, timeout=30_000)
        option.click()
        page.get_by_text("Customers", exact=True).click()
        # The grid virtualises columns (only those in view are in the DOM) and country comes after the
        # value columns, past the page's max width whatever the viewport: scroll to it as a user would.
        page.wait_for_function(SCROLL_TO_COUNTRY, timeout=30_000)
        cell = page.locator('.ag-center-cols-container [col-id="country"]').first
        expect(cell).to_have_text(PAYLOAD, timeout=30_000)
        assert page.locator("img[src=x]").count() == 0
        page.wait_for_timeout(500)  # an onerror handler would have fired by now
    finally:
        server.shutdown()
    assert dialogs == []
