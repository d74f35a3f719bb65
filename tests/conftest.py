"""Shared fixtures: one Spark session per test process, settings pointed at temporary dirs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything loads the configuration: nothing a test does may touch the real data dir.
os.environ.setdefault("RFM__PATHS__DATA_DIR", tempfile.mkdtemp(prefix="rfm-tests-"))

from jobs.config import REPO_ROOT, Settings, load_settings  # noqa: E402

FAST_ONLY = os.environ.get("RFM_TESTS_FAST") == "1"
if FAST_ONLY:  # `make test-fast`: a test that starts Spark without the `spark` marker fails loudly
    from pyspark.sql import SparkSession

    def _refuse_spark(self, *args, **kwargs):
        raise RuntimeError("this test starts Spark: mark it with @pytest.mark.spark (make test-fast runs none)")

    SparkSession.Builder.getOrCreate = _refuse_spark
    # whole modules of Airflow tests: not even collected (collecting parses the DAGs)
    collect_ignore = ["test_dags.py", "test_end_to_end.py"]

REAL_DATA = REPO_ROOT.parent / "shared" / "data" / "online_retail.csv.gz"


def settings_for(data_dir: Path, **sections: dict) -> Settings:
    """The configuration with every run output under ``data_dir`` and some sections overridden."""
    base = load_settings()
    update = {"paths": base.paths.model_copy(update={"data_dir": str(data_dir)})}
    for name, values in sections.items():
        update[name] = getattr(base, name).model_copy(update=values)
    return base.model_copy(update=update)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data dir (landing, lake, validation, MLflow) is this test's tmp dir."""
    return settings_for(tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the Spark session carries the ``spark`` marker."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark():
    """The one Spark session of the test process (Delta enabled, from the project factory)."""
    from jobs.adapters.spark import get_spark

    session = get_spark(load_settings(), app_name="rfm-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    """The complete UCI Online Retail file, when ../shared/data has it."""
    if not REAL_DATA.is_file():
        pytest.skip(f"real data not present at {REAL_DATA}")
    return REAL_DATA
