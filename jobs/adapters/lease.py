"""One writer per (step, run date): a lease file under ``<lake_dir>/_leases``, kept alive by a heartbeat.

Delta protects a partition from a torn write but not from two writers of the same day, and the
MLflow registry protects nothing: two cluster steps of one date would register two versions. A
step therefore holds a lease while it runs. The lease is a small JSON record created atomically
naming its owner (host, pid), a token and an expiry; it is removed when the step ends, whether it
succeeded or failed. While the step runs a heartbeat thread renews the expiry every
``leases.heartbeat_seconds``; the expiry is ``missed_beats`` beats ahead, so a lease whose holder
stopped beating (a killed or recreated container, a host that vanished) is stale after a few
missed beats whatever host wrote it. On this host a lease whose owner process is gone is stale at
once. A live lease makes the second writer wait up to a bound, then fail naming the holder.

The storage calls are the four small ``_store_*`` functions (create if absent, read, replace if
the token still matches, remove if the token still matches). With the lake on a bucket the lease
is an object: created with a conditional put (``If-None-Match: *``: of two writers racing for it
exactly one gets it), renewed with a put conditional on the ETag read (``If-Match``) and broken or
released by a delete conditional on it, so a lease another writer took meanwhile is never touched
(``jobs.storage``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from jobs import storage
from jobs.config import Settings

log = logging.getLogger(__name__)

PARTIAL_LEASE_SECONDS = 60  # a lease file that never got its content is broken after this


class LeaseHeldError(RuntimeError):
    """Another live process is running the same step for the same date."""


def lease_path(lake_dir: storage.Location, step: str, run_date: date) -> storage.Location:
    return lake_dir / "_leases" / f"{step}__{run_date.isoformat()}.json"


# --- storage: the only functions that touch the lease's bytes --------------------------------


def _serialised(record: dict[str, Any]) -> bytes:
    """The record as stored (without what only this process keeps, such as the object's ETag)."""
    return json.dumps({k: v for k, v in record.items() if not k.startswith("_")}).encode()


def _store_create(path: storage.Location, record: dict[str, Any]) -> bool:
    """Create the lease if absent (atomic); False when one exists."""
    if storage.is_remote(path):
        etag = storage.create_exclusive(path, _serialised(record))
        if etag is not None:
            record["_etag"] = etag
        return etag is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(_serialised(record))
    return True


def _store_read(path: storage.Location) -> dict[str, Any] | None:
    if storage.is_remote(path):
        found = storage.read_tagged(path)
        if found is None:
            return None
        try:
            return {**json.loads(found[0]), "_etag": found[1]}
        except json.JSONDecodeError:  # a put is atomic: only a foreign object is unreadable
            return {**_partial(datetime.now(UTC)), "_etag": found[1]}
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:  # being written right now (or its writer died doing so): held a minute
        try:
            created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except FileNotFoundError:
            return None
        return _partial(created)


def _partial(created: datetime) -> dict[str, Any]:
    """A lease whose content is unreadable: held for ``PARTIAL_LEASE_SECONDS`` from ``created``."""
    return {
        "host": "?",
        "pid": "?",
        "token": "?",
        "acquired_at": created.isoformat(),
        "expires_at": (created + timedelta(seconds=PARTIAL_LEASE_SECONDS)).isoformat(),
    }


def _store_replace(path: storage.Location, record: dict[str, Any]) -> bool:
    """Replace the lease with ``record`` if it still carries ``record``'s token (a renewal)."""
    held = _store_read(path) or {}
    if held.get("token") != record["token"]:
        return False
    if storage.is_remote(path):
        etag = storage.replace_if_match(path, _serialised(record), held["_etag"])
        if etag is not None:
            record["_etag"] = etag
        return etag is not None
    staged = path.with_name(f"{path.name}.beat-{uuid.uuid4().hex}")
    descriptor = os.open(staged, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(_serialised(record))
    os.replace(staged, path)
    return True


def _store_remove(path: storage.Location, token: str) -> None:
    """Remove the lease if it carries ``token``; a lease another writer took meanwhile is put back."""
    if storage.is_remote(path):
        held = _store_read(path)
        if held is not None and held.get("token") == token:
            storage.delete_if_match(path, held["_etag"])
        return
    aside = path.with_name(f"{path.name}.broken-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = _store_read(aside)
    if moved and moved.get("token") != token:
        try:
            os.link(aside, path)  # not the lease we meant to remove: restore it
        except FileExistsError:
            pass
    aside.unlink(missing_ok=True)


# --- protocol ---------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(holder: dict[str, Any], now: datetime) -> bool:
    """A lease whose expiry passed (its holder missed its beats, on any host), or whose owner
    process on this host is gone."""
    if datetime.fromisoformat(holder["expires_at"]) <= now:
        return True
    return holder["host"] == socket.gethostname() and not _alive(int(holder["pid"]))


def _record(step: str, run_date: date, token: str, acquired_at: datetime, expiry: timedelta) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "step": step,
        "run_date": run_date.isoformat(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": token,
        "acquired_at": acquired_at.isoformat(),
        "renewed_at": now.isoformat(),
        "expires_at": (now + expiry).isoformat(),
    }


class _Heartbeat(threading.Thread):
    """Renews the lease every ``interval`` seconds until stopped (or until the lease is no longer ours)."""

    def __init__(self, path: storage.Location, record: dict[str, Any], interval: float, expiry: timedelta) -> None:
        super().__init__(name=f"lease-heartbeat-{path.name}", daemon=True)
        self.path, self.record, self.interval, self.expiry = path, record, interval, expiry
        self.stopped = threading.Event()
        self.beats = 0

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            renewed = dict(self.record, **_renewal(self.expiry))
            try:
                if not _store_replace(self.path, renewed):
                    log.error("lease %s is no longer ours (broken by another writer): heartbeat stops", self.path)
                    return
            except Exception as error:  # noqa: BLE001 - the store down or slow: beat again, the step decides
                log.warning("could not renew the lease %s (%s); retrying at the next beat", self.path, error)
                continue
            self.record = renewed
            self.beats += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join()


def _renewal(expiry: timedelta) -> dict[str, str]:
    now = datetime.now(UTC)
    return {"renewed_at": now.isoformat(), "expires_at": (now + expiry).isoformat()}


@contextmanager
def lease(
    lake_dir: storage.Location,
    step: str,
    run_date: date,
    heartbeat_seconds: float = 5.0,
    missed_beats: int = 3,
    wait_seconds: float = 0.0,
    poll_seconds: float = 1.0,
) -> Iterator[dict[str, Any]]:
    """Hold the lease of (``step``, ``run_date``) for the ``with`` block, renewed every
    ``heartbeat_seconds`` and stale ``missed_beats`` beats after the last renewal; released on any exit."""
    path = lease_path(lake_dir, step, run_date)
    expiry = timedelta(seconds=heartbeat_seconds * missed_beats)
    deadline = time.monotonic() + wait_seconds
    while True:
        now = datetime.now(UTC)
        record = _record(step, run_date, uuid.uuid4().hex, now, expiry)
        if _store_create(path, record):
            break
        holder = _store_read(path)
        if holder is None:
            continue
        if is_stale(holder, now):
            _store_remove(path, holder.get("token", "?"))
            continue
        if time.monotonic() >= deadline:
            raise LeaseHeldError(
                f"{step} of {run_date} is already running: pid {holder['pid']} on {holder['host']} holds "
                f"{path} since {holder['acquired_at']} (renewed until {holder['expires_at']}); wait for it: it is "
                f"stale {missed_beats} missed heartbeats after its holder stops"
            )
        time.sleep(poll_seconds)
    heartbeat = _Heartbeat(path, record, heartbeat_seconds, expiry)
    heartbeat.start()
    try:
        yield record
    except BaseException:
        heartbeat.stop()
        try:  # the step's own error is what the caller must see, not a release that failed after it
            _store_remove(path, record["token"])
        except Exception as error:  # noqa: BLE001 - e.g. the store down: the lease goes stale on its own
            log.warning("could not release the lease %s (%s): it is stale once this process ends", path, error)
        raise
    heartbeat.stop()
    _store_remove(path, record["token"])


def step_lease(settings: Settings, step: str, run_date: date) -> AbstractContextManager[dict[str, Any]]:
    """The lease of a pipeline step for a run date, with the configured heartbeat and wait."""
    config = settings.leases
    return lease(
        settings.path("lake_dir"),
        step,
        run_date,
        heartbeat_seconds=config.heartbeat_seconds,
        missed_beats=config.missed_beats,
        wait_seconds=config.wait_seconds,
    )


def step_name(step: Callable[..., Any]) -> str:
    """The name a step function is leased under: its module's (``jobs.steps.cluster`` -> ``cluster``)."""
    return step.__module__.rsplit(".", 1)[-1]


def run_leased(step: Callable[..., dict[str, Any]], day: date, settings: Settings, /, **kwargs: Any) -> dict[str, Any]:
    """``step(day, **kwargs)`` under its (step, day) lease (``settings`` locate it; positional, so
    ``kwargs`` may pass the step its own ``settings``); its ``after:<step>`` fault point fires
    once the work is done, lease still held: the task boundary every runner shares (CLI, DAG task,
    ``make rerun``). An error that says the object store did not answer, whichever client met it,
    becomes a ``StorageUnavailableError`` (retryable, one line: ``storage.unavailable``)."""
    from jobs.adapters.faults import fault_point

    try:
        with step_lease(settings, step_name(step), day):
            summary = step(day, **kwargs)
            fault_point(f"after:{step_name(step)}")
    except Exception as error:
        outage = storage.unavailable(error, settings)
        if outage is None or outage is error:
            raise
        raise outage from error
    return summary


def held_leases(lake_dir: storage.Location) -> list[storage.Location]:
    """Lease files (or objects) present (a finished pipeline leaves none): a listing, not a glob."""
    folder = lake_dir / "_leases"
    if storage.is_remote(folder):
        return sorted(p for p in folder.iterdir() if p.name.endswith(".json")) if folder.exists() else []
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
