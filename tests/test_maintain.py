"""Lake maintenance (issue 13, item 4): OPTIMIZE compacts, VACUUM deletes only what no kept version needs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from jobs.steps.maintain import oldest_kept_versions, retention_hours, slice_untouched

D1, D2, D3, D4 = (date(2011, 12, day) for day in (6, 7, 8, 9))
NOW = datetime(2011, 12, 10, 4, tzinfo=UTC)


def test_kept_versions_are_the_oldest_named_within_the_window() -> None:
    references = [(D1, "t", 1), (D2, "t", 5), (D3, "t", 3), (D4, "t", 9), (D4, "u", 2)]
    assert oldest_kept_versions(references, window_start=D2) == {"t": 3, "u": 2}
    assert oldest_kept_versions(references, window_start=None) == {"t": 1, "u": 2}
    assert oldest_kept_versions(references, window_start=date(2012, 1, 1)) == {}


def test_retention_covers_the_oldest_kept_commit_until_the_next_run_in_whole_hours() -> None:
    # age 240 h (+ 5 min clock margin) + 168 h until the next weekly run, rounded up
    assert retention_hours(NOW - timedelta(days=10), NOW, minimum_hours=168) == 409
    assert retention_hours(NOW - timedelta(hours=2), NOW, minimum_hours=168) == 171
    assert retention_hours(None, NOW, minimum_hours=24) == 24
    assert retention_hours(NOW - timedelta(seconds=10), NOW, minimum_hours=0) == 1


def commit(version: int, operation: str, predicate: str | None = None) -> dict:
    return {"version": version, "operation": operation, "operationParameters": {"predicate": predicate}}


def test_retention_properties_keep_the_files_and_the_commit_log_for_the_retention() -> None:
    from jobs.steps.maintain import retention_properties

    assert retention_properties(168) == {"delta.deletedFileRetentionDuration": "interval 168 hours"}
    assert retention_properties(40 * 24) == {
        "delta.deletedFileRetentionDuration": "interval 960 hours",
        "delta.logRetentionDuration": "interval 41 days",
    }


def test_a_snapshot_moves_forward_only_past_compactions_and_writes_of_other_dates() -> None:
    history = [
        commit(4, "WRITE", f"snapshot_date = DATE'{D2.isoformat()}'"),
        commit(5, "OPTIMIZE"),
        commit(6, "WRITE", f"snapshot_date = DATE'{D1.isoformat()}'"),
        commit(7, "MERGE"),  # no predicate: may have touched any date
    ]
    assert slice_untouched(history, D1, after=3, through=5)
    assert not slice_untouched(history, D2, after=3, through=5)
    assert not slice_untouched(history, D1, after=3, through=6)
    assert not slice_untouched(history, D3, after=3, through=7)
    assert slice_untouched(history, D3, after=3, through=6)


def test_optimize_and_vacuum_keep_every_recorded_version_and_delete_the_rest(spark, settings) -> None:
    from jobs.adapters import lake
    from jobs.adapters.audit import write_audit
    from jobs.steps.maintain import maintain

    maintenance = settings.maintenance.model_copy(update={"reproducible_days": 2, "min_retention_hours": 0})
    settings = settings.model_copy(update={"maintenance": maintenance})
    recorded, unrecorded = settings.table_path("silver_daily_sales"), settings.table_path("silver_daily_country")

    def write(path, day: date, value: int) -> int:
        frame = spark.range(6).selectExpr(f"DATE'{day.isoformat()}' AS sales_date", f"id + {value} AS revenue")
        return lake.replace_slice(frame.repartition(3), path, f"sales_date = {lake.date_literal(day)}", "sales_date")

    versions = {
        path: [write(path, D1, 0), write(path, D1, 100), write(path, D2, 200), write(path, D3, 300)]
        for path in (recorded, unrecorded)
    }
    for day, version in ((D1, versions[recorded][1]), (D2, versions[recorded][2]), (D3, versions[recorded][3])):
        write_audit(spark, settings, day, "ingest", 6, {}, {"silver_daily_sales": version})
    expected = {v: sorted(lake.read(spark, recorded, v).collect()) for v in versions[recorded]}
    latest = sorted(lake.read(spark, unrecorded).collect())

    reports = {r.table: r for r in maintain(settings, spark)}

    kept = reports["silver_daily_sales"]
    assert kept.kept_from_version == versions[recorded][2], "D1 is outside the 2-day window: its version is not kept"
    assert kept.retention_hours >= 1
    assert kept.after.active_files < kept.before.active_files, "OPTIMIZE compacts each date into one file"
    properties = spark.sql(f"DESCRIBE DETAIL {lake.sql_path(recorded)}").first()["properties"]
    assert properties["delta.deletedFileRetentionDuration"] == f"interval {kept.retention_hours} hours", (
        "VACUUM keeps what the table property says (Delta 4 ignores a RETAIN argument other than 0 hours)"
    )
    for version in versions[recorded][2:]:
        assert sorted(lake.read(spark, recorded, version).collect()) == expected[version], f"version {version} kept"
    assert sorted(lake.read(spark, recorded).collect()) == expected[versions[recorded][3]], "data unchanged"

    swept = reports["silver_daily_country"]
    assert swept.kept_from_version is None and swept.retention_hours == 0, "no record names this table"
    assert swept.after.files == swept.after.active_files < swept.before.files, "only the current files remain"
    assert sorted(lake.read(spark, unrecorded).collect()) == latest
    # gone: Delta now refuses time travel beyond the table's retention (its files are deleted too, above)
    with pytest.raises(Exception, match="TIME_TRAVEL_BEYOND_DELETED_FILE_RETENTION|FileNotFound|FILE_NOT_EXIST"):
        lake.read(spark, unrecorded, versions[unrecorded][0]).collect()
