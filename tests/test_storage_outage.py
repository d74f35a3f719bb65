"""The object store stopped in the middle of a night (issue 29 item 6): a step fails with one
retryable line naming the endpoint and the location, within bounded time, and the re-run converges.

- Without a server: what each client raises when the endpoint does not answer becomes a
  ``StorageUnavailableError`` (``jobs.storage.unavailable``), at the task boundary every runner
  shares (``run_leased``), and ``python -m jobs`` exits 75 with that one line (not 2: Airflow retries).
- With a real server stopped and started again (no Spark): s3fs and delta-rs give up within the
  configured bounds, and find the data again after the restart.
- The outage trial of ``make fault-injection FAULTS_ARGS=--storage-outage``, once (``heavy``: in
  ``make test-s3``, not in CI): the label step of
  a retrain night, its locations on the bucket, paused at its first gold write while the harness
  stops the server; its retry after the restart converges (``harness.fault_injection.check``).
"""

from __future__ import annotations

import time
import uuid
from datetime import date
from pathlib import Path

import deltalake
import pyarrow as pa
import pytest
from botocore.exceptions import EndpointConnectionError

from jobs import storage
from jobs.adapters.lease import held_leases, run_leased
from jobs.cli import EXIT_PERMANENT_FAILURE, EXIT_STORAGE_UNAVAILABLE, run_step
from jobs.config import Settings
from jobs.errors import LakeStateError, StorageUnavailableError
from tests.conftest import s3_settings, settings_for

ENDPOINT = "http://127.0.0.1:8333"
NIGHT = date(2011, 12, 9)
# what the clients said in a real outage (the SeaweedFS of these tests stopped): hadoop-aws through
# Py4J, and delta-rs (object_store) with its colour codes
JAVA = (
    "An error occurred while calling o84.save.\n: java.net.ConnectException: listObjects() on "
    "s3a://lake/n/lake/gold/customer_segments/_delta_log: software.amazon.awssdk.core.exception.SdkClientException: "
    "Unable to execute HTTP request: Connect to 127.0.0.1:8333 [/127.0.0.1] failed: Connection refused"
)
DELTA_RS = (
    "Kernel error -> Generic S3 error\n  \x1b[31m↳\x1b[0m Error performing GET "
    "http://127.0.0.1:8333/lake/n/lake/t/_delta_log/_last_checkpoint in 3.3s, after 2 retries\n"
    "  \x1b[31m↳\x1b[0m tcp connect error\n  \x1b[31m↳\x1b[0m Connection refused (os error 111)"
)


@pytest.fixture
def on_bucket(tmp_path) -> Settings:
    """The MLflow artifacts on a bucket (so the configuration uses S3), the lake and leases local."""
    base = settings_for(tmp_path)
    return base.model_copy(
        update={
            "storage": base.storage.model_copy(update={"endpoint_url": ENDPOINT}),
            "mlflow": base.mlflow.model_copy(update={"artifacts_destination": "s3://lake/n/mlflow"}),
        }
    )


@pytest.mark.parametrize(
    ("error", "how", "where"),
    [
        (Exception(JAVA), "Connection refused", "s3a://lake/n/lake/gold/customer_segments/_delta_log"),
        (OSError(DELTA_RS), "tcp connect error", "s3://lake/n/lake/t/_delta_log/_last_checkpoint"),
        (
            EndpointConnectionError(endpoint_url=f"{ENDPOINT}/lake/n/lake/_leases/label__2011-12-09.json"),
            "Could not connect to the endpoint URL",
            "s3://lake/n/lake/_leases/label__2011-12-09.json",
        ),
        (
            EndpointConnectionError(
                endpoint_url=f"{ENDPOINT}/lake?list-type=2&prefix=n%2Fmlflow%2F1%2F&encoding-type=url"
            ),
            "Could not connect to the endpoint URL",
            "s3://lake/n/mlflow/1",
        ),
    ],
    ids=["hadoop-aws", "delta-rs", "botocore", "botocore-listing"],
)
def test_each_clients_unreachable_endpoint_is_one_retryable_line(on_bucket, error, how, where) -> None:
    outage = storage.unavailable(error, on_bucket)
    assert isinstance(outage, StorageUnavailableError)
    assert str(outage) == (
        f"storage unreachable: the S3 endpoint {ENDPOINT} did not answer ({how}) at {where}; "
        "retryable: run the step again once the endpoint answers"
    )


def test_other_errors_and_local_configurations_are_not_an_outage(on_bucket, tmp_path) -> None:
    spark_connect_down = Exception("failed to connect to all addresses; ipv4:127.0.0.1:15002: Connection refused")
    assert storage.unavailable(spark_connect_down, on_bucket) is None  # not the object store
    assert storage.unavailable(ValueError("Connection refused at s3a://lake/x"), settings_for(tmp_path)) is None
    assert storage.unavailable(LakeStateError("2011-12-08 is not loaded"), on_bucket) is None


def test_a_step_failing_on_an_unreachable_store_fails_retryable_whatever_it_raised(on_bucket) -> None:
    """Even a permanent error raised because of the outage is retryable: the store, not the lake, is wrong."""

    def label_day(day):  # noqa: ARG001 - a step's signature
        try:
            raise OSError(DELTA_RS)
        except OSError as error:
            raise LakeStateError("the day's table cannot be read") from error

    label_day.__module__ = "jobs.steps.label"
    with pytest.raises(StorageUnavailableError, match="did not answer .tcp connect error. at s3://lake/n/lake/t"):
        run_leased(label_day, NIGHT, on_bucket)
    assert held_leases(on_bucket.path("lake_dir")) == []  # released on the way out


def test_the_cli_exits_75_with_the_one_line(capsys) -> None:
    def outage(day):  # noqa: ARG001
        raise StorageUnavailableError("storage unreachable: the S3 endpoint http://x did not answer (…) at s3a://l")

    def permanent(day):  # noqa: ARG001
        raise LakeStateError("2011-12-08 is not loaded")

    assert run_step(outage, "a step", ["--run-date", "2011-12-09"]) == EXIT_STORAGE_UNAVAILABLE
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "FAILED (retryable): storage unreachable: the S3 endpoint http://x did not answer (…) at s3a://l"
    )
    assert run_step(permanent, "a step", ["--run-date", "2011-12-09"]) == EXIT_PERMANENT_FAILURE


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    """A server of this module's own: its tests stop and start it (the session's is shared)."""
    from jobs.orchestration.object_store import s3_server

    with s3_server(tmp_path_factory.mktemp("s3-outage")) as server, pytest.MonkeyPatch.context() as patch:
        for name, value in server.env.items():
            patch.setenv(name, value)
        yield server


@pytest.mark.s3
def test_s3fs_and_delta_rs_give_up_within_bounds_and_find_the_data_after_a_restart(own_server, tmp_path) -> None:
    settings = s3_settings(own_server, tmp_path, uuid.uuid4().hex)
    note, table = settings.path("reports_dir") / "note.txt", settings.table_path("gold_customer_segments")
    note.write_text("before")
    deltalake.write_deltalake(
        storage.uri(table), pa.table({"x": [1, 2]}), storage_options=settings.delta_options(table)
    )
    own_server.stop()
    try:
        for read in (note.read_text, lambda: storage.delta_table(table).version()):
            started = time.monotonic()
            with pytest.raises(Exception) as raised:  # noqa: PT011 - which client error is the finding
                read()
            assert time.monotonic() - started < 15  # 3 attempts, 5 s to connect: refused at once here
            outage = storage.unavailable(raised.value, settings)
            assert outage is not None and own_server.endpoint_url in str(outage), raised.value
    finally:
        own_server.start()
    assert note.read_text() == "before"
    assert storage.delta_table(table).to_pyarrow_table().num_rows == 2


@pytest.fixture(scope="module")
def outage_scenario(own_server, tmp_path_factory):
    """A retrain night (the first champion) up to ``label`` on the bucket, saved before ``label``."""
    from harness import fault_injection as fi

    with pytest.MonkeyPatch.context() as patch:
        for name, value in fi.outage_env().items():
            patch.setenv(name, value)
        root = tmp_path_factory.mktemp("outage")
        yield fi.prepare(
            root,
            NIGHT,
            customers=80,
            days=20,
            warmup_nights=0,
            steps=["validate", "ingest", "cluster", "label"],
            bucket=fi.BUCKET_ROOT,
            save_before=["label"],
        )


@pytest.mark.spark
@pytest.mark.faults
@pytest.mark.s3
@pytest.mark.heavy  # about 8 min on a busy 2-core machine: `make test-s3`, not CI's 40-minute budget
def test_the_server_stopped_in_the_middle_of_a_step_fails_it_retryable_and_the_rerun_converges(
    own_server, outage_scenario
) -> None:
    from harness import fault_injection as fi

    assert storage.is_remote(outage_scenario.settings().path("lake_dir"))  # the night really is on the bucket
    point = "write:gold/customer_segments"
    assert outage_scenario.points["label"][0] == point
    trial = fi.run_outage_trial(outage_scenario, own_server, "label", point)
    assert trial.paused, "the label step never reached its first gold write"
    assert trial.exit_code == EXIT_STORAGE_UNAVAILABLE, Path(outage_scenario.root / "outage-label.log").read_text()[
        -4000:
    ]
    assert trial.failed_after_seconds < fi.OUTAGE_FAIL_WITHIN_SECONDS
    assert trial.error_line.startswith(
        f"FAILED (retryable): storage unreachable: the S3 endpoint {own_server.endpoint_url} "
    )
    assert "at s3a://lake/faults/work/lake/gold/customer_segments" in trial.error_line
    assert trial.retry_codes == {"label": 0}
    assert trial.problems == []  # delta-rs reads every table, gold = the clean run's, published, no lease
    assert trial.outcome == "converged"
