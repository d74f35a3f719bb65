"""The label gate and the warnings on a small real lake (issue 28, item 7): generated transactions,
silver snapshots, then the cluster and label steps night by night (k = 4, one retrain).

Night 1 publishes; night 2 fails its meaning checks (a check no labelling can pass): nothing is
written or published, the failure names each check; night 3 builds on night 1, the last published
snapshot, and posts its warnings to a webhook; night 2 re-run with the conf's checks publishes.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from deltalake import DeltaTable

from jobs.adapters import lake, tracking
from jobs.adapters.publish import published_versions
from jobs.config import LabelCheck
from jobs.definitions import LABEL_GATE_TAG, WARNINGS_TAG
from jobs.errors import LabelGateError, LakeStateError
from jobs.steps.cluster import cluster_day
from jobs.steps.clv import clv_day
from jobs.steps.label import label_day
from tests.conftest import settings_for
from tests.helpers import generated_rows, write_rfm_snapshots

NIGHTS = [date(2011, 12, 6), date(2011, 12, 7), date(2011, 12, 8)]
IMPOSSIBLE = LabelCheck(label="VIP", measure="recency_days", statistic="median", rank="highest")


def gold(settings, name: str) -> pd.DataFrame:
    return DeltaTable(str(settings.table_path(name))).to_pandas()


def night_tags(settings, day: date) -> dict[str, str]:
    runs = tracking.runs_for_date(settings, settings.dag.dag_id, day)
    assert len(runs) == 1
    return runs[0].data.tags


@pytest.fixture(scope="module")
def lake_nights(spark, tmp_path_factory):
    """Silver snapshots of three nights and their clusters (k = 4, retrained on night 1 only); night 1 labelled."""
    path = tmp_path_factory.mktemp("generated") / "export.csv"
    settings = settings_for(tmp_path_factory.mktemp("gate"), clustering={"k": 4}, model={"retrain_every_days": 30})
    transactions = generated_rows(spark, settings, path, customers=500, days=90, seed=11, end_date=NIGHTS[-1])
    write_rfm_snapshots(settings, transactions, NIGHTS)
    for night in NIGHTS:
        cluster_day(night, settings, spark)
    first = label_day(NIGHTS[0], settings, spark)
    return settings, first


def with_checks(settings, checks: list[LabelCheck]):
    return settings.model_copy(update={"labels": settings.labels.model_copy(update={"checks": checks})})


def test_a_night_that_fails_its_checks_publishes_nothing_and_names_them(spark, lake_nights) -> None:
    settings, first = lake_nights
    assert first["empty_labels"] == [] and night_tags(settings, NIGHTS[0])[LABEL_GATE_TAG] == "passed"
    before = {
        name: lake.current_version(settings.table_path(name)) for name in ("gold_customer_segments", "gold_published")
    }
    strict = with_checks(settings, [*settings.labels.checks, IMPOSSIBLE])

    with pytest.raises(LabelGateError) as failed:
        label_day(NIGHTS[1], strict, spark)

    assert len(failed.value.checks) == 1
    assert (
        failed.value.checks[0].startswith("VIP: median recency_days ")
        and "is not the highest" in failed.value.checks[0]
    )
    assert str(NIGHTS[1]) in str(failed.value) and failed.value.checks[0] in str(failed.value)
    after = {name: lake.current_version(settings.table_path(name)) for name in before}
    assert after == before, "nothing written, nothing published"
    assert set(published_versions(settings.table_path("gold_published"))) == {NIGHTS[0]}
    assert NIGHTS[1] not in set(gold(settings, "gold_customer_segments")["snapshot_date"])
    assert night_tags(settings, NIGHTS[1])[LABEL_GATE_TAG] == "failed"
    with pytest.raises(LakeStateError, match="the label step has not published this snapshot"):
        clv_day(NIGHTS[1], settings, spark)  # nothing to add value to: the night stays unpublished


def test_the_next_night_builds_on_the_last_published_snapshot_and_warns(spark, lake_nights, receiver) -> None:
    settings, _ = lake_nights
    url, received = receiver
    alerts = settings.alerts.model_copy(
        update={"webhook_url": url, "max_share_move_points": 0.01, "min_idle_stability": 1.0}
    )
    touchy = settings.model_copy(update={"alerts": alerts})

    third = label_day(NIGHTS[2], touchy, spark)

    assert third["previous_snapshot"] == NIGHTS[0].isoformat(), "night 2 never published: night 1 is the previous"
    transitions = gold(settings, "gold_segment_transitions")
    assert set(transitions.loc[transitions["snapshot_date"] == NIGHTS[2], "previous_snapshot_date"]) == {NIGHTS[0]}
    assert third["warnings"], "two nights apart, some share moves more than 0.01 points"
    assert len(received) == 1
    text = received[0]["text"]
    title = f":warning: {settings.dag.dag_id} {NIGHTS[2]}: label published with {len(third['warnings'])} warning(s)"
    assert text.startswith(title)
    assert all(f"• {line.replace('>', '&gt;')}" in text for line in third["warnings"])
    assert "MLflow run: http" in text
    assert night_tags(settings, NIGHTS[2])[f"{WARNINGS_TAG}.label"] == str(len(third["warnings"]))
    if third["stability"].get("stability_population", 0) and third["stability"]["label_stability_cluster"] < 1:
        assert any(line.startswith("idle-customer label stability") for line in third["warnings"])


def test_a_rerun_of_the_failed_night_with_passing_checks_publishes_it(spark, lake_nights) -> None:
    settings, _ = lake_nights
    second = label_day(NIGHTS[1], settings, spark)
    assert second["previous_snapshot"] == NIGHTS[0].isoformat()
    assert NIGHTS[1] in published_versions(settings.table_path("gold_published"))
    assert night_tags(settings, NIGHTS[1])[LABEL_GATE_TAG] == "passed"
    again = label_day(NIGHTS[1], settings, spark)
    assert again["cluster_labels"] == second["cluster_labels"]
    segments = gold(settings, "gold_customer_segments")
    assert segments[segments["snapshot_date"] == NIGHTS[1]]["customer_id"].is_unique, "a re-run replaces its slice"
