"""One writer per (step, run date) (issue 12, item 10): a lease file in the lake, released on any
exit, broken when its holder is gone, and a write returns the version it committed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from jobs.adapters.lease import LeaseHeldError, held_leases, lease, lease_path

D = date(2011, 12, 9)


def test_a_second_writer_fails_naming_the_holder(tmp_path) -> None:
    with lease(tmp_path, "cluster", D):
        with pytest.raises(LeaseHeldError, match=rf"cluster of {D} is already running: pid {os.getpid()}"):
            with lease(tmp_path, "cluster", D):
                pass
        with lease(tmp_path, "cluster", D + timedelta(days=1)):  # another date: its own lease
            pass
        with lease(tmp_path, "label", D):  # another step: its own lease
            pass
    assert held_leases(tmp_path) == []


def test_a_second_process_is_refused_too(tmp_path) -> None:
    code = (
        "import sys; from datetime import date; from pathlib import Path\n"
        "from jobs.adapters.lease import lease, LeaseHeldError\n"
        f"try:\n    with lease(Path({str(tmp_path)!r}), 'cluster', date(2011, 12, 9)): pass\n"
        "except LeaseHeldError as e:\n    print(e); sys.exit(3)\n"
    )
    with lease(tmp_path, "cluster", D):
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert other.returncode == 3 and f"pid {os.getpid()}" in other.stdout
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr


def test_the_lease_is_released_when_the_step_fails(tmp_path) -> None:
    with pytest.raises(ZeroDivisionError), lease(tmp_path, "ingest", D):
        1 / 0  # noqa: B018
    assert held_leases(tmp_path) == []


def write_lease(tmp_path, pid: int, expires: datetime, host: str | None = None) -> None:
    path = lease_path(tmp_path, "ingest", D)
    path.parent.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    path.write_text(
        json.dumps(
            {
                "host": host or socket.gethostname(),
                "pid": pid,
                "token": "old",
                "acquired_at": now.isoformat(),
                "expires_at": expires.isoformat(),
            }
        )
    )


def test_a_lease_of_a_dead_process_is_broken(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_lease(tmp_path, dead.pid, datetime.now(UTC) + timedelta(hours=1))
    with lease(tmp_path, "ingest", D) as held:
        assert held["pid"] == os.getpid()
    assert held_leases(tmp_path) == []


def test_an_expired_lease_is_broken(tmp_path) -> None:
    write_lease(tmp_path, os.getpid(), datetime.now(UTC) - timedelta(seconds=1))
    with lease(tmp_path, "ingest", D) as held:
        assert held["token"] != "old"


def test_a_lease_left_by_another_host_that_stopped_beating_is_broken_after_a_few_beats(tmp_path) -> None:
    """A recreated scheduler container: its lease names a host that no longer exists and a pid
    this host cannot check. It was renewed 1 s ago, with beats every 0.2 s and 3 missed beats
    allowed: refused while fresh, broken once the beats stopped for longer than 0.6 s (not hours)."""
    write_lease(tmp_path, 1, datetime.now(UTC) + timedelta(seconds=0.6), host="scheduler-old-container")
    with pytest.raises(LeaseHeldError, match="scheduler-old-container"):
        with lease(tmp_path, "ingest", D, heartbeat_seconds=0.2, missed_beats=3):
            pass
    with lease(tmp_path, "ingest", D, heartbeat_seconds=0.2, missed_beats=3, wait_seconds=5, poll_seconds=0.1) as held:
        assert held["host"] == socket.gethostname() and held["token"] != "old"
    assert held_leases(tmp_path) == []


def test_a_live_lease_keeps_beating_and_is_never_broken(tmp_path) -> None:
    """A holder in another process (named as another host, so only its beats keep it) runs for
    ten times its expiry window: every try meanwhile is refused, and its expiry moves forward."""
    code = (
        "import sys, time, socket; from datetime import date; from pathlib import Path\n"
        "socket.gethostname = lambda: 'another-host'\n"
        "from jobs.adapters.lease import lease\n"
        f"with lease(Path({str(tmp_path)!r}), 'cluster', date(2011, 12, 9), heartbeat_seconds=0.1, missed_beats=3):\n"
        "    print('held', flush=True); time.sleep(3)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        path = lease_path(tmp_path, "cluster", D)
        expiries = set()
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            with pytest.raises(LeaseHeldError, match="another-host"):
                with lease(tmp_path, "cluster", D, heartbeat_seconds=0.1, missed_beats=3):
                    pass
            expiries.add(json.loads(path.read_text())["expires_at"])
            time.sleep(0.2)
        assert len(expiries) >= 5  # renewed again and again, never broken
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0 and held_leases(tmp_path) == []


def test_the_heartbeat_renews_its_own_lease(tmp_path) -> None:
    with lease(tmp_path, "label", D, heartbeat_seconds=0.1, missed_beats=3) as held:
        first = json.loads(lease_path(tmp_path, "label", D).read_text())["expires_at"]
        time.sleep(0.5)
        later = json.loads(lease_path(tmp_path, "label", D).read_text())
        assert later["expires_at"] > first and later["token"] == held["token"]
    assert held_leases(tmp_path) == []


def test_a_writer_waits_up_to_the_bound_then_fails(tmp_path) -> None:
    with lease(tmp_path, "eda", D):
        with pytest.raises(LeaseHeldError), lease(tmp_path, "eda", D, wait_seconds=0.3, poll_seconds=0.1):
            pass


def test_a_write_returns_the_version_it_committed_not_the_latest(spark, tmp_path, monkeypatch) -> None:
    """Another writer commits right after this write's commit: the write still returns its own version."""
    from pyspark.sql import DataFrameWriter

    from jobs.adapters import lake

    path = tmp_path / "table"

    def write(day: date) -> int:
        frame = spark.createDataFrame([(day, 1)], "d date, x int")
        return lake.replace_slice(frame, path, f"d = {lake.date_literal(day)}", "d")

    assert write(D) == 0
    real_save = DataFrameWriter.save

    def save_then_another_writer_commits(self, *args, **kwargs):
        real_save(self, *args, **kwargs)
        monkeypatch.setattr(DataFrameWriter, "save", real_save)
        write(D + timedelta(days=1))

    monkeypatch.setattr(DataFrameWriter, "save", save_then_another_writer_commits)
    assert write(D) == 1
    assert lake.current_version(path) == 2


def test_a_write_that_changes_nothing_returns_the_current_version(spark, tmp_path) -> None:
    """Delta makes no commit for an empty frame over an empty slice (a second backfill whose
    quarantine is empty): the write returns the table's version instead of failing."""
    from jobs.adapters import lake

    path = tmp_path / "table"
    assert (
        lake.replace_slice(spark.createDataFrame([(D, 1)], "d date, x int"), path, f"d = {lake.date_literal(D)}", "d")
        == 0
    )
    empty = spark.createDataFrame([], "d date, x int")
    other_day = f"d = {lake.date_literal(D + timedelta(days=1))}"
    assert lake.replace_slice(empty, path, other_day, "d") == 0
    assert lake.current_version(path) == 0
