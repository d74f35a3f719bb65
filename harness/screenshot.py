"""The docs' screenshots of the segment explorer over a real lake: ``python -m harness.screenshot --date D``.

Serves the app over the configured data dir (``RFM__PATHS__DATA_DIR``) on a free loopback port
and saves, with Debian's Chromium, the overview (``docs/dashboard.png``) and the customer value
view (``docs/dashboard-value.png``) of snapshot D.
"""

from __future__ import annotations

import argparse
import threading
from datetime import date
from pathlib import Path

from werkzeug.serving import make_server

from app.data import SegmentLake
from app.views import create_app
from jobs.config import REPO_ROOT, load_settings

VIEWS = {"dashboard.png": None, "dashboard-value.png": "Customer value"}


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="the snapshot to show")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs", help="folder for the PNG files")
    args = parser.parse_args(argv)
    settings = load_settings()
    app = create_app(SegmentLake.from_settings(settings), settings.dashboard)
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/?date={args.date.isoformat()}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        for name, view in VIEWS.items():
            page.goto(url)
            page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
            if view:
                page.get_by_text(view, exact=True).click()
            page.wait_for_timeout(4000)  # the callbacks of the view settle
            page.screenshot(path=str(args.out / name), full_page=True)
            print(args.out / name)
        browser.close()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
