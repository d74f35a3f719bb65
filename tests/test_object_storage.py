"""The lake on S3-compatible object storage (issue 29): a real SeaweedFS on 127.0.0.1 (the ``s3``
fixture), reached through jobs.storage by delta-rs, s3fs and the leases. No Spark here."""

from __future__ import annotations

import threading
import uuid
from datetime import date

import deltalake
import pyarrow as pa
import pytest
from upath import UPath

from jobs import storage
from jobs.adapters.lease import LeaseHeldError, held_leases, lease, lease_path
from tests.conftest import s3_settings

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
