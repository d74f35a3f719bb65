"""`make run`, then `make run` again in the same checkout (issue 12, item 11): the second run works
and leaves the gold business columns identical. Slow (two full runs): `make test-rerun-twice`."""

from __future__ import annotations

import os
import subprocess

import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs.config import REPO_ROOT
from jobs.definitions import GOLD_BUSINESS_COLUMNS

pytestmark = [pytest.mark.e2e, pytest.mark.heavy]

BUSINESS_COLUMNS = GOLD_BUSINESS_COLUMNS


def make_run(data_dir) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "RFM__PATHS__DATA_DIR": str(data_dir),
        "RFM__GENERATOR__CUSTOMERS": "300",
        "RFM__GENERATOR__DAYS": "60",
    }
    return subprocess.run(
        ["make", "run", "RUN_FROM=2011-12-08", "RUN_TO=2011-12-09"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )


def gold(data_dir) -> pd.DataFrame:
    table = DeltaTable(str(data_dir / "lake" / "gold" / "customer_segments")).to_pandas()
    return table[BUSINESS_COLUMNS].sort_values(["snapshot_date", "customer_id"]).reset_index(drop=True)


def test_make_run_twice_converges(tmp_path) -> None:
    first = make_run(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    before = gold(tmp_path)
    second = make_run(tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    pd.testing.assert_frame_equal(before, gold(tmp_path))
    assert not list((tmp_path / "lake" / "_leases").glob("*.json")), "a lease was left held"
