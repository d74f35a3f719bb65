"""The lake on S3-compatible object storage (issue 29): a real SeaweedFS on 127.0.0.1 (the ``s3``
fixture), reached through jobs.storage by delta-rs, s3fs, the leases and the landing inventory. No Spark here."""

from __future__ import annotations

import stat
import tempfile
import threading
import uuid
from datetime import date
from pathlib import Path

import deltalake
import pandas as pd
import pyarrow as pa
import pytest
from upath import UPath

from jobs import storage
from jobs.adapters.inventory import list_folder, open_stream
from jobs.adapters.landing import data_files, day_dir, day_inventory, has_arrived, write_day
from jobs.adapters.lease import LeaseHeldError, held_leases, lease, lease_path
from jobs.errors import DataValidationError
from tests.conftest import s3_settings
from tests.hostile_corpus import CASES, DAY, Case, Fail, build_day

pytestmark = pytest.mark.s3

D = date(2011, 12, 9)


@pytest.fixture
def bucket_settings(s3, tmp_path):
    return s3_settings(s3, tmp_path, uuid.uuid4().hex)


def test_an_s3_location_is_a_path_on_the_bucket(bucket_settings, s3) -> None:
    lake = bucket_settings.path("lake_dir")
    assert isinstance(lake, UPath) and str(lake).startswith("s3://lake/")
    note = lake / "_notes" / "hello.txt"
    assert not note.exists()
    note.write_text("on the bucket")
    assert note.exists() and note.read_text() == "on the bucket"
    key = str(note).removeprefix("s3://lake/")
    assert s3.client().get_object(Bucket="lake", Key=key)["Body"].read() == b"on the bucket"  # really there
    assert bucket_settings.path("airflow_home").is_relative_to(bucket_settings.path("data_dir"))  # local stays local


def test_local_only_settings_refuse_a_bucket(bucket_settings) -> None:
    paths = bucket_settings.paths.model_copy(update={"airflow_home": "s3://lake/airflow"})
    with pytest.raises(storage.StorageError, match="paths.airflow_home is s3://lake/airflow: it must be a local"):
        bucket_settings.model_copy(update={"paths": paths}).path("airflow_home")


def test_missing_keys_are_named(bucket_settings, monkeypatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(storage.StorageError, match="AWS_SECRET_ACCESS_KEY in the environment"):
        storage.table_options(bucket_settings.table_path("gold_published"))


def test_delta_rs_writers_racing_on_one_table_lose_no_commit(bucket_settings) -> None:
    """delta-rs commits with a conditional put (``conditional_put=etag``): writers racing for one
    version cannot both win; the loser retries on the next version, so every append lands once."""
    path = bucket_settings.table_path("gold_published") / "race"
    deltalake.write_deltalake(
        storage.uri(path), pa.table({"writer": [-1]}), storage_options=storage.table_options(path)
    )
    writers, errors = 6, []

    def append(writer: int) -> None:
        try:
            deltalake.write_deltalake(
                storage.uri(path),
                pa.table({"writer": [writer]}),
                mode="append",
                storage_options=storage.table_options(path),
            )
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    table = storage.delta_table(path)
    assert table.version() == writers
    assert sorted(table.to_pyarrow_table()["writer"].to_pylist()) == [-1, *range(writers)]
    versions = [c["version"] for c in table.history()]
    assert sorted(versions) == list(range(writers + 1))  # one commit per writer, none overwritten


def test_lease_objects_admit_one_writer_of_many_racing(bucket_settings) -> None:
    lake = bucket_settings.path("lake_dir")
    inside, refused, barrier = [], [], threading.Barrier(8)
    hold = threading.Event()

    def contend() -> None:
        barrier.wait()
        try:
            with lease(lake, "cluster", D):
                inside.append(threading.get_ident())
                hold.wait(10)
        except LeaseHeldError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    while len(inside) + len(refused) < 8 and any(t.is_alive() for t in threads) and len(refused) < 7:
        threading.Event().wait(0.1)
    hold.set()
    for thread in threads:
        thread.join()
    assert len(inside) == 1 and len(refused) == 7, (inside, refused)
    assert "cluster of 2011-12-09 is already running" in refused[0]
    assert held_leases(lake) == []  # released: the object is gone


def test_a_stale_lease_object_is_broken_but_a_fresh_one_never_deleted(bucket_settings) -> None:
    import json

    lake = bucket_settings.path("lake_dir")
    path = lease_path(lake, "ingest", D)
    stale = {"host": "elsewhere", "pid": 1, "token": "old", "acquired_at": "2000-01-01T00:00:00+00:00"}
    path.write_text(json.dumps({**stale, "expires_at": "2000-01-01T01:00:00+00:00"}))
    with lease(lake, "ingest", D) as held:  # the expired lease is broken
        assert json.loads(path.read_text())["token"] == held["token"]
        etag_before = storage.read_tagged(path)[1]
        assert storage.delete_if_match(path, '"not-its-etag"') is False  # a breaker holding an old ETag
        assert storage.read_tagged(path)[1] == etag_before  # removes nothing
    assert held_leases(lake) == []


def test_a_lease_object_is_renewed_by_its_heartbeat_and_a_stolen_one_is_not_overwritten(bucket_settings) -> None:
    import json
    import time

    lake = bucket_settings.path("lake_dir")
    path = lease_path(lake, "label", D)
    with lease(lake, "label", D, heartbeat_seconds=0.3, missed_beats=3) as held:
        time.sleep(1.5)
        stored = json.loads(path.read_text())
        assert stored["token"] == held["token"] and stored["renewed_at"] > stored["acquired_at"], stored
        etag = storage.read_tagged(path)[1]
        assert storage.replace_if_match(path, b"{}", '"not-its-etag"') is None  # an old ETag changes nothing
        assert (
            storage.read_tagged(path)[1] != '"not-its-etag"' and json.loads(path.read_text())["token"] == held["token"]
        )
        assert etag  # the heartbeat keeps renewing through If-Match puts
    assert held_leases(lake) == []


# ---------------------------------------------------------------- the landing zone on the bucket


def _objects_of(folder: Path) -> dict[str, bytes] | None:
    """The day folder as object keys (relative) and bytes; None when it has no S3 equivalent (a
    symlink, a FIFO, a socket, a hard link, an empty folder)."""
    if folder.is_symlink():
        return None
    objects = {}
    for path in sorted(folder.rglob("*")):
        status = path.lstat()
        if path.is_symlink() or not (stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode)):
            return None
        if stat.S_ISDIR(status.st_mode):
            if not any(p.is_file() for p in path.rglob("*")):
                return None
            continue
        if status.st_nlink > 1:
            return None
        objects[path.relative_to(folder).as_posix()] = path.read_bytes()
    return objects


def _bucket_cases() -> list[Case]:
    """The hostile corpus's cases a bucket can hold (every kind but the file-system-only ones)."""
    kept = []
    with tempfile.TemporaryDirectory() as root:
        for number, case in enumerate(CASES):
            folder = Path(root) / str(number)
            folder.mkdir()
            case.build(folder)
            if _objects_of(folder) is not None:
                kept.append(case)
    return kept


BUCKET_CASES = _bucket_cases()


def test_most_of_the_hostile_corpus_has_a_bucket_form() -> None:
    assert len(BUCKET_CASES) >= len(CASES) - 12, [c.id for c in CASES if c not in BUCKET_CASES]
    assert {c.kind for c in BUCKET_CASES} == {"filesystem", "encoding", "structure", "resource", "payload"}


@pytest.mark.parametrize("case", BUCKET_CASES, ids=[c.id for c in BUCKET_CASES])
def test_a_hostile_day_on_the_bucket_gets_the_verdict_it_gets_on_disk(s3, tmp_path, case) -> None:
    """The day built on disk, put as objects under ``landing/date=D/``: the inventory of the
    prefix refuses what the folder's refuses, and accounts for every record of what it accepts."""
    local_settings, folder = build_day(tmp_path / "disk", case)
    objects = _objects_of(folder)
    settings = s3_settings(s3, tmp_path / "data", uuid.uuid4().hex, landing=case.limits)
    prefix = str(day_dir(settings.path("landing_dir"), DAY)).removeprefix("s3://lake/")
    client = s3.client()
    for key, body in objects.items():  # the exact key: no client-side path normalisation
        client.put_object(Bucket="lake", Key=f"{prefix}/{key}", Body=body)
    if isinstance(case.verdict, Fail):
        with pytest.raises(DataValidationError) as on_bucket:
            day_inventory(settings, DAY)
        # SeaweedFS stores a key's backslash as '/': that file is a deeper key there, refused as one
        names = "refused: a folder" if any("\\" in key for key in objects) else case.verdict.names
        assert names in str(on_bucket.value), str(on_bucket.value)
        return
    inventory = day_inventory(settings, DAY)
    on_disk = day_inventory(local_settings, DAY)
    assert inventory.records == case.verdict.records == on_disk.records
    assert inventory.fingerprint == on_disk.fingerprint  # the same bytes, wherever they landed
    assert [(e.name, e.decision, e.size, e.sha256) for e in inventory.entries] == [
        (e.name, e.decision, e.size, e.sha256) for e in on_disk.entries
    ]


def test_a_day_on_the_bucket_arrives_with_its_marker_and_is_listed_not_globbed(bucket_settings) -> None:
    landing = bucket_settings.path("landing_dir")
    marker = bucket_settings.landing.marker
    rows = pd.DataFrame({"InvoiceNo": ["536365"], "CustomerID": ["17850"]})
    assert not has_arrived(landing, D, marker) and data_files(landing, D, "csv") == []
    (day_dir(landing, D) / "transactions.csv").write_bytes(rows.to_csv(index=False).encode())
    assert not has_arrived(landing, D, marker)  # the data without the marker: still arriving
    written = write_day(landing, D, rows, marker)
    assert has_arrived(landing, D, marker)
    assert [p.name for p in data_files(landing, D, "csv")] == [written.name] == ["transactions.csv"]
    assert (day_dir(landing, D) / "transactions.csv").read_bytes() == rows.to_csv(index=False).encode()
    (day_dir(landing, D) / "date=nested" / "x.csv").write_bytes(b"a\n1\n")
    assert [p.name for p in data_files(landing, D, "csv")] == ["transactions.csv"]  # a deeper key is no file


def test_an_object_replaced_after_the_listing_is_refused(bucket_settings) -> None:
    folder = day_dir(bucket_settings.path("landing_dir"), D)
    (folder / "transactions.csv").write_bytes(b"a,b\n1,2\n")
    listed = list_folder(folder)["transactions.csv"]
    (folder / "transactions.csv").write_bytes(b"a,b\n1,2\n3,4\n")  # a new object under the same key
    with pytest.raises(DataValidationError, match="replaced by another entry"):
        open_stream(folder, "transactions.csv", listed)
    with open_stream(folder, "transactions.csv", list_folder(folder)["transactions.csv"]) as stream:
        assert stream.read() == b"a,b\n1,2\n3,4\n"
