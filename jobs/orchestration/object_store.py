"""A real S3-compatible server on 127.0.0.1: SeaweedFS (``weed server -s3``), for the tests and
``make prod-local STORAGE=s3``.

``make s3-server`` builds the ``weed`` binary once from SeaweedFS's Go module into the user cache
(``$XDG_CACHE_HOME/rfm-segmentation/seaweedfs-4.53/weed``; ``RFM_S3_SERVER`` names another).
``s3_server(folder)`` starts master, volume, filer and S3 gateway in one process group, every
listener on 127.0.0.1 and on ports chosen here (the Iceberg and Lance side ports are off), with
one identity whose keys are made here, creates the buckets, and stops the group on exit: SIGTERM,
then SIGKILL after a timeout (SeaweedFS can take tens of seconds to stop on its own).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import port_for
from mirakuru import HTTPExecutor

HOST = "127.0.0.1"
SEAWEEDFS_VERSION = "4.53"
START_TIMEOUT_SECONDS = 120
STOP_TIMEOUT_SECONDS = 5


def server_binary() -> Path:
    """The ``weed`` binary: ``RFM_S3_SERVER``, else the one ``make s3-server`` caches."""
    explicit = os.environ.get("RFM_S3_SERVER")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rfm-segmentation" / f"seaweedfs-{SEAWEEDFS_VERSION}" / "weed"


def available() -> bool:
    return server_binary().is_file() and os.access(server_binary(), os.X_OK)


@dataclass
class S3Server:
    """A running server: its endpoint, keys and buckets; ``env`` is what a client process needs."""

    endpoint_url: str
    access_key: str
    secret_key: str
    buckets: tuple[str, ...]
    executor: HTTPExecutor
    log: Path
    metrics_url: str = ""  # Prometheus text: SeaweedFS_s3_request_total by request type

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "RFM__STORAGE__ENDPOINT_URL": self.endpoint_url,
        }

    def client(self):  # a boto3 S3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        stop(self.executor)

    def start(self) -> None:
        """Start a stopped server again on the same ports, keys and data (a fault test's restart), and
        wait until each bucket takes a write: the gateway answers before the volumes are back."""
        self.executor.start()
        client = self.client()
        for bucket in self.buckets:
            until_writable(client, bucket)


def stop(executor: HTTPExecutor) -> None:
    """SIGTERM to the group; SIGKILL to the group when it is not gone after ``STOP_TIMEOUT_SECONDS``."""
    if executor.process is None:
        return
    try:
        os.killpg(executor.process.pid, signal.SIGTERM)
        executor.process.wait(STOP_TIMEOUT_SECONDS)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    executor.kill()  # SIGKILL to whatever of the group is left; forgets the process


def command(folder: Path, ports: dict[str, int], config: Path) -> list[str]:
    return [
        str(server_binary()),
        "server",
        f"-dir={folder / 'data'}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        "-volume.max=0",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        f"-metricsPort={ports['metrics']}",  # Prometheus counters: S3 requests by type (make bench-pipeline)
        f"-metricsIp={HOST}",
    ]


@dataclass(frozen=True)
class BucketDeployment:
    """The pipeline with every location under ``root`` (``s3://bucket/prefix``) on ``server``: the
    data dir (landing, lake, validation results and Data Docs, reports, exports, scratch folders)
    and the MLflow server's artifacts. Only what must be local stays under ``local``: MLflow's
    SQLite store (unused beside a server) and the Airflow home (logs)."""

    server: S3Server
    root: str

    @property
    def artifacts(self) -> str:
        """The MLflow server's ``--artifacts-destination``."""
        return f"{self.root}/mlflow"

    def pipeline_env(self, local: Path) -> dict[str, str]:
        """What every pipeline process (tasks, the Spark Connect server, the Spark worker) needs."""
        return {
            **self.server.env,
            "RFM__PATHS__DATA_DIR": self.root,
            "RFM__PATHS__MLFLOW_DIR": str(local / "mlflow"),
            "RFM__PATHS__AIRFLOW_HOME": str(local / "airflow"),
        }

    def mlflow_server_env(self) -> dict[str, str]:
        """What ``mlflow server --artifacts-destination s3://…`` needs (boto3 reads it)."""
        return {
            "AWS_ACCESS_KEY_ID": self.server.access_key,
            "AWS_SECRET_ACCESS_KEY": self.server.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_S3_ENDPOINT_URL": self.server.endpoint_url,
        }


@contextmanager
def s3_server(folder: Path, buckets: tuple[str, ...] = ("lake",)) -> Iterator[S3Server]:
    """SeaweedFS on 127.0.0.1 with its own keys and ``buckets``, stopped (group, with a timeout) on exit."""
    if not available():
        raise RuntimeError(f"no S3 server binary at {server_binary()}: run `make s3-server`")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    names = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc", "metrics")
    ports: dict[str, int] = {}
    for name in names:
        port = port_for.select_random(exclude_ports=set(ports.values()))
        ports[name] = port
    access_key, secret_key = "rfm" + secrets.token_hex(6), secrets.token_hex(20)
    config = folder / "s3.json"
    identity = {"name": "rfm", "credentials": [{"accessKey": access_key, "secretKey": secret_key}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    log = folder / "weed.log"
    endpoint = f"http://{HOST}:{ports['s3']}"
    out = open(log, "ab")  # noqa: SIM115 - open while the server may be (re)started: closed on exit
    executor = HTTPExecutor(
        command(folder, ports, config),
        url=f"{endpoint}/healthz",
        status=r"^\d\d\d$",  # any answer: the gateway is up (auth comes next)
        method="GET",
        cwd=str(folder),
        timeout=START_TIMEOUT_SECONDS,
        stdout=out,
        stderr=out,
    )
    try:
        executor.start()
    except Exception as exc:
        stop(executor)
        out.close()
        raise RuntimeError(f"SeaweedFS did not start: {exc}\n{log.read_text(errors='replace')[-3000:]}") from exc
    server = S3Server(
        endpoint, access_key, secret_key, buckets, executor, log, f"http://{HOST}:{ports['metrics']}/metrics"
    )
    try:
        client = server.client()
        for bucket in buckets:
            create_bucket(client, bucket)
        yield server
    finally:
        server.stop()
        out.close()


def create_bucket(client, bucket: str, attempts: int = 30) -> None:
    """Create ``bucket``; the filer may need a few seconds after the gateway answers."""
    import time

    from botocore.exceptions import ClientError, EndpointConnectionError

    for attempt in range(attempts):
        try:
            client.create_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            if attempt == attempts - 1:
                raise
        except EndpointConnectionError:
            if attempt == attempts - 1:
                raise
        time.sleep(1)


def until_writable(client, bucket: str, attempts: int = 60) -> None:
    """Put and delete a probe object in ``bucket`` until it works (a restarted server's volumes
    register with its master a few seconds after the gateway answers)."""
    import time

    for attempt in range(attempts):
        try:
            client.put_object(Bucket=bucket, Key="_probe", Body=b"")
            client.delete_object(Bucket=bucket, Key="_probe")
            return
        except Exception:  # noqa: BLE001 - not ready yet: any error until the last attempt
            if attempt == attempts - 1:
                raise
            time.sleep(1)


def main() -> None:
    """``python -m jobs.orchestration.object_store FOLDER``: serve until Ctrl-C, printing the env to use."""
    import sys
    import time

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "data/s3")
    with s3_server(folder.resolve()) as server:
        for key, value in server.env.items():
            print(f"export {key}={value}")
        print(f"# buckets: {', '.join(server.buckets)}; log: {server.log}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
