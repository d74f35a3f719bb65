"""Where a location lives and how each client reaches it: the one module that knows about S3.

A location in ``paths.*`` is a local path or an ``s3://bucket/prefix`` URI (S3 or an
S3-compatible store: SeaweedFS, MinIO, Ceph, R2). ``storage.endpoint_url`` names a non-AWS
endpoint; the keys come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``),
never from a conf file. Each client gets the location in its own form:

- Spark: ``s3a://`` with the ``fs.s3a.*`` conf of ``spark_conf`` (hadoop-aws, ``jobs.adapters.spark``);
- delta-rs and pyarrow: ``s3://`` with ``delta_options``;
- plain files (validation results, reports, exports, leases, landing objects): a ``UPath`` over
  fsspec/s3fs (``location``), so ``exists``/``open``/``iterdir`` work the same on disk and on a bucket;
- MLflow: ``mlflow server --artifacts-destination s3://…`` with ``mlflow_env``.

Every client gets the same bounds (``storage.max_attempts``, ``connect_timeout_seconds``,
``read_timeout_seconds``): an endpoint that is down fails a step in tens of seconds, and
``unavailable`` names that failure (``StorageUnavailableError``, retryable) whichever client met it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from upath import UPath

from jobs.errors import StorageUnavailableError

if TYPE_CHECKING:
    from jobs.config import Settings, Storage

S3_SCHEME = "s3://"
KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
# the settings a bucket may hold; the others (ivy jars, Airflow home, the GX suite) are local folders
BUCKET_CAPABLE = ("data_dir", "landing_dir", "lake_dir", "validation_dir", "reports_dir", "exports_dir")

Location = Path | UPath


class StorageError(RuntimeError):
    """A location cannot be reached as configured (missing keys, a local-only setting on a bucket)."""


def is_s3(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith(S3_SCHEME)


def credentials() -> dict[str, str]:
    """The S3 keys from the environment; a clear error naming the variables when they are missing."""
    missing = [name for name in KEY_VARIABLES if not os.environ.get(name)]
    if missing:
        raise StorageError(f"an s3:// location needs {' and '.join(missing)} in the environment (never in conf/)")
    keys = {name: os.environ[name] for name in KEY_VARIABLES}
    if os.environ.get("AWS_SESSION_TOKEN"):
        keys["AWS_SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
    return keys


def fsspec_options(conf: Storage) -> dict[str, Any]:
    """s3fs options: endpoint, region, path-style addressing; keys from the environment."""
    keys = credentials()
    client: dict[str, Any] = {"region_name": conf.region}
    if conf.endpoint_url:
        client["endpoint_url"] = conf.endpoint_url
    return {
        "key": keys["AWS_ACCESS_KEY_ID"],
        "secret": keys["AWS_SECRET_ACCESS_KEY"],
        "token": keys.get("AWS_SESSION_TOKEN"),
        "client_kwargs": client,
        "config_kwargs": {
            "s3": {"addressing_style": "path" if conf.path_style else "auto"},
            "connect_timeout": conf.connect_timeout_seconds,
            "read_timeout": conf.read_timeout_seconds,
            "retries": {"max_attempts": conf.max_attempts, "mode": "standard"},
        },
        # listings must see what another process just wrote (markers, leases, new days)
        "use_listings_cache": False,
    }


def location(raw: str, conf: Storage) -> Location:
    """``raw`` as a path object: a ``UPath`` on the bucket for ``s3://…``, else a local ``Path``."""
    if is_s3(raw):
        return UPath(raw, **fsspec_options(conf))
    return Path(raw)


def delta_options(location: str | os.PathLike[str], conf: Storage) -> dict[str, str] | None:
    """delta-rs / pyarrow storage options for ``location`` (None for a local path).

    ``conditional_put=etag``: delta-rs commits with ``If-None-Match: *``, so two delta-rs writers
    racing on one version cannot both win (no DynamoDB lock needed)."""
    if not is_s3(location):
        return None
    return _delta_options(
        conf.endpoint_url, conf.region, conf.path_style, conf.max_attempts, conf.connect_timeout_seconds
    )


def _delta_options(
    endpoint_url: str | None, region: str, path_style: bool, attempts: int, connect_timeout: int
) -> dict[str, str]:
    options = {**credentials(), "AWS_REGION": region, "conditional_put": "etag"}
    options.update({"max_retries": str(attempts - 1), "connect_timeout": f"{connect_timeout}s"})
    if endpoint_url:
        options["AWS_ENDPOINT_URL"] = endpoint_url
        options["AWS_ALLOW_HTTP"] = str(endpoint_url.startswith("http://")).lower()
    options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = str(not path_style).lower()
    return options


def table_options(location: str | os.PathLike[str]) -> dict[str, str] | None:
    """delta-rs / pyarrow storage options of a location made by ``location`` (None: local): the
    endpoint and addressing its ``UPath`` carries, the keys from the environment."""
    if not is_s3(location):
        return None
    options = getattr(location, "storage_options", {}) or {}
    client, config = options.get("client_kwargs", {}), options.get("config_kwargs", {})
    style = config.get("s3", {}).get("addressing_style", "path")
    attempts, connect_timeout = config.get("retries", {}).get("max_attempts", 3), config.get("connect_timeout", 5)
    return _delta_options(
        client.get("endpoint_url"), client.get("region_name", "us-east-1"), style == "path", attempts, connect_timeout
    )


def delta_table(location: str | os.PathLike[str], version: int | None = None) -> Any:
    """The Delta table at ``location`` read by delta-rs (at ``version`` when given)."""
    import deltalake

    return deltalake.DeltaTable(uri(location), version=version, storage_options=table_options(location))


def is_delta_table(location: str | os.PathLike[str]) -> bool:
    import deltalake

    return deltalake.DeltaTable.is_deltatable(uri(location), storage_options=table_options(location))


def uri(location: str | os.PathLike[str]) -> str:
    """The location as delta-rs, pyarrow and MLflow name it: ``s3://…`` or an absolute local path."""
    return str(location)


def spark_uri(location: str | os.PathLike[str]) -> str:
    """The location as Spark names it: ``s3a://…`` (hadoop-aws) or the local path."""
    text = str(location)
    return "s3a://" + text.removeprefix(S3_SCHEME) if is_s3(text) else text


def uses_s3(settings: Settings) -> bool:
    """Whether any location of this configuration is on a bucket (then Spark loads hadoop-aws)."""
    raws = [getattr(settings.paths, name).format(data_dir=settings.paths.data_dir) for name in BUCKET_CAPABLE]
    return any(is_s3(raw) for raw in raws) or is_s3(settings.mlflow.artifacts_destination or "")


def spark_conf(settings: Settings) -> dict[str, str]:
    """The ``fs.s3a.*`` conf when a location is on S3 (else none): endpoint, region, path style,
    TLS as the endpoint's scheme says. No keys: hadoop-aws's default chain reads them from the
    environment of the driver (and executors)."""
    if not uses_s3(settings):
        return {}
    conf = settings.storage
    values = {
        "spark.hadoop.fs.s3a.endpoint.region": conf.region,
        "spark.hadoop.fs.s3a.path.style.access": str(conf.path_style).lower(),
        "spark.hadoop.fs.s3a.aws.credentials.provider": (
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
        ),
        # a night's small commits: fail a call to a stopped server in seconds, not minutes (the
        # defaults: 5 SDK attempts inside each of 7 s3a retries, 30 s to connect, 200 s of silence)
        "spark.hadoop.fs.s3a.attempts.maximum": str(conf.max_attempts),
        "spark.hadoop.fs.s3a.retry.limit": str(conf.max_attempts),
        # hadoop-aws 3.4 raises a connect timeout under 15 s to 15 s (with a warning): ask for no less
        "spark.hadoop.fs.s3a.connection.establish.timeout": f"{max(conf.connect_timeout_seconds, 15)}s",
        "spark.hadoop.fs.s3a.connection.timeout": f"{conf.read_timeout_seconds}s",
    }
    if conf.endpoint_url:
        values["spark.hadoop.fs.s3a.endpoint"] = conf.endpoint_url
        values["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(conf.endpoint_url.startswith("https://")).lower()
    return values


def mlflow_env(settings: Settings) -> dict[str, str]:
    """Environment for an MLflow server or client storing artifacts on S3 (boto3 reads it)."""
    if not is_s3(settings.mlflow.artifacts_destination or ""):
        return {}
    env = {**credentials(), "AWS_DEFAULT_REGION": settings.storage.region}
    env.update({"AWS_MAX_ATTEMPTS": str(settings.storage.max_attempts), "AWS_RETRY_MODE": "standard"})
    if settings.storage.endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = settings.storage.endpoint_url
    return env


# What a client says when the endpoint does not answer (refused, timed out, unresolvable): botocore
# (s3fs, MLflow), the AWS SDK under hadoop-aws (through Py4J or Spark Connect), object_store (delta-rs).
# The first pattern says how; the AWS SDK's generic "Unable to execute HTTP request" counts when none does.
UNREACHABLE = [
    re.compile(
        r"Connection refused|Could not connect to the endpoint URL|Cannot connect to host|connect timed out|"
        r"Connect timeout|Read timed out|tcp connect error|No route to host|UnknownHostException",
        re.IGNORECASE,
    ),
    re.compile(r"Unable to execute HTTP request", re.IGNORECASE),
]
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def unavailable(error: BaseException, settings: Settings) -> StorageUnavailableError | None:
    """``error`` as a one-line ``StorageUnavailableError`` when it, or an error it came from, says
    the S3 endpoint did not answer (and names it or an ``s3://``/``s3a://`` location); else None."""
    if isinstance(error, StorageUnavailableError):
        return error
    if not uses_s3(settings):
        return None
    endpoint = settings.storage.endpoint_url
    host = urlsplit(endpoint).netloc if endpoint else "amazonaws.com"
    for cause in _chain(error):
        text = " ".join(ANSI.sub("", f"{type(cause).__name__}: {cause}").split())
        found = next((match for pattern in UNREACHABLE if (match := pattern.search(text))), None)
        if found and (host in text or "s3a://" in text or "s3://" in text):
            location = _named_location(text, endpoint) or settings.paths.lake_dir
            return StorageUnavailableError(
                f"storage unreachable: the S3 endpoint {endpoint or 'of AWS'} did not answer ({found.group(0)}) "
                f"at {location}; retryable: run the step again once the endpoint answers"
            )
    return None


def _named_location(text: str, endpoint: str | None) -> str | None:
    """The first ``s3://``/``s3a://`` location an error message names, or the key of a URL on the endpoint."""
    found = re.search(r"s3a?://[^\s:'\"]+", text)
    if found:
        return found.group(0)
    found = re.search(re.escape(endpoint.rstrip("/")) + r"(/[^\s'\")]+)", text) if endpoint else None
    if found is None:
        return None
    url = urlsplit(found.group(1))  # a listing names its folder in the query: /bucket?list-type=2&prefix=a%2Fb
    prefix = parse_qs(url.query).get("prefix", [""])[0]
    return S3_SCHEME + url.path.strip("/") + (f"/{prefix.rstrip('/')}" if prefix else "")


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and every error it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    pending = [error]
    while pending:
        current = pending.pop(0)
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


def is_remote(location: object) -> bool:
    """Whether ``location`` is on a bucket (a ``UPath`` made by ``location``), not a local file."""
    return isinstance(location, UPath) and is_s3(location)


def _split(location: UPath) -> tuple[str, str]:
    bucket, key, _ = location.fs.split_path(location.path)
    return bucket, key


def create_exclusive(location: UPath, data: bytes) -> str | None:
    """Put the object only if no object has its key (``If-None-Match: *``, a conditional put):
    its ETag, or None when the key exists. Two writers racing on one key: exactly one wins."""
    bucket, key = _split(location)
    try:
        out = location.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except FileExistsError:
        return None
    except OSError as exc:  # s3fs maps a 412 without the condition named to EINVAL
        if exc.errno == errno.EINVAL:
            return None
        raise
    return out["ETag"]


def read_tagged(location: UPath) -> tuple[bytes, str] | None:
    """The object's bytes and an ETag no newer than them (None when absent): a delete conditional
    on that ETag removes exactly what was read, or nothing."""
    try:
        etag = location.fs.info(location.path, refresh=True)["ETag"]
        return location.fs.cat_file(location.path), etag
    except FileNotFoundError:
        return None


def replace_if_match(location: UPath, data: bytes, etag: str) -> str | None:
    """Overwrite the object only if it still is the version ``etag`` (``If-Match``): its new ETag,
    or None when another writer changed or removed it meanwhile."""
    bucket, key = _split(location)
    try:
        out = location.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=etag)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a 412 Precondition Failed
        if exc.errno == errno.EINVAL:
            return None
        raise
    location.fs.invalidate_cache(location.path)
    return out["ETag"]


def delete_if_match(location: UPath, etag: str) -> bool:
    """Delete the object only if it still is the version ``etag`` (``If-Match``); whether it was."""
    bucket, key = _split(location)
    try:
        location.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    location.fs.invalidate_cache(location.path)
    return True


def data_files(location: Location, suffix: str, skip_part: str = "_delta_log") -> list[tuple[str, int]]:
    """(path, size) of every file under ``location`` ending in ``suffix``, outside ``skip_part``
    folders: one recursive listing (on a bucket: ListObjectsV2 pages, not a glob per folder)."""
    fs, root = filesystem(location)
    if not fs.exists(root):
        return []
    found = fs.find(root, detail=True)
    return sorted(
        (path, int(info.get("size") or 0))
        for path, info in found.items()
        if path.endswith(suffix) and skip_part not in path.split("/")
    )


@contextmanager
def staged_folder(target: Location) -> Iterator[Path]:
    """A local folder to build ``target``'s new content in; on success it replaces ``target``
    whole (no stale file survives), on failure it is dropped and ``target`` is untouched.

    Local: built beside ``target`` and swapped in by renames. On a bucket: built in a temporary
    folder, uploaded (``index_name`` last, when there is one) and the keys of the previous
    content that the new one does not have are deleted."""
    if not is_remote(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; what is published is for readers
        try:
            yield staging
            _replace_local(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return
    staging = Path(tempfile.mkdtemp(prefix="rfm-stage-"))
    try:
        yield staging
        upload_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def upload_folder(folder: Path, target: UPath, last: str | None = None) -> None:
    """Put every file of ``folder`` under ``target`` (``last`` after the others), then delete
    the keys under ``target`` the folder does not have."""
    fs, root = target.fs, target.path.rstrip("/")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name == last)
    new_keys = set()
    for file in files:
        key = f"{root}/{file.relative_to(folder).as_posix()}"
        fs.put_file(str(file), key)
        new_keys.add(key)
    old = fs.find(root) if fs.exists(root) else []
    stale = [key for key in old if key not in new_keys]
    if stale:
        fs.rm(stale)


def download_folder(source: UPath, target: Path) -> None:
    """Get every object under ``source`` into the local folder ``target`` (same relative keys)."""
    fs, root = source.fs, source.path.rstrip("/")
    for key in fs.find(root):
        local = target / key[len(root) + 1 :]
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(key, str(local))


@contextmanager
def scratch(data_dir: Location, prefix: str) -> Iterator[Location]:
    """A temporary folder under ``<data_dir>/tmp`` that this process and the Spark driver (a
    Connect server, a cluster) both reach: a local folder, or a key prefix on the bucket when the
    data dir is one. Removed afterwards, whatever happened."""
    root = data_dir / "tmp"
    if is_remote(root):
        folder = root / f"{prefix}{uuid.uuid4().hex}"
        try:
            yield folder
        finally:
            if folder.fs.exists(folder.path):
                folder.fs.rm(folder.path, recursive=True)
        return
    root.mkdir(parents=True, exist_ok=True)
    local = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield local
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _replace_local(new: Path, target: Path) -> None:
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        target.rename(retired / target.name)
        new.rename(target)
        shutil.rmtree(retired)
    else:
        new.rename(target)


def filesystem(location: Location) -> tuple[Any, str]:
    """The fsspec filesystem of ``location`` and its path in it (for listings and streaming reads)."""
    if isinstance(location, UPath):
        return location.fs, location.path
    import fsspec

    return fsspec.filesystem("file"), str(location)
