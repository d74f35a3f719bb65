"""One writer per (step, run date): a lease file (or object) under ``<lake_dir>/_leases``.

Delta protects a partition from a torn write but not from two writers of the same day, and the
MLflow registry protects nothing: two cluster steps of one date would register two versions. A
step therefore holds a lease while it runs. The lease is a small JSON file created atomically
(``O_CREAT | O_EXCL``) naming its owner (host, pid) and an expiry; it is removed when the step
ends, whether it succeeded or failed. A lease whose owner process is gone (same host) or whose
expiry has passed is broken; a live one makes the second writer wait up to a bound, then fail
with a message naming the holder.

With the lake on a bucket the lease is an object created with a conditional put
(``If-None-Match: *``): of two writers racing for it exactly one gets it. A stale one is broken,
and a lease released, by a delete conditional on the ETag read (``If-Match``), so a lease taken
meanwhile by another writer is never removed (``jobs.storage``).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs import storage
from jobs.config import Settings

PARTIAL_LEASE_SECONDS = 60  # a lease file that never got its content is broken after this


class LeaseHeldError(RuntimeError):
    """Another live process is running the same step for the same date."""


def lease_path(lake_dir: storage.Location, step: str, run_date: date) -> storage.Location:
    return lake_dir / "_leases" / f"{step}__{run_date.isoformat()}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: dict[str, Any], now: datetime) -> bool:
    """A lease whose expiry passed, or whose owner process on this host is gone."""
    if datetime.fromisoformat(holder["expires_at"]) <= now:
        return True
    return holder["host"] == socket.gethostname() and not _alive(int(holder["pid"]))


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # being written right now (or its writer died doing so): held a minute
        return _partial(datetime.fromtimestamp(path.stat().st_mtime, UTC))


def _try_create(path: Path, record: dict[str, Any]) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
    return True


def _break(path: Path, holder: dict[str, Any]) -> None:
    """Remove a stale lease, unless someone replaced it meanwhile (then it is put back)."""
    aside = path.with_name(f"{path.name}.broken-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = _read(aside)
    if moved and moved.get("token") != holder.get("token"):
        try:
            os.link(aside, path)  # a fresh lease taken meanwhile: restore it
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


def _partial(created: datetime) -> dict[str, Any]:
    return {
        "host": "?",
        "pid": "?",
        "token": "?",
        "acquired_at": created.isoformat(),
        "expires_at": (created + timedelta(seconds=PARTIAL_LEASE_SECONDS)).isoformat(),
    }


class _Files:
    """Leases as local files: ``O_CREAT | O_EXCL``, rename aside to break."""

    create = staticmethod(_try_create)
    read = staticmethod(_read)
    breaks = staticmethod(_break)

    @staticmethod
    def release(path: Path, record: dict[str, Any]) -> None:
        if (_read(path) or {}).get("token") == record["token"]:
            path.unlink(missing_ok=True)


class _Objects:
    """Leases as objects: conditional put to take, conditional delete to break or release."""

    @staticmethod
    def create(path: Any, record: dict[str, Any]) -> bool:
        etag = storage.create_exclusive(path, json.dumps(record).encode())
        if etag is not None:
            record["_etag"] = etag
        return etag is not None

    @staticmethod
    def _tagged(path: Any) -> tuple[dict[str, Any], str] | None:
        found = storage.read_tagged(path)
        if found is None:
            return None
        try:
            return json.loads(found[0]), found[1]
        except json.JSONDecodeError:  # a put is atomic: only a foreign object is unreadable
            return _partial(datetime.now(UTC)), found[1]

    @classmethod
    def read(cls, path: Any) -> dict[str, Any] | None:
        found = cls._tagged(path)
        return None if found is None else {**found[0], "_etag": found[1]}

    @staticmethod
    def breaks(path: Any, holder: dict[str, Any]) -> None:
        storage.delete_if_match(path, holder["_etag"])

    @staticmethod
    def release(path: Any, record: dict[str, Any]) -> None:
        storage.delete_if_match(path, record["_etag"])


@contextmanager
def lease(
    lake_dir: Path, step: str, run_date: date, ttl_seconds: int, wait_seconds: float = 0.0, poll_seconds: float = 1.0
) -> Iterator[dict[str, Any]]:
    """Hold the lease of (``step``, ``run_date``) for the ``with`` block; released on any exit."""
    path = lease_path(lake_dir, step, run_date)
    ops = _Objects if storage.is_remote(path) else _Files
    if ops is _Files:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        now = datetime.now(UTC)
        record = {
            "step": step,
            "run_date": run_date.isoformat(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "acquired_at": now.isoformat(),
            "expires_at": (now + timedelta(seconds=ttl_seconds)).isoformat(),
        }
        if ops.create(path, record):
            break
        holder = ops.read(path)
        if holder is None:
            continue
        if is_stale(holder, now):
            ops.breaks(path, holder)
            continue
        if time.monotonic() >= deadline:
            raise LeaseHeldError(
                f"{step} of {run_date} is already running: pid {holder['pid']} on {holder['host']} holds "
                f"{path} since {holder['acquired_at']} (until {holder['expires_at']}); wait for it, or remove the "
                "file if that process is gone"
            )
        time.sleep(poll_seconds)
    try:
        yield record
    finally:
        ops.release(path, record)


def step_lease(settings: Settings, step: str, run_date: date) -> AbstractContextManager[dict[str, Any]]:
    """The lease of a pipeline step for a run date, with the configured expiry and wait."""
    return lease(settings.path("lake_dir"), step, run_date, settings.leases.ttl_seconds, settings.leases.wait_seconds)


def step_name(step: Callable[..., Any]) -> str:
    """The name a step function is leased under: its module's (``jobs.steps.cluster`` -> ``cluster``)."""
    return step.__module__.rsplit(".", 1)[-1]


def run_leased(step: Callable[..., dict[str, Any]], day: date, settings: Settings, /, **kwargs: Any) -> dict[str, Any]:
    """``step(day, **kwargs)`` under its (step, day) lease (``settings`` locate it; positional, so
    ``kwargs`` may pass the step its own ``settings``); its ``after:<step>`` fault point fires
    once the work is done, lease still held: the task boundary every runner shares (CLI, DAG task,
    ``make rerun``)."""
    from jobs.adapters.faults import fault_point

    with step_lease(settings, step_name(step), day):
        summary = step(day, **kwargs)
        fault_point(f"after:{step_name(step)}")
    return summary


def held_leases(lake_dir: storage.Location) -> list[storage.Location]:
    """Lease files (or objects) present (a finished pipeline leaves none): a listing, not a glob."""
    folder = lake_dir / "_leases"
    if storage.is_remote(folder):
        return sorted(p for p in folder.iterdir() if p.name.endswith(".json")) if folder.exists() else []
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
