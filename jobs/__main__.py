"""One entry point for every step: ``python -m jobs <step> --run-date YYYY-MM-DD``.

Under spark-submit: ``spark-submit --jars "$(python -m jobs.adapters.spark --jars)" jobs/__main__.py <step> --run-date D``.
Exit 0 on success, 2 on a permanent failure (bad input, lake state: no retry), 1 otherwise.
"""

from __future__ import annotations

import sys

from jobs.cli import run_named_step

if __name__ == "__main__":
    sys.exit(run_named_step(sys.argv[1:]))
