"""Segment exports (jobs/steps/export.py) on a small gold lake written with delta-rs: no Spark."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from jobs.definitions import EXPORT_CLV_COLUMNS, EXPORT_COLUMNS, EXPORT_MANIFEST, LABEL_SCHEMES
from jobs.errors import LakeStateError
from jobs.steps.export import (
    export_snapshot,
    read_manifest,
    segment_lists,
    slug,
    snapshots_to_export,
    stale_snapshots,
)
from tests.dashboard_fixture import SNAPSHOTS, customers_of, segments_schema, write_gold_fixture

PUBLISHED_SCHEMA = pa.schema(
    [
        ("snapshot_date", pa.date32()),
        ("table_versions", pa.map_(pa.string(), pa.int64())),
        ("published_at", pa.timestamp("us", tz="UTC")),
    ]
)


def publish(settings, snapshot: date, segments_version: int) -> int:
    """Write the snapshot's publish record entry (replacing its previous one, as jobs.adapters.publish
    does); returns the record's version."""
    versions = {
        "gold_customer_segments": segments_version,
        "gold_segment_summary": segments_version,
        "gold_segment_transitions": 0,
    }
    row = pa.Table.from_pylist(
        [{"snapshot_date": snapshot, "table_versions": list(versions.items()), "published_at": datetime.now(UTC)}],
        schema=PUBLISHED_SCHEMA,
    )
    path = str(settings.table_path("gold_published"))
    if DeltaTable.is_deltatable(path):
        write_deltalake(path, row, mode="overwrite", predicate=f"snapshot_date = '{snapshot.isoformat()}'")
    else:
        write_deltalake(path, row, mode="append")
    return DeltaTable(path).version()


def segments_version(settings) -> int:
    return DeltaTable(str(settings.table_path("gold_customer_segments"))).version()


@pytest.fixture
def lake(settings):
    """The three gold snapshots (segments versions 0, 1, 2), each published at its version; written
    before the clv step existed (no value columns)."""
    everyone = write_gold_fixture(settings.path("lake_dir"), value_columns=False)
    for version, day in enumerate(SNAPSHOTS):
        publish(settings, day, version)
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
            members = gold[gold[column] == entry["segment"]]
            assert sorted(csv["customer_id"]) == sorted(members["customer_id"])
            assert list(csv["customer_id"]) == list(parquet["customer_id"])
            assert csv["monetary_gbp"].is_monotonic_decreasing, "best customers (money spent) first"
            assert (csv["monetary_gbp"] == csv["monetary_gbp"].round(2)).all()
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


def append_gold(settings, customers: pd.DataFrame, clv: bool = False) -> int:
    """Append rows to gold/customer_segments (with the clv step's columns when ``clv``); returns its version."""
    schema = segments_schema(value_columns=clv)
    if clv:
        customers = customers.assign(**{column: 0.5 for column in EXPORT_CLV_COLUMNS[:-1]}, at_risk_value=False)
    table = pa.Table.from_pandas(customers[schema.names], schema=schema, preserve_index=False)
    write_deltalake(
        str(settings.table_path("gold_customer_segments")),
        table,
        mode="append",
        schema_mode="merge",
        partition_by=["snapshot_date"],
    )
    return segments_version(settings)


def nothing_exported(settings) -> bool:
    return not settings.path("exports_dir").exists() or not any(settings.path("exports_dir").rglob("*"))


def test_an_unpublished_snapshot_is_refused_and_nothing_written(lake):
    settings, _ = lake
    with pytest.raises(LakeStateError, match="2011-12-03"):
        export_snapshot(settings, date(2011, 12, 3))
    assert read_manifest(settings, date(2011, 12, 3)) is None
    assert nothing_exported(settings)


def test_gold_rows_without_a_publish_record_entry_are_not_exported(lake):
    """A night whose label or clv step wrote gold rows but crashed before publishing is not exported."""
    settings, _ = lake
    day = date(2011, 12, 10)
    append_gold(settings, customers_of(day, 30, seed=7))
    with pytest.raises(LakeStateError, match="not published"):
        export_snapshot(settings, day)
    assert nothing_exported(settings)


def test_a_lake_without_publish_records_exports_nothing(settings):
    write_gold_fixture(settings.path("lake_dir"))
    with pytest.raises(LakeStateError, match="not published"):
        export_snapshot(settings, SNAPSHOTS[-1])
    assert nothing_exported(settings)


def test_the_export_reads_the_published_version_not_the_latest(lake):
    """A newer, unpublished write to the snapshot's slice (a re-run in progress) is not exported."""
    settings, everyone = lake
    day = SNAPSHOTS[-1]
    published = len(everyone[everyone["snapshot_date"] == day])
    append_gold(settings, customers_of(day, 10, seed=99).assign(customer_id=lambda f: "X" + f["customer_id"]))
    manifest = export_snapshot(settings, day)
    assert manifest["customers"] == published and manifest["source_version"] == 2
    assert manifest["table_versions"]["gold_customer_segments"] == 2 < segments_version(settings)


def test_the_event_names_the_publish_record_version_to_read(lake):
    """clv re-publishes a snapshot with its columns: the event's record version picks that publication."""
    settings, everyone = lake
    day = SNAPSHOTS[-1]
    first_record = DeltaTable(str(settings.table_path("gold_published"))).version()
    rows = customers_of(day, 120, seed=2)
    scored_version = append_gold(settings, rows.head(40).assign(snapshot_date=date(2011, 12, 12)), clv=True)
    second_record = publish(settings, date(2011, 12, 12), scored_version)
    scored = export_snapshot(settings, date(2011, 12, 12), second_record)
    assert scored["columns"] == EXPORT_COLUMNS + EXPORT_CLV_COLUMNS and scored["customers"] == 40
    folder = settings.path("exports_dir") / "snapshot_date=2011-12-12"
    first_file = folder / scored["files"][0]["parquet"]
    assert list(pd.read_parquet(first_file).columns) == EXPORT_COLUMNS + EXPORT_CLV_COLUMNS
    assert scored["table_versions"]["gold_published"] == second_record
    with pytest.raises(LakeStateError, match="not published"):  # the older record does not hold it
        export_snapshot(settings, date(2011, 12, 12), first_record)
    plain = export_snapshot(settings, SNAPSHOTS[0], second_record)  # published before the CLV columns existed
    assert plain["columns"] == EXPORT_COLUMNS


def test_snapshots_to_export_take_each_dates_newest_publication():
    extras = [
        {"snapshot_date": "2011-12-09", "gold_published_version": 5},
        {"snapshot_date": "2011-12-08", "gold_published_version": 3},
        {"snapshot_date": "2011-12-09", "gold_published_version": 4},
    ]
    assert snapshots_to_export(extras) == {"2011-12-08": 3, "2011-12-09": 5}
    assert snapshots_to_export([{"snapshot_date": "2011-12-08"}]) == {"2011-12-08": None}


def test_csv_is_rounded_with_units_flags_as_yes_no_and_a_column_dictionary(lake):
    """The marketer's CSV: money to 2 decimals named with the currency, probabilities to 3, yes/no; the
    Parquet file keeps full precision; the manifest explains every CSV column."""
    settings, _ = lake
    day = date(2011, 12, 12)
    rows = customers_of(day, 40, seed=5)
    version = append_gold(settings, rows, clv=True)
    table = DeltaTable(str(settings.table_path("gold_customer_segments")), version=version)
    gold = table.to_pandas(filters=[("snapshot_date", "=", day)])
    assert len(gold) == 40
    manifest = export_snapshot(settings, day, publish(settings, day, version))
    folder = settings.path("exports_dir") / f"snapshot_date={day}"
    entry = max(manifest["files"], key=lambda f: f["rows"])
    csv = pd.read_csv(folder / entry["csv"], dtype={"customer_id": str}, keep_default_na=False)
    parquet = pd.read_parquet(folder / entry["parquet"])
    assert {"monetary_gbp", "clv_12m_gbp"} <= set(csv.columns) and "monetary" not in csv.columns
    assert set(csv["at_risk_value"]) <= {"yes", "no"} and parquet["at_risk_value"].dtype == bool
    raw = (folder / entry["csv"]).read_text().splitlines()[1]
    assert all(
        len(cell.split(".")[1]) <= 3 for cell in raw.split(",") if cell.replace(".", "").isdigit() and "." in cell
    )
    merged = csv.merge(parquet, on="customer_id")
    assert ((merged["monetary_gbp"] - merged["monetary"].astype(float)).abs() <= 0.005 + 1e-9).all()
    dictionary = {d["csv_column"]: d for d in manifest["column_dictionary"]}
    assert set(dictionary) == set(csv.columns), "every CSV column is explained"
    assert dictionary["monetary_gbp"]["unit"] == "GBP" and dictionary["at_risk_value"]["unit"] == "yes/no"
    assert all(d["meaning"] for d in dictionary.values())


def test_campaign_lists_hold_the_rules_customers_best_first(lake):
    settings, everyone = lake
    day = SNAPSHOTS[-1]
    manifest = export_snapshot(settings, day)
    gold = everyone[everyone["snapshot_date"] == day]
    campaigns = {c["campaign"]: c for c in manifest["campaigns"]}
    assert set(campaigns) == set(settings.exports.campaigns) == {"win-back", "vip-care"}
    folder = settings.path("exports_dir") / f"snapshot_date={day}"
    for name, rule in settings.exports.campaigns.items():
        wanted = gold[pd.concat([gold[c].isin(v) for c, v in rule.items()], axis=1).any(axis=1)]
        csv = pd.read_csv(folder / campaigns[name]["csv"], dtype={"customer_id": str})
        assert campaigns[name]["rows"] == len(csv) == len(wanted) > 0, name
        assert sorted(csv["customer_id"]) == sorted(wanted["customer_id"])
        assert csv["monetary_gbp"].is_monotonic_decreasing


def test_a_catch_up_exports_every_published_snapshot_not_exported_or_republished(lake):
    """Nights published while the export DAG was paused are exported by the next run or `make run`."""
    from jobs.ops.exports import catch_up

    settings, _ = lake
    assert stale_snapshots(settings) == list(SNAPSHOTS)
    export_snapshot(settings, SNAPSHOTS[1])
    assert stale_snapshots(settings) == [SNAPSHOTS[0], SNAPSHOTS[2]]
    assert stale_snapshots(settings, until=SNAPSHOTS[1]) == [SNAPSHOTS[0]]
    done = catch_up(settings)
    assert [m["snapshot_date"] for m in done] == [SNAPSHOTS[0].isoformat(), SNAPSHOTS[2].isoformat()]
    assert stale_snapshots(settings) == [] and catch_up(settings) == []
    publish(settings, SNAPSHOTS[0], 1)  # a re-run published the snapshot again at another version
    assert stale_snapshots(settings) == [SNAPSHOTS[0]]


def test_the_run_summary_says_where_the_exports_and_campaign_lists_are(lake):
    from jobs.ops.summary import export_lines

    settings, _ = lake
    day = SNAPSHOTS[-1]
    assert "none for" in export_lines(settings, day)[0] and "jobs.ops.exports" in export_lines(settings, day)[0]
    manifest = export_snapshot(settings, day)
    lines = export_lines(settings, day)
    assert str(settings.path("exports_dir") / f"snapshot_date={day}") in lines[0]
    for campaign in manifest["campaigns"]:
        assert any(campaign["campaign"] in line and campaign["csv"] in line for line in lines[1:])


def test_a_cluster_far_from_every_profile_gets_a_list_of_its_own():
    gold = pd.DataFrame({column: [None] * 4 for column in EXPORT_COLUMNS})
    gold["customer_id"] = ["C3", "C1", "C2", "C4"]
    gold["cluster_label"] = ["VIP", "Unprofiled", "Loyal", "Unprofiled"]
    gold["rfm_segment"] = ["Lost", "Champions", "Champions", "Champions"]
    lists = segment_lists(gold)
    assert list(lists[("cluster", "Unprofiled")]["customer_id"]) == ["C1", "C4"]
    assert slug("Unprofiled") == "unprofiled"
