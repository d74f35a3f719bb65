"""Fault points: where the fault-injection harness (``harness.fault_injection``) kills a night.

``fault_point(name)`` does nothing unless the process's environment names that point in
``RFM_FAULT_POINT`` (``jobs.definitions.FAULT_POINT_ENV``); then the process SIGKILLs itself,
as an OOM killer, a lost node or ``kill -9`` would: no ``finally`` block, no ``atexit``, no
exception handler runs. The points (see docs/operations.md, "Fault injection"):

- ``after:<step>``: a step's work is done (its loads committed), its lease still held;
- ``write:<table>`` / ``merge:<table>`` / ``overwrite:<table>`` (``<table>`` as ``gold/published``):
  inside a Delta write, after its data files and before its commit (``in_write``);
- ``registry:*`` / ``clv-registry:*`` (``jobs.definitions``): between two MLflow registry calls.

With ``RFM_FAULT_TRACE`` set to a file, every point reached is appended to it (one line each):
the harness runs a clean night that way to list the points it then kills at.

With ``RFM_FAULT_PAUSE`` set to a file, the armed point pauses instead of killing: it writes that
file and waits until the harness removes it, then goes on (a write point then does its real
write). The harness stops the S3 server in between: the step meets a storage outage right there.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jobs import storage
from jobs.definitions import FAULT_PAUSE_ENV, FAULT_POINT_ENV, FAULT_TRACE_ENV

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

PAUSE_LIMIT_SECONDS = 600  # a paused step goes on after this even if nobody removed the file


def armed(name: str) -> bool:
    """Whether this process is to die at point ``name`` (and, when tracing, record that it got there)."""
    trace = os.environ.get(FAULT_TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as out:
            out.write(name + "\n")
    return os.environ.get(FAULT_POINT_ENV) == name


def kill() -> None:
    """SIGKILL this process (after flushing what it printed, so the harness can show it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def pausing() -> bool:
    """Whether the armed point pauses (``RFM_FAULT_PAUSE``) rather than kills."""
    return bool(os.environ.get(FAULT_PAUSE_ENV))


def pause(name: str) -> None:
    """Write the ``RFM_FAULT_PAUSE`` file (naming the point) and wait until it is removed."""
    handshake = Path(os.environ[FAULT_PAUSE_ENV])
    staged = handshake.with_name(handshake.name + ".tmp")
    staged.write_text(name + "\n")
    staged.replace(handshake)  # whole or absent: the harness acts on its existence
    deadline = time.monotonic() + PAUSE_LIMIT_SECONDS
    while handshake.exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def fault_point(name: str) -> None:
    """Die here (or pause, with ``RFM_FAULT_PAUSE``) when ``RFM_FAULT_POINT`` names this point; otherwise nothing."""
    if armed(name):
        if pausing():
            pause(name)
            return
        kill()


def table_point(kind: str, path: Path) -> str:
    """The point name of a write of kind ``kind`` to the table at ``path``: ``write:gold/published``."""
    return f"{kind}:{path.parent.name}/{path.name}"


def in_write(kind: str, frame: DataFrame, path: Path, partition_by: str | None = None) -> None:
    """The point inside a Delta write, after its data files, before its commit.

    Delta writes the data files and then commits them in one call, so there is no place to stop
    between the two; when armed, this point does what that call does first: ``frame`` is written
    as Parquet files into the table's directory (under its partition folders), which no commit
    names — the orphan files a writer killed before its commit leaves — and then the process dies.
    """
    if armed(table_point(kind, path)):
        if pausing():  # then the real write, against whatever the harness made of the store meanwhile
            pause(table_point(kind, path))
            return
        writer = frame.write.mode("append").format("parquet")
        if partition_by:
            writer = writer.partitionBy(partition_by)
        writer.save(storage.spark_uri(path))
        kill()
