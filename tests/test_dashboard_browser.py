"""The segment explorer in Debian's Chromium (Playwright): every filter and view against the fixture data.

The app runs in-process on a free loopback port over a small real Delta lake (tests/dashboard_fixture.py);
expected numbers are computed here with pandas from the rows written. Screenshots go to build/screenshots/.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from playwright.sync_api import ConsoleMessage, Page, expect
from werkzeug.serving import make_server

from app.data import SegmentLake
from app.views import NO_SEGMENTS, create_app
from jobs.config import REPO_ROOT
from jobs.definitions import GONE_CUSTOMER, NEW_CUSTOMER
from tests.conftest import settings_for
from tests.dashboard_fixture import (
    SNAPSHOTS,
    customers_of,
    write_gold_fixture,
    write_snapshot,
)

pytestmark = pytest.mark.browser

SCATTER_LIMIT = 100
REFRESH_SECONDS = 5
SCREENSHOTS = REPO_ROOT / "build" / "screenshots"
LAST, FIRST = SNAPSHOTS[-1].isoformat(), SNAPSHOTS[0].isoformat()
# Waits, not assertions: on a loaded 2-core machine a callback can take longer than Playwright's 5 s default.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium"}


def serve(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Start the app over ``data_dir`` on a free loopback port; returns its URL and a stop function."""
    settings = settings_for(
        data_dir, dashboard={"scatter_max_points": SCATTER_LIMIT, "page_size": 50, "refresh_seconds": REFRESH_SECONDS}
    )
    app = create_app(SegmentLake.from_settings(settings), settings.dashboard)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/", server.shutdown


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dashboard-browser")


@pytest.fixture(scope="module")
def customers(data_dir: Path) -> pd.DataFrame:
    return write_gold_fixture(data_dir / "lake")


@pytest.fixture(scope="module")
def url(data_dir: Path, customers: pd.DataFrame) -> Iterator[str]:
    address, stop = serve(data_dir)
    yield address
    stop()


@pytest.fixture
def page(page: Page, request: pytest.FixtureRequest) -> Iterator[Page]:
    """The browser page; fails the test on any console error, and saves a screenshot at the end."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_viewport_size({"width": 1400, "height": 1000})
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    assert errors == []


def eventually(read: Callable[[], Any], expected: Any, timeout: float = 10) -> None:
    """Wait until ``read()`` equals ``expected`` (callbacks are asynchronous), then assert it."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    assert value == expected


def choose(page: Page, dropdown: str, value: str) -> None:
    page.click(f"#{dropdown}")
    page.click(f'.dash-dropdown-option:has(input[value="{value}"])')


def open_view(page: Page, label: str) -> None:
    page.get_by_text(label, exact=True).click()


def card_counts(page: Page) -> dict[str, int]:
    cards = page.query_selector_all(".card")
    return {
        c.get_attribute("data-segment"): int(c.query_selector(".card-customers").inner_text().replace(",", ""))
        for c in cards
    }


def traces(page: Page, graph: str) -> list[dict]:
    """Name, x/y values and point count of each rendered trace of a graph."""
    return page.evaluate(
        """id => (document.querySelector(`#${id} .js-plotly-plot`)?._fullData || []).map(t => ({
            name: t.name, type: t.type, length: t._length,
            x: t.x ? Array.from(t.x) : null, y: t.y ? Array.from(t.y) : null}))""",
        graph,
    )


def counts(rows: pd.DataFrame, column: str) -> dict[str, int]:
    return rows.groupby(column).size().to_dict()


def test_overview_follows_every_filter(page: Page, url: str, customers: pd.DataFrame) -> None:
    page.goto(url)
    last = customers[customers["snapshot_date"] == SNAPSHOTS[-1]]
    eventually(lambda: card_counts(page), counts(last, "cluster_label"))
    sizes = customers.groupby(["cluster_label", "snapshot_date"]).size()
    eventually(
        lambda: {t["name"]: t["y"] for t in traces(page, "sizes-chart")},
        {s: sizes[s].tolist() for s in sizes.index.levels[0]},
    )

    choose(page, "snapshot-date", FIRST)
    first = customers[customers["snapshot_date"] == SNAPSHOTS[0]]
    eventually(lambda: card_counts(page), counts(first, "cluster_label"))

    page.check('#scheme input[value="rfm"]')
    eventually(lambda: card_counts(page), counts(first, "rfm_segment"))

    choose(page, "country", "France")
    eventually(lambda: card_counts(page), counts(first[first["country"] == "France"], "rfm_segment"))
    expect(page.locator("#overview-cards")).to_contain_text("shares are within France")

    choose(page, "segment", "Lost")
    eventually(
        lambda: card_counts(page),
        {"Lost": int(((first["country"] == "France") & (first["rfm_segment"] == "Lost")).sum())},
    )


def test_distributions_per_segment_with_log_toggle(page: Page, url: str, customers: pd.DataFrame) -> None:
    page.goto(url)
    choose(page, "country", "United Kingdom")
    open_view(page, "RFM distributions")
    rows = customers[(customers["snapshot_date"] == SNAPSHOTS[-1]) & (customers["country"] == "United Kingdom")]
    expected = counts(rows, "cluster_label")

    def histogram_totals() -> dict[str, int]:
        shown = [t for t in traces(page, "distribution-chart") if t["type"] == "scatter"][: len(expected)]
        return {t["name"]: int(sum(t["y"])) for t in shown}  # recency histograms, one line per segment

    eventually(histogram_totals, expected)
    eventually(
        lambda: sorted(t["name"] for t in traces(page, "distribution-chart") if t["type"] == "box"),
        sorted(list(expected) * 3),
    )
    log_axis = "() => document.querySelector('#distribution-chart .js-plotly-plot')._fullLayout.xaxis3.type"
    eventually(lambda: page.evaluate(log_axis), "log")
    page.uncheck('#log-scale input[value="log"]')
    eventually(lambda: page.evaluate(log_axis), "linear")


def test_cluster_scatter_samples_above_the_limit(page: Page, url: str, customers: pd.DataFrame) -> None:
    page.goto(url)
    open_view(page, "Clusters")
    last = customers[customers["snapshot_date"] == SNAPSHOTS[-1]]
    assert len(last) > SCATTER_LIMIT
    eventually(lambda: sum(t["length"] for t in traces(page, "cluster-chart")), SCATTER_LIMIT)
    expect(page.locator("#cluster-chart")).to_contain_text(f"random sample of {SCATTER_LIMIT} of {len(last)} customers")

    choose(page, "segment", "VIP")
    vip = last[last["cluster_label"] == "VIP"]
    eventually(lambda: {t["name"]: t["length"] for t in traces(page, "cluster-chart")}, {"VIP": len(vip)})
    expect(page.locator("#cluster-chart")).to_contain_text(f"{len(vip)} customers")
    eventually(lambda: sorted(traces(page, "cluster-chart")[0]["x"]), sorted(vip["recency_days"].tolist()))


def test_migration_sankey_and_table(page: Page, url: str, customers: pd.DataFrame) -> None:
    page.goto(url)
    open_view(page, "Migration")
    choose(page, "migration-from", FIRST)
    before = customers[customers["snapshot_date"] == SNAPSHOTS[0]][["customer_id", "cluster_label"]]
    after = customers[customers["snapshot_date"] == SNAPSHOTS[-1]][["customer_id", "cluster_label"]]
    moves = before.merge(after, on="customer_id", how="outer", suffixes=("_from", "_to"))
    moves = moves.fillna({"cluster_label_from": NEW_CUSTOMER, "cluster_label_to": GONE_CUSTOMER})
    expected = moves.groupby(["cluster_label_from", "cluster_label_to"]).size().to_dict()

    def table_flows() -> dict[tuple[str, str], int]:
        rows = page.query_selector_all(".migration-table tbody tr")
        cells = [[td.inner_text() for td in row.query_selector_all("td")] for row in rows]
        return {(c[0], c[1]): int(c[2].replace(",", "")) for c in cells}

    eventually(table_flows, expected)
    sankey = "document.querySelector('#migration-chart .js-plotly-plot')._fullData[0]"
    sankey_total = f"() => {sankey}.link.value.reduce((a, b) => a + b, 0)"
    eventually(lambda: page.evaluate(sankey_total), len(moves))


def test_customer_table_sorts_filters_and_downloads(page: Page, url: str, customers: pd.DataFrame) -> None:
    page.goto(url)
    choose(page, "country", "Germany")
    open_view(page, "Customers")
    germany = customers[(customers["snapshot_date"] == SNAPSHOTS[-1]) & (customers["country"] == "Germany")]
    expect(page.locator("#customer-count")).to_have_text(f"{len(germany)} customers")

    def shown(column: str) -> list[str]:
        """The column's values in the rendered rows (the grid renders only what is in view), in row order."""
        rows = page.query_selector_all(".ag-center-cols-container .ag-row")
        ordered = sorted(rows, key=lambda row: int(row.get_attribute("row-index")))
        return [row.query_selector(f'[col-id="{column}"]').inner_text() for row in ordered]

    most_valuable = germany.sort_values("clv_12m", ascending=False)["customer_id"][:3].tolist()
    eventually(lambda: shown("customer_id")[:3], most_valuable)  # the table opens on the most valuable customers
    page.click('.ag-header-cell[col-id="monetary"] .ag-header-cell-label')
    page.click('.ag-header-cell[col-id="monetary"] .ag-header-cell-label')
    eventually(
        lambda: shown("customer_id")[:3], germany.sort_values("monetary", ascending=False)["customer_id"][:3].tolist()
    )

    page.locator(".ag-floating-filter input").first.fill("1")
    wanted = germany[germany["customer_id"].str.contains("1")]
    expect(page.locator("#customer-count")).to_have_text(f"{len(wanted)} customers")
    with page.expect_download() as download:
        page.click("#download-button")
    exported = pd.read_csv(download.value.path(), dtype={"customer_id": str})
    assert exported["customer_id"].tolist() == wanted.sort_values("monetary", ascending=False)["customer_id"].tolist()
    assert exported["monetary"].tolist() == pytest.approx(
        wanted.sort_values("monetary", ascending=False)["monetary"].tolist()
    )
    assert set(exported["country"]) == {"Germany"}


def test_customer_value_view_and_the_win_back_list(page: Page, url: str, customers: pd.DataFrame) -> None:
    """Issue 14: value boxes per segment; the at-risk-value toggle lists the win-back customers, CLV sortable."""
    page.goto(url)
    latest = customers[customers["snapshot_date"] == SNAPSHOTS[-1]]
    open_view(page, "Customer value")
    boxes = (
        "() => (document.querySelector('#value-chart .js-plotly-plot')?._fullData || []).filter(t => t.type === 'box')"
    )
    eventually(lambda: len(page.evaluate(boxes)), 3 * latest["cluster_label"].nunique())
    open_view(page, "Customers")
    page.click("#at-risk-only input")
    flagged = latest[latest["at_risk_value"]]
    expect(page.locator("#customer-count")).to_have_text(f"{len(flagged)} at-risk-value customers")
    first = """() => document.querySelector('.ag-center-cols-container .ag-row[row-index="0"] [col-id="clv_12m"]')
                     ?.innerText"""
    eventually(lambda: page.evaluate(first), f"{flagged['clv_12m'].max():,.2f}")  # opens most valuable first
    page.click('.ag-header-cell[col-id="clv_12m"] .ag-header-cell-label')  # desc -> none
    page.click('.ag-header-cell[col-id="clv_12m"] .ag-header-cell-label')  # none -> asc
    eventually(lambda: page.evaluate(first), f"{flagged['clv_12m'].min():,.2f}")
    money = """() => document.querySelector('.ag-center-cols-container .ag-row[row-index="0"] [col-id="monetary"]')
                     ?.innerText"""
    eventually(lambda: bool(re.fullmatch(r"[\d,]+\.\d\d", page.evaluate(money) or "")), True)


def test_a_date_without_data_says_so(page: Page, url: str) -> None:
    page.goto(f"{url}?date=2011-01-01")
    expect(page.locator("#notice")).to_contain_text("No snapshot for 2011-01-01")
    expect(page.locator("#sizes-chart")).to_contain_text("No data for 2011-01-01")


def test_no_gold_tables_yet(page: Page, tmp_path: Path) -> None:
    address, stop = serve(tmp_path)
    try:
        page.goto(address)
        expect(page.locator("#empty-state")).to_have_text(NO_SEGMENTS.replace("`", ""))
    finally:
        stop()


def test_a_new_snapshot_appears_without_a_restart(page: Page, tmp_path: Path) -> None:
    write_snapshot(tmp_path / "lake", customers_of(SNAPSHOTS[0], 30, seed=1))
    address, stop = serve(tmp_path)
    try:
        page.goto(address)
        eventually(lambda: sum(card_counts(page).values()), 30)
        newer = customers_of(SNAPSHOTS[1], 45, seed=2)
        write_snapshot(tmp_path / "lake", newer)
        page.click("#snapshot-date")
        option = page.locator(f'.dash-dropdown-option:has(input[value="{SNAPSHOTS[1].isoformat()}"])')
        expect(option).to_be_visible(timeout=(REFRESH_SECONDS + 5) * 1000)
        option.click()
        eventually(lambda: card_counts(page), counts(newer, "cluster_label"))
    finally:
        stop()
