"""The hostile corpus (tests/hostile_corpus.py) through the landing inventory and strict reader:
no Spark, every case in milliseconds. Each case's verdict is checked, and for every accepted case
the accounting property at this level: the strict reader counts exactly the records written."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobs.adapters.inventory import DATA, IGNORED, MARKER
from jobs.adapters.landing import day_dir, day_inventory
from jobs.errors import DataValidationError
from tests.conftest import settings_for
from tests.hostile_corpus import CASES, DAY, Case, Fail, Pass, build_day, zeros_gzip


def test_the_corpus_is_large_and_covers_every_class() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)
    kinds = {c.kind for c in CASES}
    assert kinds == {"filesystem", "encoding", "structure", "resource", "payload"}
    assert any(isinstance(c.verdict, Pass) for c in CASES) and any(isinstance(c.verdict, Fail) for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_day_inventory(tmp_path: Path, case: Case) -> None:
    settings, folder = build_day(tmp_path, case)
    if isinstance(case.verdict, Fail):
        with pytest.raises(DataValidationError) as error:
            day_inventory(settings, DAY)
        assert case.verdict.names in str(error.value), str(error.value)
        assert error.value.__class__.__name__ in {"DataValidationError", "UnreadableFileError", "ResourceLimitError"}
        return
    inventory = day_inventory(settings, DAY)
    assert inventory.records == case.verdict.records  # accounting: what the case wrote, record for record
    # every entry is in the inventory with a decision, a size and a fingerprint
    names = {e.name for e in inventory.entries}
    assert names == {p.name for p in folder.iterdir()}
    for entry in inventory.entries:
        assert entry.decision in {DATA, MARKER, IGNORED}
        assert len(entry.sha256) == 64 and entry.size == (folder / entry.name).lstat().st_size


def test_the_inventory_records_ignored_files_and_pins_the_data(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "ignored-ds-store")
    settings, folder = build_day(tmp_path, case)
    first = day_inventory(settings, DAY)
    assert {e.name: e.decision for e in first.entries} == {
        ".DS_Store": IGNORED,
        "_SUCCESS": MARKER,
        "transactions.csv": DATA,
    }
    (folder / "transactions.csv").write_text((folder / "transactions.csv").read_text().replace("HOLDER 1", "HOLDER 9"))
    assert day_inventory(settings, DAY).fingerprint != first.fingerprint


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: the inventory never opens it."""
    case = next(c for c in CASES if c.id == "fifo")
    settings, _ = build_day(tmp_path, case)
    started = time.monotonic()
    with pytest.raises(DataValidationError, match="a FIFO"):
        day_inventory(settings, DAY)
    assert time.monotonic() - started < 5


@pytest.mark.heavy
def test_the_issues_bomb_fails_at_default_limits(tmp_path: Path) -> None:
    """The issue's case at full scale: a ~2 MB .csv.gz inflating to 2 GiB of zeros, default limits."""
    settings = settings_for(tmp_path)
    folder = day_dir(settings.path("landing_dir"), DAY)
    folder.mkdir(parents=True)
    (folder / "t.csv.gz").write_bytes(zeros_gzip(2 << 30, zeros=True))
    (folder / "_SUCCESS").touch()
    started = time.monotonic()
    with pytest.raises(DataValidationError, match="'t.csv.gz'"):
        day_inventory(settings, DAY)
    print(f"refused in {time.monotonic() - started:.2f} s")


@pytest.mark.heavy
def test_a_bomb_of_valid_rows_fails_on_the_byte_budget(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, landing={"max_file_bytes": 64 << 20})
    folder = day_dir(settings.path("landing_dir"), DAY)
    folder.mkdir(parents=True)
    (folder / "t.csv.gz").write_bytes(zeros_gzip(128 << 20))
    (folder / "_SUCCESS").touch()
    with pytest.raises(DataValidationError, match="max_file_bytes"):
        day_inventory(settings, DAY)


def test_a_parquet_day_is_inventoried_with_its_row_count(tmp_path: Path) -> None:
    import pandas as pd

    from jobs.adapters.landing import write_day
    from tests.hostile_corpus import HEADER, row

    settings = settings_for(tmp_path, landing={"format": "parquet"})
    rows = pd.DataFrame([row(i) for i in range(7)], columns=HEADER)
    write_day(settings.path("landing_dir"), DAY, rows, settings.landing.marker, "parquet")
    inventory = day_inventory(settings, DAY)
    assert inventory.records == {"transactions.parquet": 7}
    stray = day_dir(settings.path("landing_dir"), DAY) / "transactions.csv"
    stray.write_text("a,b\n")
    with pytest.raises(DataValidationError, match="'transactions.csv': unexpected entry"):
        day_inventory(settings, DAY)
