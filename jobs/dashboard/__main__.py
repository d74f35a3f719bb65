"""``python -m jobs.dashboard``: serve the segment explorer (host and port from ``dashboard`` in conf/)."""

from __future__ import annotations

import sys

from jobs.config import load_settings
from jobs.dashboard.app import create_app
from jobs.dashboard.data import SegmentLake


def main() -> int:
    settings = load_settings()
    config = settings.dashboard
    app = create_app(SegmentLake.from_settings(settings), config)
    print(f"Segment explorer: http://{config.host}:{config.port}/  (lake: {settings.path('lake_dir')})", flush=True)
    app.run(host=config.host, port=config.port, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
