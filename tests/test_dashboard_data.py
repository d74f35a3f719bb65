"""The dashboard's data layer on a small real Delta lake: filters → results, checked against pandas."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from app.data import VALUE_COLUMNS, Filters, SegmentLake
from jobs.definitions import GONE_CUSTOMER, NEW_CUSTOMER
from tests.conftest import settings_for
from tests.dashboard_fixture import (
    SNAPSHOTS,
    OffLoopClient,
    customers_of,
    grid_request,
    write_gold_fixture,
    write_snapshot,
)

LAST = SNAPSHOTS[-1]


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dashboard") / "lake"


@pytest.fixture(scope="module")
def customers(lake_dir: Path) -> pd.DataFrame:
    return write_gold_fixture(lake_dir)


@pytest.fixture(scope="module")
def segment_lake(lake_dir: Path, customers: pd.DataFrame) -> SegmentLake:
    settings = settings_for(lake_dir.parent)
    return SegmentLake.from_settings(settings)


def on(customers: pd.DataFrame, day: date, **equal: str) -> pd.DataFrame:
    rows = customers[customers["snapshot_date"] == day]
    for column, value in equal.items():
        rows = rows[rows[column] == value]
    return rows


def test_snapshot_dates_countries_and_segments(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    assert segment_lake.snapshot_dates() == sorted(set(customers["snapshot_date"]))
    assert segment_lake.countries(LAST) == sorted(set(on(customers, LAST)["country"]))
    present = set(on(customers, LAST)["cluster_label"])
    assert segment_lake.segments("cluster", LAST) == [
        s for s in ["VIP", "Loyal", "At-Risk", "Low-Value"] if s in present
    ]
    assert set(segment_lake.segments("rfm", LAST)) == set(on(customers, LAST)["rfm_segment"])


def test_overview_from_the_summary_table(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    overview = segment_lake.overview(Filters(LAST, "rfm")).set_index("segment")
    rows = on(customers, LAST)
    expected = rows.groupby("rfm_segment").agg(
        customers=("customer_id", "size"), money=("monetary", "sum"), mean_frequency=("frequency", "mean")
    )
    assert overview["customers"].to_dict() == expected["customers"].to_dict()
    assert overview["customer_share"].sum() == pytest.approx(1)
    for segment, row in expected.iterrows():
        assert overview.loc[segment, "revenue_share"] == pytest.approx(row["money"] / rows["monetary"].sum())
        assert overview.loc[segment, "mean_frequency"] == pytest.approx(row["mean_frequency"])


def test_overview_of_a_country_and_a_segment(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    overview = segment_lake.overview(Filters(LAST, "cluster", segment="VIP", country="France"))
    france = on(customers, LAST, country="France")
    vip = france[france["cluster_label"] == "VIP"]
    assert overview["segment"].tolist() == ["VIP"]
    row = overview.iloc[0]
    assert row["customers"] == len(vip)
    assert row["customer_share"] == pytest.approx(len(vip) / len(france))
    assert row["revenue_share"] == pytest.approx(vip["monetary"].sum() / france["monetary"].sum())
    assert row["mean_recency_days"] == pytest.approx(vip["recency_days"].mean())


def test_sizes_over_time_with_and_without_country(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    for country in (None, "Germany"):
        rows = customers if country is None else customers[customers["country"] == country]
        expected = rows.groupby(["snapshot_date", "cluster_label"]).size().to_dict()
        sizes = segment_lake.sizes_over_time("cluster", country=country)
        assert sizes.set_index(["snapshot_date", "segment"])["customers"].to_dict() == expected


def test_box_stats_and_histograms(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    filters = Filters(LAST, "cluster", country="United Kingdom")
    rows = on(customers, LAST, country="United Kingdom")
    stats = segment_lake.box_stats(filters).set_index(["segment", "measure"])
    for (segment, measure), row in stats.iterrows():
        values = rows.loc[rows["cluster_label"] == segment, measure]
        assert row["customers"] == len(values)
        assert row["median"] == pytest.approx(np.percentile(values, 50))
        assert row["q3"] == pytest.approx(np.percentile(values, 75))
    linear = segment_lake.histograms(filters, bins=10).query("measure == 'recency_days'")
    edges = np.linspace(rows["recency_days"].min(), rows["recency_days"].max(), 11)
    for segment, bins in linear.groupby("segment"):
        expected, _ = np.histogram(rows.loc[rows["cluster_label"] == segment, "recency_days"], bins=edges)
        assert bins["customers"].tolist() == expected.tolist()
    hist = segment_lake.histograms(filters, bins=10, log_scale=True)
    counts = hist.groupby(["segment", "measure"])["customers"].sum()
    assert counts.to_dict() == {(s, m): n for (s, m), n in stats["customers"].items()}
    monetary = hist[hist["measure"] == "monetary"]
    assert np.allclose(
        np.diff(np.log(monetary["bin_start"].unique())), np.log(monetary["bin_end"] / monetary["bin_start"]).iloc[0]
    )


def test_scatter_samples_above_the_limit(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    filters = Filters(LAST, "cluster", segment="Loyal")
    expected = on(customers, LAST, cluster_label="Loyal")
    points, total = segment_lake.scatter_points(filters, max_points=1000)
    assert total == len(expected) and sorted(points["customer_id"]) == sorted(expected["customer_id"])
    sample, total = segment_lake.scatter_points(filters, max_points=10)
    assert total == len(expected) and len(sample) == 10
    assert set(sample["customer_id"]) <= set(expected["customer_id"])


def test_migration_counts_every_customer_once(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    earlier, later = SNAPSHOTS[1], SNAPSHOTS[2]
    before = on(customers, earlier)[["customer_id", "cluster_label", "monetary"]]
    after = on(customers, later)[["customer_id", "cluster_label", "monetary"]]
    both = before.merge(after, on="customer_id", how="outer", suffixes=("_before", "_after"))
    both["source"] = both["cluster_label_before"].fillna(NEW_CUSTOMER)
    both["target"] = both["cluster_label_after"].fillna(GONE_CUSTOMER)
    both["money"] = both["monetary_after"].fillna(both["monetary_before"])
    expected = both.groupby(["source", "target"]).agg(customers=("customer_id", "size"), money=("money", "sum"))
    flows = segment_lake.migration("cluster", earlier, later).set_index(["source", "target"])
    assert flows["customers"].to_dict() == expected["customers"].to_dict()
    assert flows["monetary"].to_dict() == pytest.approx(expected["money"].to_dict())
    assert flows["customers"].sum() == len(set(before["customer_id"]) | set(after["customer_id"]))
    assert any(s == NEW_CUSTOMER for s, _ in flows.index)
    assert any(t == GONE_CUSTOMER for _, t in flows.index)
    latest = pd.concat([on(customers, earlier), on(customers, later)]).drop_duplicates("customer_id", keep="last")
    both["country"] = both["customer_id"].map(latest.set_index("customer_id")["country"])  # later's, else earlier's
    france = segment_lake.migration("cluster", earlier, later, country="France").set_index(["source", "target"])
    assert (
        france["customers"].to_dict()
        == both[both["country"] == "France"].groupby(["source", "target"]).size().to_dict()
    )
    only_vip = segment_lake.migration("cluster", earlier, later, segment="VIP")
    assert ((only_vip["source"] == "VIP") | (only_vip["target"] == "VIP")).all()
    assert only_vip["customers"].sum() == ((both["source"] == "VIP") | (both["target"] == "VIP")).sum()


def test_customer_page_sorts_filters_and_pages(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    filters = Filters(LAST, "rfm", country="United Kingdom")
    grid_filter = {
        "monetary": {"filterType": "number", "type": "greaterThan", "filter": 300},
        "customer_id": {
            "filterType": "text",
            "operator": "OR",
            "conditions": [
                {"filterType": "text", "type": "endsWith", "filter": "1"},
                {"filterType": "text", "type": "endsWith", "filter": "2"},
            ],
        },
    }
    expected = on(customers, LAST, country="United Kingdom")
    expected = expected[(expected["monetary"] > 300) & expected["customer_id"].str[-1].isin(["1", "2"])]
    expected = expected.sort_values(["recency_days", "customer_id"], ascending=[False, True])
    rows, total = segment_lake.customer_page(filters, 2, 7, [{"colId": "recency_days", "sort": "desc"}], grid_filter)
    assert total == len(expected)
    assert [r["customer_id"] for r in rows] == expected["customer_id"].iloc[2:7].tolist()
    assert rows[0]["first_purchase_date"] == expected["first_purchase_date"].iloc[2].isoformat()


def test_customer_csv_has_the_filtered_rows(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    filters = Filters(LAST, "cluster", segment="At-Risk", country="United Kingdom")
    exported = pd.read_csv(io.BytesIO(segment_lake.customer_csv(filters)), dtype={"customer_id": str})
    expected = on(customers, LAST, cluster_label="At-Risk", country="United Kingdom").sort_values("customer_id")
    assert exported["customer_id"].tolist() == expected["customer_id"].tolist()
    assert exported["monetary"].tolist() == pytest.approx(expected["monetary"].tolist())


def test_value_per_segment_and_the_at_risk_value_list(segment_lake: SegmentLake, customers: pd.DataFrame) -> None:
    """Issue 14: P(alive) and CLV distributions per segment; the win-back list is one toggle."""
    rows = on(customers, LAST, country="France")
    stats = segment_lake.value_stats(Filters(LAST, "cluster", country="France")).set_index(["segment", "measure"])
    assert set(stats.index.get_level_values("measure")) == {"p_alive", "p_purchase_90d_calibrated", "clv_12m"}
    for label, group in rows.groupby("cluster_label"):
        clv = stats.loc[(label, "clv_12m")]
        assert clv["customers"] == len(group)
        assert clv["median"] == pytest.approx(group["clv_12m"].median())
        assert clv["mean"] == pytest.approx(group["clv_12m"].mean())
        assert stats.loc[(label, "p_alive"), "q1"] == pytest.approx(group["p_alive"].quantile(0.25))
    flagged = rows[rows["at_risk_value"]]
    counts = segment_lake.at_risk_counts(Filters(LAST, "cluster", country="France")).set_index("segment")
    assert counts["customers"].to_dict() == flagged.groupby("cluster_label").size().to_dict()
    win_back = Filters(LAST, "cluster", country="France", at_risk_only=True)
    page, total = segment_lake.customer_page(win_back, 0, 500, [{"colId": "clv_12m", "sort": "desc"}])
    assert total == len(flagged) > 0
    assert [r["customer_id"] for r in page] == flagged.sort_values("clv_12m", ascending=False)["customer_id"].tolist()
    assert all(r["at_risk_value"] for r in page) and page[0]["clv_12m"] == pytest.approx(flagged["clv_12m"].max())
    exported = pd.read_csv(io.BytesIO(segment_lake.customer_csv(win_back)), dtype={"customer_id": str})
    assert sorted(exported["customer_id"]) == sorted(flagged["customer_id"])


def test_at_risk_customers_crossed_by_cluster_label_and_rfm_segment(
    segment_lake: SegmentLake, customers: pd.DataFrame
) -> None:
    """Issue 28 item 5: where the one at-risk definition falls in both labellings (the country filter
    applies; the scheme and segment filters do not: both labels are the axes)."""
    rows = on(customers, LAST, country="United Kingdom")
    flagged = rows[rows["at_risk_value"]]
    expected = pd.crosstab(flagged["cluster_label"], flagged["rfm_segment"])
    crossed = segment_lake.at_risk_crosstab(Filters(LAST, "rfm", segment="Champions", country="United Kingdom"))
    assert int(crossed.to_numpy().sum()) == len(flagged) > 0
    for label in expected.index:
        for segment in expected.columns:
            assert crossed.loc[label, segment] == expected.loc[label, segment]
    order = segment_lake.segment_order["cluster"]
    assert list(crossed.index) == [label for label in order if label in set(flagged["cluster_label"])]
    assert segment_lake.at_risk_crosstab(Filters(date(2011, 1, 1))).empty


def test_the_forecast_scorecard_of_a_published_night(tmp_path: Path) -> None:
    """The scorecard is read at the version the night published; a night that published none has none."""
    from deltalake import DeltaTable, write_deltalake

    from jobs.core.scorecard import scorecard

    lake_dir = tmp_path / "lake"
    first = customers_of(SNAPSHOTS[0], 40, seed=1)
    write_snapshot(lake_dir, first)
    publish_record(lake_dir, SNAPSHOTS[0])
    forecast = first.rename(
        columns={"p_purchase_90d_calibrated": "p_purchase", "expected_purchases_90d": "expected_purchases"}
    ).assign(expected_spend=first["expected_spend_90d"])
    actual = pd.DataFrame({"purchases": [2, 1], "spend": [50.0, 10.0]}, index=first["customer_id"].head(2))
    card = scorecard(forecast, actual, SNAPSHOTS[0], LAST)
    path = lake_dir / "gold" / "forecast_scorecard"
    write_deltalake(str(path), card, partition_by=["snapshot_date"], mode="append")
    write_snapshot(lake_dir, customers_of(LAST, 30, seed=2))
    publish_record(lake_dir, LAST, {"gold_forecast_scorecard": DeltaTable(str(path)).version()})
    reader = SegmentLake.from_settings(settings_for(tmp_path))
    shown = reader.forecast_scorecard(LAST)
    assert len(shown) == len(card) and shown.iloc[0][["label_scheme", "segment"]].tolist() == ["all", "all"]
    assert shown.iloc[0]["customers"] == 40 and shown.iloc[0]["mean_actual_purchases"] == pytest.approx(3 / 40)
    assert shown.iloc[0]["actual_spend"] == pytest.approx(60.0)
    assert reader.forecast_scorecard(SNAPSHOTS[0]).empty, "published before any scorecard"


def test_a_lake_without_value_columns_shows_them_empty(tmp_path: Path) -> None:
    """Gold written before the clv step existed (or without it): the views work, the value view is empty."""
    from deltalake import write_deltalake

    from tests.dashboard_fixture import SEGMENTS_SCHEMA

    lake_dir = tmp_path / "lake"
    write_snapshot(lake_dir, customers_of(LAST, 30, seed=3))
    old_schema = pa.schema([f for f in SEGMENTS_SCHEMA if f.name not in VALUE_COLUMNS])
    old = customers_of(LAST, 30, seed=3)[old_schema.names]
    segments = lake_dir / "gold" / "customer_segments"
    write_deltalake(
        str(segments),
        pa.Table.from_pandas(old, schema=old_schema, preserve_index=False),
        partition_by=["snapshot_date"],
        mode="overwrite",
        schema_mode="overwrite",
    )
    segment_lake = SegmentLake.from_settings(settings_for(tmp_path))
    rows, total = segment_lake.customer_page(Filters(LAST), 0, 10)
    assert total == len(old) and rows[0]["clv_12m"] is None and rows[0]["at_risk_value"] is None
    assert segment_lake.value_stats(Filters(LAST)).empty
    assert segment_lake.customer_page(Filters(LAST, at_risk_only=True), 0, 10) == ([], 0)


def test_a_date_without_a_snapshot_gives_empty_results(segment_lake: SegmentLake) -> None:
    missing = Filters(date(2011, 1, 1))
    assert segment_lake.overview(missing).empty
    assert segment_lake.customer_page(missing, 0, 10) == ([], 0)


def test_empty_lake(tmp_path: Path) -> None:
    empty = SegmentLake.from_settings(settings_for(tmp_path))
    assert not empty.has_data()
    assert empty.overview(Filters(LAST)).empty and empty.sizes_over_time("cluster").empty
    assert empty.customer_page(Filters(LAST), 0, 10) == ([], 0)


def test_a_new_snapshot_shows_up_without_a_new_reader(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    write_snapshot(lake_dir, customers_of(SNAPSHOTS[0], 30, seed=1))
    segment_lake = SegmentLake.from_settings(settings_for(tmp_path))
    assert segment_lake.snapshot_dates() == [SNAPSHOTS[0]]
    assert segment_lake.overview(Filters(SNAPSHOTS[0]))["customers"].sum() == 30
    write_snapshot(lake_dir, customers_of(SNAPSHOTS[1], 40, seed=2))
    assert segment_lake.snapshot_dates() == SNAPSHOTS[:2]
    assert segment_lake.overview(Filters(SNAPSHOTS[1]))["customers"].sum() == 40
    assert segment_lake.sizes_over_time("cluster").groupby("snapshot_date")["customers"].sum().tolist() == [30, 40]


# --- inputs from the page are validated (issue 12, item 15) -----------------------------------------


@pytest.fixture(scope="module")
def client(segment_lake: SegmentLake, lake_dir: Path):
    from app.views import create_app

    config = settings_for(lake_dir.parent).dashboard
    app = create_app(segment_lake, config, warm_up=False)
    http = OffLoopClient(app.server.test_client())
    http.get("/")  # Dash registers its routes lazily on the first request
    return http, config


def test_a_page_of_customers_within_the_cap_is_served(client) -> None:
    http, config = client
    answer = http.post("/_dash-update-component", json=grid_request(LAST.isoformat(), "rfm", 0, config.page_size))
    assert answer.status_code == 200
    assert len(answer.get_json()["response"]["customer-grid"]["getRowsResponse"]["rowData"]) > 0


@pytest.mark.parametrize(
    ("day", "scheme", "start", "end", "why"),
    [
        (LAST.isoformat(), "bogus", 0, 10, "unknown label scheme 'bogus'"),
        (LAST.isoformat(), "rfm", 0, 10**9, "at most"),
        (LAST.isoformat(), "rfm", -5, 5, "at most"),
        ("not-a-date", "rfm", 0, 10, "not a date"),
    ],
    ids=["unknown-scheme", "page-too-large", "negative-start", "bad-date"],
)
def test_a_bad_request_is_a_400_not_a_500(client, day, scheme, start, end, why) -> None:
    http, _ = client
    answer = http.post("/_dash-update-component", json=grid_request(day, scheme, start, end))
    assert answer.status_code == 400
    assert why in answer.get_json()["error"]


def test_basic_auth_when_configured_and_required_off_loopback(segment_lake: SegmentLake, lake_dir: Path) -> None:
    import base64

    from app.security import ExposedWithoutAuth, protect
    from app.views import create_app

    base = settings_for(lake_dir.parent).dashboard
    exposed = base.model_copy(update={"host": "0.0.0.0"})
    with pytest.raises(ExposedWithoutAuth, match="AUTH_PASSWORD"):
        protect(create_app(segment_lake, exposed, warm_up=False), exposed)
    secured = exposed.model_copy(update={"auth_user": "analyst", "auth_password": "s3cret"})
    http = protect(create_app(segment_lake, secured, warm_up=False), secured).server.test_client()
    assert http.get("/").status_code == 401
    token = base64.b64encode(b"analyst:s3cret").decode()
    assert http.get("/", headers={"Authorization": f"Basic {token}"}).status_code == 200
    assert protect(create_app(segment_lake, base, warm_up=False), base) is not None  # loopback: no login needed


# --- readers see published snapshots only, at their published versions (issue 12, item 9) -----------


def publish_record(lake_dir: Path, day: date, more: dict[str, int] | None = None) -> None:
    """What the label step writes last: the day's versions of the gold tables (delta-rs here), and
    ``more`` (the clv step's scorecard)."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    versions = {
        name: DeltaTable(str(lake_dir / path)).version()
        for name, path in (
            ("gold_customer_segments", "gold/customer_segments"),
            ("gold_segment_summary", "gold/segment_summary"),
            ("gold_segment_transitions", "gold/customer_segments"),
        )
    } | (more or {})
    schema = pa.schema([("snapshot_date", pa.date32()), ("table_versions", pa.map_(pa.string(), pa.int64()))])
    table = pa.Table.from_pylist([{"snapshot_date": day, "table_versions": list(versions.items())}], schema=schema)
    write_deltalake(str(lake_dir / "gold" / "published"), table, partition_by=["snapshot_date"], mode="append")


def test_a_snapshot_half_written_is_not_shown_until_published(tmp_path: Path) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    from tests.dashboard_fixture import SEGMENTS_SCHEMA, summary_of

    lake_dir = tmp_path / "lake"
    first = customers_of(SNAPSHOTS[0], 40, seed=1)
    write_snapshot(lake_dir, first)
    publish_record(lake_dir, SNAPSHOTS[0])
    reader = SegmentLake.from_settings(settings_for(tmp_path))
    assert reader.snapshot_dates() == [SNAPSHOTS[0]]

    # the night of D crashes after its first gold write (segments): nothing of D is visible
    crashed = customers_of(LAST, 30, seed=2)
    segments = pa.Table.from_pandas(crashed[SEGMENTS_SCHEMA.names], schema=SEGMENTS_SCHEMA, preserve_index=False)
    write_deltalake(
        str(lake_dir / "gold" / "customer_segments"), segments, partition_by=["snapshot_date"], mode="append"
    )
    assert reader.snapshot_dates() == [SNAPSHOTS[0]]
    assert reader.snapshot(LAST) is None
    assert LAST not in set(reader.sizes_over_time("rfm")["snapshot_date"])
    assert reader.snapshot(SNAPSHOTS[0]).num_rows == len(first), "the published snapshot reads as it was"

    # a re-run of D completes the writes and publishes: D shows, whole
    from tests.dashboard_fixture import SUMMARY_SCHEMA

    summary = pa.Table.from_pandas(
        summary_of(crashed)[SUMMARY_SCHEMA.names], schema=SUMMARY_SCHEMA, preserve_index=False
    )
    write_deltalake(str(lake_dir / "gold" / "segment_summary"), summary, partition_by=["snapshot_date"], mode="append")
    publish_record(lake_dir, LAST)
    assert reader.snapshot_dates() == [SNAPSHOTS[0], LAST]
    assert reader.snapshot(LAST).num_rows == len(crashed)
    assert LAST in set(reader.sizes_over_time("rfm")["snapshot_date"])


def test_unprofiled_clusters_are_listed_after_the_labels(settings) -> None:
    lake = SegmentLake.from_settings(settings)
    assert lake.segment_order["cluster"] == [*settings.labels.cluster_labels, settings.labels.unmatched_label]
    assert lake._ordered("cluster", {"Unprofiled", "Low-Value", "VIP"}) == ["VIP", "Low-Value", "Unprofiled"]
