"""One continuity rule for every writer of the lake (issue 12, items 12 and 13): no gap, and no
day reloaded while later days computed from it stand, unless a re-run from it is under way."""

from __future__ import annotations

from datetime import date, timedelta

from jobs.adapters.audit import begin_rerun, continuity_problem, end_rerun, gap_problem, rerun_from, stale_problem

D = date(2011, 12, 5)


def days(first: date, last: date) -> set[date]:
    return {first + timedelta(days=n) for n in range((last - first).days + 1)}


def test_a_night_after_the_latest_loaded_day_is_fine() -> None:
    assert continuity_problem(set(), D, D) is None
    assert continuity_problem(days(D - timedelta(days=9), D - timedelta(days=1)), D, D) is None


def test_a_gap_is_refused_naming_the_missing_day() -> None:
    """Unpausing after a backfill to X: the night of yesterday finds X+1 missing, whoever loaded X."""
    loaded = days(date(2011, 12, 1), date(2011, 12, 3))
    problem = gap_problem(loaded, date(2011, 12, 9), date(2011, 12, 9))
    assert problem is not None and "2011-12-08" in problem


def test_history_in_front_must_touch_the_loaded_days() -> None:
    loaded = days(D, D + timedelta(days=3))
    assert gap_problem(loaded, D - timedelta(days=5), D - timedelta(days=1)) is None
    problem = gap_problem(loaded, D - timedelta(days=5), D - timedelta(days=3))
    assert problem is not None and str(D - timedelta(days=2)) in problem


def test_reloading_a_day_with_later_days_is_refused_naming_them() -> None:
    loaded = days(D, D + timedelta(days=3))
    problem = stale_problem(loaded, D + timedelta(days=1), D + timedelta(days=1))
    assert problem is not None
    assert f"{D + timedelta(days=2)} .. {D + timedelta(days=3)}" in problem
    assert f"make rerun FROM={D + timedelta(days=1)}" in problem
    # a retry of the latest night is not a re-run of an old one
    assert stale_problem(loaded, D + timedelta(days=3), D + timedelta(days=3)) is None


def test_a_rerun_under_way_allows_its_days_in_order(settings) -> None:
    loaded = days(D, D + timedelta(days=3))
    begin_rerun(settings, D + timedelta(days=1), D + timedelta(days=3))
    started = rerun_from(settings)
    assert started == D + timedelta(days=1)
    assert stale_problem(loaded, D + timedelta(days=2), D + timedelta(days=2), started) is None
    assert stale_problem(loaded, D, D, started) is not None, "a day before the re-run's start stays refused"
    end_rerun(settings)
    assert rerun_from(settings) is None
