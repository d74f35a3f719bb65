"""The docs' screenshots of the consoles over a lake: ``python -m harness.screenshot --date D [--consoles]``
(``make screenshots``).

Serves the app over the configured data dir (``RFM__PATHS__DATA_DIR``) on a free loopback port
and saves, with Debian's Chromium, the overview (``docs/dashboard.png``), the customer value
view (``docs/dashboard-value.png``) and the customer table (``docs/dashboard-customers.png``) of
snapshot D. ``--consoles`` also starts Airflow's api-server and the MLflow UI over the same data dir
(free loopback ports) and saves the nightly DAG's grid (``airflow-grid.png``), the night's ``clv``
task log (``airflow-task-log.png``), the export DAG (``airflow-export.png``), the experiment's runs
(``mlflow-runs.png``), the night's run with its description (``mlflow-run.png``) and the
night and the one before compared (``mlflow-compare.png``). ``make screenshots`` replays the real
2011-12-08..09 into its own data dir first.
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

VIEWS = {"dashboard.png": None, "dashboard-value.png": "Customer value", "dashboard-customers.png": "Customers"}


def main(argv: list[str] | None = None) -> int:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", required=True, type=date.fromisoformat, help="the snapshot to show")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs", help="folder for the PNG files")
    parser.add_argument("--consoles", action="store_true", help="also the Airflow and MLflow UIs")
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
        if args.consoles:
            consoles(browser, load_settings(), args.date, args.out)
        browser.close()
    server.shutdown()
    return 0


def consoles(browser, settings, night: date, out: Path) -> None:
    """Airflow (api-server only, over the data dir's SQLite DB) and the MLflow UI: their pages of ``night``."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from datetime import timedelta

    import requests

    from jobs.adapters import tracking
    from jobs.orchestration.services import AirflowApi, AirflowConfig, free_ports, start_airflow, stop

    airflow_port, mlflow_port = free_ports(2)
    config = AirflowConfig.sqlite(settings, port=airflow_port)  # the installation `make replay` ran
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_ui = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "ui", "--host", "127.0.0.1", "--port", str(mlflow_port)]
        + ["--workers", "1", "--backend-store-uri", settings.tracking_uri],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    procs = start_airflow(config, config.home / "services", ("api-server",), migrate=False)
    try:
        dag_id = settings.dag.dag_id
        runs = AirflowApi(config).get(f"/dags/{dag_id}/dagRuns", limit=100, order_by="-logical_date")["dag_runs"]
        run = next(r for r in runs if r["logical_date"][:10] == night.isoformat())
        token = requests.post(
            f"{config.url}/auth/token", timeout=60, json={"username": "admin", "password": config.admin_password}
        ).json()["access_token"]
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_cookies([{"name": "_token", "value": token, "url": config.url}])
        page = context.new_page()
        pages = {
            "airflow-grid.png": (f"{config.url}/dags/{dag_id}", "eda"),
            "airflow-task-log.png": (
                f"{config.url}/dags/{dag_id}/runs/{run['dag_run_id']}/tasks/clv",
                "MLflow: http",
            ),  # the summary's last line
            "airflow-export.png": (f"{config.url}/dags/segment_export", "export"),
        }
        night_run = tracking.runs_for_date(settings, dag_id, night)[0]
        experiment = night_run.info.experiment_id
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{mlflow_url}/health", timeout=5).ok:
                    break
            except requests.RequestException:
                time.sleep(2)
        pages["mlflow-runs.png"] = (tracking.runs_page(mlflow_url, experiment), night.isoformat())
        pages["mlflow-run.png"] = (tracking.run_page(mlflow_url, experiment, night_run.info.run_id), "Night")
        nights = [
            r.info.run_id
            for day in (night - timedelta(days=1), night)
            for r in tracking.runs_for_date(settings, dag_id, day)
        ]
        pages["mlflow-compare.png"] = (tracking.compare_page(mlflow_url, experiment, nights), "silhouette")
        for name, (url, text) in pages.items():
            page.goto(url)
            page.get_by_text(text).first.wait_for(timeout=180_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=str(out / name))
            print(out / name)
        context.close()
    finally:
        stop(*procs)
        os.killpg(mlflow_ui.pid, signal.SIGTERM)
        mlflow_ui.wait(timeout=60)


if __name__ == "__main__":
    raise SystemExit(main())
