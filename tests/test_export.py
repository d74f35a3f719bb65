"""Segment exports (jobs/tools/export.py) on a small gold lake written with delta-rs: no Spark."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from jobs.definitions import EXPORT_COLUMNS, EXPORT_MANIFEST, LABEL_SCHEMES
from jobs.errors import LakeStateError
from jobs.tools.export import export_snapshot, read_manifest, segment_lists, slug
from tests.dashboard_fixture import SNAPSHOTS, write_gold_fixture


@pytest.fixture
def lake(settings):
    everyone = write_gold_fixture(settings.path("lake_dir"))
    return settings, everyone


def test_slug_keeps_segment_names_file_safe():
    assert slug("Can't Lose") == "cant-lose"
    assert slug("Potential Loyalist") == "potential-loyalist"
    assert slug("At-Risk") == "at-risk"


def test_segment_lists_partition_each_scheme():
    gold = pd.DataFrame({column: [None] * 4 for column in EXPORT_COLUMNS})
    gold["customer_id"] = ["C3", "C1", "C2", "C4"]
    gold["cluster_label"] = ["VIP", "VIP", "Loyal", "Loyal"]
    gold["rfm_segment"] = ["Lost", "Champions", "Champions", "Champions"]
    lists = segment_lists(gold)
    assert set(lists) == {("cluster", "VIP"), ("cluster", "Loyal"), ("rfm", "Lost"), ("rfm", "Champions")}
    assert list(lists[("cluster", "VIP")]["customer_id"]) == ["C1", "C3"]
    assert list(lists[("rfm", "Champions")]["customer_id"]) == ["C1", "C2", "C4"]
    assert list(lists[("rfm", "Lost")].columns) == EXPORT_COLUMNS


def test_export_writes_csv_and_parquet_per_segment_with_a_manifest(lake):
    settings, everyone = lake
    day = SNAPSHOTS[-1]
    manifest = export_snapshot(settings, day)
    gold = everyone[everyone["snapshot_date"] == day]
    folder = settings.path("exports_dir") / f"snapshot_date={day}"
    assert json.loads((folder / EXPORT_MANIFEST).read_text())["customers"] == len(gold) == manifest["customers"]
    assert manifest["rows_per_scheme"] == {scheme: len(gold) for scheme in LABEL_SCHEMES}
    assert manifest["table_versions"]["gold_customer_segments"] == manifest["source_version"] == 2
    for scheme, column in LABEL_SCHEMES.items():
        expected = gold[column].value_counts().to_dict()
        files = [f for f in manifest["files"] if f["label_scheme"] == scheme]
        assert {f["segment"]: f["rows"] for f in files} == expected
        for entry in files:
            csv = pd.read_csv(folder / entry["csv"], dtype={"customer_id": str})
            parquet = pd.read_parquet(folder / entry["parquet"])
            wanted = sorted(gold.loc[gold[column] == entry["segment"], "customer_id"])
            assert list(csv["customer_id"]) == list(parquet["customer_id"]) == wanted
            assert list(parquet.columns) == EXPORT_COLUMNS


def test_a_second_export_replaces_the_snapshot_and_leaves_no_old_files(lake):
    settings, _ = lake
    day = SNAPSHOTS[0]
    first = export_snapshot(settings, day)
    second = export_snapshot(settings, day)
    link = settings.path("exports_dir") / f"snapshot_date={day}"
    assert link.is_symlink() and read_manifest(settings, day)["exported_at"] == second["exported_at"]
    versions = list((settings.path("exports_dir") / ".versions").iterdir())
    assert versions == [link.resolve()], "the replaced export must be removed"
    assert first["files"] == second["files"]
    assert not [p for p in settings.path("exports_dir").iterdir() if p.name.startswith(".snapshot_date")]


def test_an_unpublished_snapshot_is_refused_and_nothing_written(lake):
    settings, _ = lake
    with pytest.raises(LakeStateError, match="2011-12-03"):
        export_snapshot(settings, date(2011, 12, 3))
    assert read_manifest(settings, date(2011, 12, 3)) is None
    assert not settings.path("exports_dir").exists() or not any(settings.path("exports_dir").rglob("*"))
