"""``python -m app``: serve the segment explorer (host and port from ``dashboard`` in conf/)."""

from __future__ import annotations

import argparse
import sys

from app.data import SegmentLake
from app.security import protect
from app.views import create_app
from jobs.config import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve the segment explorer (Dash) over the gold tables. Host, port and paging come from "
        "`dashboard:` in conf/pipeline.yaml (override with RFM__DASHBOARD__PORT=8051 and the like).",
    )
    parser.parse_args(argv)
    settings = load_settings()
    config = settings.dashboard
    app = protect(create_app(SegmentLake.from_settings(settings), config), config)
    print(f"Segment explorer: http://{config.host}:{config.port}/  (lake: {settings.path('lake_dir')})", flush=True)
    app.run(host=config.host, port=config.port, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
