"""Export every published snapshot not exported yet (or exported from an older publication).

``python -m jobs.ops.exports [--until YYYY-MM-DD]``

The catch-up `make run` and `make replay` end with, and what the ``segment_export`` DAG's task does
after the snapshots its Asset events name: a night published while the export DAG was paused, or
run by ``airflow dags test`` (no Asset-triggered runs), is exported here. Each snapshot is
exported under the export step's (step, date) lease, like the DAG's task.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

from jobs.adapters.lease import run_leased
from jobs.cli import configure_logging
from jobs.config import Settings, load_settings
from jobs.steps.export import export_day, stale_snapshots


def catch_up(settings: Settings, until: date | None = None) -> list[dict[str, Any]]:
    """Export each stale published snapshot up to ``until``, oldest first; their manifests."""
    return [run_leased(export_day, day, settings, settings=settings) for day in stale_snapshots(settings, until)]


def describe(manifest: dict[str, Any]) -> str:
    """One line per exported snapshot: where, how many customers, the campaign lists."""
    campaigns = ", ".join(f"{c['campaign']} {c['rows']}" for c in manifest.get("campaigns", []))
    return (
        f"exported {manifest['snapshot_date']}: {manifest['customers']} customers -> {manifest['path']} ({campaigns})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--until", type=date.fromisoformat, help="the last snapshot date to export (default: all)")
    args = parser.parse_args(argv)
    configure_logging()
    manifests = catch_up(load_settings(), args.until)
    for manifest in manifests:
        print(describe(manifest))
    if not manifests:
        print("exports: every published snapshot is exported already")
    return 0


if __name__ == "__main__":
    sys.exit(main())
