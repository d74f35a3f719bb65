"""The services the pipeline runs beside it, on 127.0.0.1, started and stopped with libraries.

Used by ``make run``/``make airflow``/``make prod-local`` (``jobs.orchestration.local``) and the
tests. Processes are ``mirakuru`` executors (each in its own session, so stopping one stops its
group; started once its port or URL answers), PostgreSQL is ``pytest-postgresql``'s
``PostgreSQLExecutor`` (``pg_ctl``), ports come from ``port-for``. Every listener binds 127.0.0.1:

- PostgreSQL (Debian's ``postgresql`` package): one database and role for the Airflow metadata,
  one for MLflow; local and host logins need a password (scram-sha-256). PostgreSQL refuses to
  run as root, so under root it runs as the ``postgres`` OS user in a folder that user owns (0700).
- ``mlflow server`` on its database, artifacts proxied from a local folder.
- a Spark Connect server holding the driver of every task; optionally on a Spark standalone
  master and worker (the pip pyspark's ``spark-class``), as in the compose shape.
- ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` with the
  LocalExecutor. The scheduler and triggerer run with ``--skip-serve-logs``: Airflow 3.3 binds
  their log servers to every interface with no setting to change it, and on one host the
  api-server reads the task logs from ``$AIRFLOW_HOME/logs`` itself.

Secrets at rest (fernet key, passwords, the SQLite metadata DB, logs) are created 0600 under a
0700 home: every Airflow process and CLI call runs with umask 077.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import port_for
import requests
from mirakuru import HTTPExecutor, SimpleExecutor, TCPExecutor
from mirakuru.exceptions import ExecutorError
from pytest_postgresql.executors import PostgreSQLExecutor

from jobs.config import REPO_ROOT, Settings, load_settings
from jobs.orchestration.lineage import airflow_env as lineage_env
from jobs.orchestration.object_store import BucketDeployment

HOST = "127.0.0.1"
PLUGINS_FOLDER = REPO_ROOT / "plugins"
DAGS_FOLDER = REPO_ROOT / "dags"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"
PRIVATE = 0o077  # umask of the processes that write secrets: files 0600, folders 0700


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on this machine right now."""
    ports: list[int] = []
    for _ in range(count):
        ports.append(port_for.select_random(exclude_ports=ports))
    return ports


def free_port() -> int:
    return free_ports(1)[0]


def venv_bin(name: str) -> str:
    """The executable ``name`` beside this interpreter (the project's virtualenv)."""
    return str(Path(sys.executable).with_name(name))


def private_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)  # an older file keeps its mode through O_CREAT
    return path


def persisted_secret(path: Path) -> str:
    """A random secret kept in ``path`` (0600), so a restart keeps the same login."""
    if not path.exists():
        private_file(path, secrets.token_urlsafe(12))
    return path.read_text().strip()


# ------------------------------------------------------------------------------ processes
def log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def start(
    name: str,
    cmd: list[str],
    log: Path,
    env: dict[str, str],
    *,
    port: int | None = None,
    url: str | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
    umask: int = -1,
) -> SimpleExecutor:
    """``cmd`` in its own session, output appended to ``log``; returns once ``url`` answers 2xx or
    ``port`` accepts connections (or at once with neither). RuntimeError with the log's tail when
    it exits or does not answer within ``timeout``. ``name``/``log`` are kept on the executor."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        kwargs: dict[str, Any] = {
            "timeout": timeout,
            "sleep": 0.5,
            "envvars": env,
            "cwd": str(cwd) if cwd else None,
            "stdin": subprocess.DEVNULL,
            "stdout": out,
            "stderr": subprocess.STDOUT,
            "popen_kwargs": {"umask": umask},
        }
        if url:
            executor: SimpleExecutor = HTTPExecutor(cmd, url, method="GET", **kwargs)
        elif port:
            executor = TCPExecutor(cmd, HOST, port, **kwargs)
        else:
            executor = SimpleExecutor(cmd, **kwargs)
        executor.name, executor.log = name, log  # type: ignore[attr-defined]
        try:
            executor.start()
        except ExecutorError as error:
            stop(executor)
            raise RuntimeError(f"{name} did not start ({error}):\n{log_tail(log)}") from error
    return executor


def stop(*executors: SimpleExecutor) -> None:
    """Stop each (the last given first) with its whole process group; an exit code other than the
    signal's is not an error at shutdown."""
    for executor in reversed(executors):
        group = executor.process.pid if executor.process else None
        try:
            executor.stop()
        except ExecutorError:
            executor.kill()
        if group:  # mirakuru waits for the leader: give the rest of its group the same signal's time
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and group_alive(group):
                time.sleep(0.2)
            if group_alive(group):
                os.killpg(group, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------------------ PostgreSQL
def postgres_bin_dir() -> Path:
    """Where Debian's PostgreSQL server binaries are (RFM_PG_BIN overrides)."""
    if os.environ.get("RFM_PG_BIN"):
        return Path(os.environ["RFM_PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise FileNotFoundError("PostgreSQL is not installed: apt-get install postgresql (make system-packages)")
    return Path(initdb).resolve().parent


def reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Every parent of ``path`` can be entered by ``user`` (without changing any mode)."""
    for parent in path.parents:
        if not parent.exists():
            continue  # made later with the default mode
        st = parent.stat()
        if not st.st_mode & (0o100 if st.st_uid == user.pw_uid else 0o001):
            return False
    return True


class LoopbackPostgres(PostgreSQLExecutor):
    """``pg_ctl`` on 127.0.0.1 through pytest-postgresql, for a cluster that outlives the process:
    initdb only when the folder is new (scram-sha-256 for local and host logins, the superuser's
    password from ``roles.json``), and the data folder is never removed."""

    def __init__(self, folder: Path, port: int, pg_ctl: str, superuser_password: str, initdb: list[str]) -> None:
        self.initdb_cmd = initdb
        super().__init__(
            pg_ctl,
            HOST,
            port,
            str(folder / "data"),
            str(folder),
            str(folder / "postgres.log"),
            "-w",
            "postgres",
            password=superuser_password,
            postgres_options=(
                f"-c listen_addresses={HOST} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200"
            ),
        )

    def init_directory(self) -> None:
        if not Path(self.datadir, "PG_VERSION").exists():
            pwfile = private_file(Path(self.unixsocketdir) / "pwfile", self.password or "")
            owner = Path(self.unixsocketdir).stat()
            os.chown(pwfile, owner.st_uid, owner.st_gid)  # the server's OS user reads it
            try:
                done = subprocess.run([*self.initdb_cmd, f"--pwfile={pwfile}"], capture_output=True, text=True)
            finally:
                pwfile.unlink()
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr or done.stdout}")
        self._directory_initialised = True

    def clean_directory(self) -> None:
        """Keep the data: a restarted ``make prod-local`` finds its metadata again."""


@dataclass
class Postgres:
    """A PostgreSQL cluster for ``folder`` on a loopback port, one database and role per name.

    Under root the server runs as the ``postgres`` OS user: the cluster lives in a folder that user
    owns (mode 0700): ``folder`` itself when every parent of it can be entered, else a folder of its
    own under the temporary directory. No other directory's mode changes."""

    folder: Path
    databases: tuple[str, ...] = ("airflow", "mlflow")
    port: int = field(default_factory=free_port)
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.os_user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self.os_user and not reachable_by(self.folder, self.os_user):
            digest = hashlib.sha256(str(self.folder.resolve()).encode()).hexdigest()[:12]
            self.folder = Path(tempfile.gettempdir()) / f"rfm-postgres-{digest}"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.folder.chmod(0o700)
        if self.os_user:
            os.chown(self.folder, self.os_user.pw_uid, self.os_user.pw_gid)
        saved = self.folder / "roles.json"  # a restarted cluster keeps its roles' passwords
        if not self.passwords and saved.exists():
            self.passwords = json.loads(saved.read_text())
        wanted = ("postgres", *self.databases)
        self.passwords = {db: self.passwords.get(db) or secrets.token_urlsafe(16) for db in wanted}
        private_file(saved, json.dumps(self.passwords))
        bin_dir = postgres_bin_dir()
        as_user = self._as_user()
        initdb = [*as_user, str(bin_dir / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres", "-E", "UTF8"]
        initdb += ["--locale=C", "--auth=scram-sha-256", "--no-sync"]
        self.executor = LoopbackPostgres(
            self.folder, self.port, self._pg_ctl(bin_dir, as_user), self.passwords["postgres"], initdb
        )

    def _as_user(self) -> list[str]:
        if not self.os_user:
            return []
        return ["setpriv", f"--reuid={self.os_user.pw_uid}", f"--regid={self.os_user.pw_gid}", "--clear-groups", "--"]

    def _pg_ctl(self, bin_dir: Path, as_user: list[str]) -> str:
        """``pg_ctl``, or under root a wrapper running it as the postgres user (the executor takes one
        executable); the wrapper sits in a root-only folder, so that user cannot change it."""
        if not as_user:
            return str(bin_dir / "pg_ctl")
        wrapper = Path(tempfile.mkdtemp(prefix="rfm-pg-ctl-")) / "pg_ctl"
        wrapper.write_text(f'#!/bin/sh\ncd /\nexec {" ".join(as_user)} {bin_dir / "pg_ctl"} "$@"\n')
        wrapper.chmod(0o700)
        return str(wrapper)

    def url(self, database: str, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of ``database`` (its own role). SQLAlchemy 2.1 needs the driver named."""
        return f"postgresql+{driver}://{database}:{self.passwords[database]}@{HOST}:{self.port}/{database}"

    def start(self) -> Postgres:
        """initdb (first time only), start, then the roles and databases that are missing."""
        import psycopg

        self.executor.start()
        if self.executor.process and self.executor.process.wait(120) != 0:  # pg_ctl -w: ready once it exits 0
            raise RuntimeError(f"pg_ctl start failed: {log_tail(Path(self.executor.logfile))}")
        superuser = {"host": HOST, "port": self.port, "user": "postgres", "password": self.passwords["postgres"]}
        with psycopg.connect(dbname="postgres", autocommit=True, **superuser) as conn:
            for db in self.databases:
                if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db,)).fetchone():
                    conn.execute(f"CREATE ROLE {db} LOGIN PASSWORD '{self.passwords[db]}'")
                    conn.execute(f"CREATE DATABASE {db} OWNER {db}")
                    conn.execute(f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC")
        return self

    def stop(self) -> None:
        if self.executor.running():
            self.executor.stop()
        if self.os_user:
            shutil.rmtree(Path(self.executor.executable).parent, ignore_errors=True)


# ------------------------------------------------------------------------------ MLflow, Spark
def start_mlflow(
    db_url: str, artifacts: Path | str, port: int, logs: Path, env: dict[str, str] | None = None
) -> SimpleExecutor:
    """``mlflow server`` on ``db_url`` with proxied artifacts (a folder, or ``s3://…`` with ``env``
    naming the endpoint and keys), on 127.0.0.1:``port``, once /health answers."""
    if isinstance(artifacts, Path):
        artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [venv_bin("mlflow"), "server", "--backend-store-uri", db_url, "--artifacts-destination", str(artifacts)]
    cmd += ["--default-artifact-root", "mlflow-artifacts:/", "--host", HOST, "--port", str(port), "--workers", "1"]
    env = {**os.environ, **(env or {}), "NO_PROXY": "*"}
    return start("mlflow", cmd, logs / "mlflow.log", env, url=f"http://{HOST}:{port}/health")


@dataclass
class ConnectServer:
    url: str  # sc://127.0.0.1:<port>: the value of RFM__SPARK__REMOTE
    process: SimpleExecutor


@contextmanager
def spark_connect_server(logs: Path, env: dict[str, str] | None = None) -> Iterator[ConnectServer]:
    """A Spark Connect server holding the driver (``jobs.adapters.spark --serve``) on a free loopback
    port for the duration of the block, once it accepts connections. Tasks reach it with
    ``RFM__SPARK__REMOTE`` set to its ``url``."""
    port = free_port()
    cmd = [sys.executable, "-m", "jobs.adapters.spark", "--serve", "--port", str(port)]
    env = {**os.environ, **(env or {})}
    process = start("spark-connect", cmd, logs / "spark-connect.log", env, port=port, cwd=REPO_ROOT)
    try:
        yield ConnectServer(f"sc://{HOST}:{port}", process)
    finally:
        stop(process)


@dataclass
class SparkStandalone:
    """A Spark standalone master and one worker on loopback."""

    url: str  # spark://127.0.0.1:<port>: the value of spark.master
    ui: str  # the master's web UI; its state as JSON at /json/
    work_dir: Path  # the worker's folder: one sub-folder per application, with its executors' logs
    processes: list[SimpleExecutor]

    def state(self) -> dict[str, Any]:
        return requests.get(f"{self.ui}/json/", timeout=5).json()

    def stop(self) -> None:
        stop(*self.processes)


def start_spark_standalone(
    folder: Path, cores: int = 2, memory: str = "2g", env: dict[str, str] | None = None
) -> SparkStandalone:
    """A master and one worker (``cores``, ``memory``) from the pip pyspark, bound to 127.0.0.1;
    returns once the worker has registered. ``env`` reaches the executors (the S3 keys: s3a reads
    them from the environment)."""
    from jobs.adapters.spark import pyspark_home

    spark_class = str(pyspark_home() / "bin" / "spark-class")
    env = {**os.environ, **(env or {}), "SPARK_HOME": str(pyspark_home()), "SPARK_LOCAL_IP": HOST}
    env["SPARK_NO_DAEMONIZE"] = "1"
    env["PYSPARK_PYTHON"] = sys.executable
    master_port, master_ui, worker_port, worker_ui = free_ports(4)
    url, ui, work_dir = f"spark://{HOST}:{master_port}", f"http://{HOST}:{master_ui}", folder / "spark-worker"
    logs = folder / "services"
    master_cmd = [spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST]
    master_cmd += ["--port", str(master_port), "--webui-port", str(master_ui)]
    master = start("spark-master", master_cmd, logs / "spark-master.log", env, url=f"{ui}/json/", timeout=180)
    cluster = SparkStandalone(url, ui, work_dir, [master])
    worker_cmd = [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", HOST]
    worker_cmd += ["--port", str(worker_port), "--webui-port", str(worker_ui), "--cores", str(cores)]
    worker_cmd += ["--memory", memory, "--work-dir", str(work_dir)]
    try:
        worker = start("spark-worker", worker_cmd, logs / "spark-worker.log", env, port=worker_port, timeout=180)
        cluster.processes.append(worker)
        worker.wait_for(lambda: cluster.state()["aliveworkers"] >= 1)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# ------------------------------------------------------------------------------ Airflow
SHARED_AIRFLOW_ENV = REPO_ROOT / "conf" / "airflow.env"  # also docker/compose.yml's env_file


def shared_airflow_env() -> dict[str, str]:
    """The Airflow settings every deployment shares (``conf/airflow.env``, compose reads the same file)."""
    from dotenv import dotenv_values

    return {key: value or "" for key, value in dotenv_values(SHARED_AIRFLOW_ENV).items()}


@dataclass
class AirflowConfig:
    """What differs between one Airflow installation and another on this machine."""

    home: Path
    db_url: str
    port: int
    admin_password: str
    extra_env: dict[str, str] = field(default_factory=dict)
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @classmethod
    def sqlite(cls, settings: Settings, port: int = 8080, extra_env: dict[str, str] | None = None) -> AirflowConfig:
        """The developer's installation: ``paths.airflow_home`` with a SQLite metadata DB, the
        admin's password kept in ``admin-password`` (0600), this data dir and lineage conf."""
        home = settings.path("airflow_home")
        return cls(
            home=home,
            db_url=f"sqlite:///{home / 'airflow.db'}",
            port=port,
            admin_password=persisted_secret(home / "admin-password"),
            extra_env={
                **lineage_env(settings),
                "RFM__PATHS__DATA_DIR": str(settings.path("data_dir")),
                **(extra_env or {}),
            },
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for every Airflow process and CLI call (all components share it)."""
        from cryptography.fernet import Fernet

        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.home.chmod(0o700)
        fernet_file = self.home / "fernet.key"
        if not fernet_file.exists():
            private_file(fernet_file, Fernet.generate_key().decode())
        passwords = private_file(self.home / "passwords.json", json.dumps({ADMIN_USER: self.admin_password}))
        return {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
            **shared_airflow_env(),
            "AIRFLOW__CORE__FERNET_KEY": fernet_file.read_text().strip(),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "NO_PROXY": "*",
            **self.extra_env,
        }


def airflow_cli(
    config: AirflowConfig, *args: str, timeout: float | None = 600, capture: bool = True, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``airflow <args>`` in ``config``'s environment (umask 077). ``capture``: its output is kept
    (and, with ``check``, a failure raises RuntimeError with it); otherwise it streams to ours."""
    done = subprocess.run(
        [venv_bin("airflow"), *args],
        env=config.env(),
        capture_output=capture,
        text=True,
        timeout=timeout,
        umask=PRIVATE,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{(done.stderr or '')[-3000:]}")
    return done


class ServerBusy(RuntimeError):
    """The API answered 5xx (for instance SQLite locked): worth asking again."""


class AirflowApi:
    """The REST API v2 with a JWT from ``POST /auth/token``."""

    def __init__(self, config: AirflowConfig, user: str = ADMIN_USER) -> None:
        self.base = f"{config.url}/api/v2"
        token = requests.post(
            f"{config.url}/auth/token", json={"username": user, "password": config.admin_password}, timeout=30
        )
        token.raise_for_status()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.session.request(method, self.base + path, timeout=120, **kwargs)
        if response.status_code >= 500:
            raise ServerBusy(f"{method} {path}: {response.status_code} {response.text[:1000]}")
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:1000]}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns", order_by="run_after", limit=1000)["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=1000)["task_instances"]

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})


def airflow_healthy(config: AirflowConfig, components: tuple[str, ...] = AIRFLOW_COMPONENTS) -> bool:
    """The metadata DB and every started component report healthy on ``/api/v2/monitor/health``."""
    try:
        health = requests.get(f"{config.url}/api/v2/monitor/health", timeout=5)
    except requests.RequestException:
        return False
    wanted = ["metadatabase", *(c.replace("-", "_") for c in components if c != "api-server")]
    return health.ok and all((health.json().get(part) or {}).get("status") == "healthy" for part in wanted)


def start_component(config: AirflowConfig, name: str, logs: Path) -> SimpleExecutor:
    """One Airflow component as its own process (scheduler and triggerer without log servers); the
    api-server is started once it answers (tasks report to its execution API)."""
    skip = ["--skip-serve-logs"] if name in ("scheduler", "triggerer") else []
    url = f"{config.url}/api/v2/monitor/health" if name == "api-server" else None
    cmd = [venv_bin("airflow"), name, *skip]
    return start(f"airflow {name}", cmd, logs / f"{name}.log", config.env(), url=url, timeout=600, umask=PRIVATE)


def wait_healthy(config: AirflowConfig, procs: list[SimpleExecutor], components: tuple[str, ...]) -> None:
    """Until every component in ``components`` is healthy; RuntimeError when one of ``procs`` exits."""
    waiter = procs[-1]
    waiter._set_timeout()  # noqa: SLF001 - mirakuru's deadline for wait_for
    for proc in procs:
        if not proc.running():
            raise RuntimeError(f"{proc.name} exited:\n{log_tail(proc.log)}")
    try:
        waiter.wait_for(lambda: all(p.running() for p in procs) and airflow_healthy(config, components))
    except ExecutorError as error:
        dead = [p for p in procs if not p.running()]
        raise RuntimeError(f"Airflow not healthy ({error}):\n{log_tail(dead[0].log) if dead else ''}") from error


def start_airflow(
    config: AirflowConfig, logs: Path, components: tuple[str, ...] = AIRFLOW_COMPONENTS, migrate: bool = True
) -> list[SimpleExecutor]:
    """``airflow db migrate`` (unless done already), then each component (the api-server first) as
    its own process; returns once all are healthy."""
    if migrate:
        airflow_cli(config, "db", "migrate")
    procs: list[SimpleExecutor] = []
    try:
        for name in sorted(components, key=lambda c: c != "api-server"):
            procs.append(start_component(config, name, logs))
        wait_healthy(config, procs, components)
    except BaseException:
        stop(*procs)
        raise
    return procs


# ------------------------------------------------------------------------------ the whole set
@dataclass
class Stack:
    """A running set: its URLs, credentials and the Airflow config for CLI and API calls."""

    postgres: Postgres
    airflow: AirflowConfig
    mlflow_url: str
    spark_url: str
    processes: list[SimpleExecutor]
    spark_cluster: SparkStandalone | None = None

    def describe(self) -> str:
        pg = self.postgres
        lines = [
            f"Airflow UI/API   {self.airflow.url}   user {ADMIN_USER!r}, password in {self.airflow.home.parent}",
            f"MLflow UI        {self.mlflow_url}   (no auth on loopback)",
            f"Spark Connect    {self.spark_url}   (the tasks' driver)",
            f"PostgreSQL       {HOST}:{pg.port}   socket dir {pg.folder}, passwords in {pg.folder / 'roles.json'}",
        ]
        if self.spark_cluster:
            lines.insert(3, f"Spark master     {self.spark_cluster.url}   UI {self.spark_cluster.ui}")
        lines += [
            f"Logs             {self.airflow.home.parent / 'services'}",
            f"Tasks log to MLflow at RFM__MLFLOW__TRACKING_URI={self.mlflow_url}",
        ]
        return "\n".join(lines)

    def pids(self) -> list[int]:
        """The group leader of every process of the set (PostgreSQL's postmaster included)."""
        pids = [p.process.pid for p in self.processes if p.process]
        if self.spark_cluster:
            pids += [p.process.pid for p in self.spark_cluster.processes if p.process]
        postmaster = Path(self.postgres.executor.datadir) / "postmaster.pid"
        if postmaster.exists():
            pids.append(int(postmaster.read_text().split()[0]))
        return pids


@contextmanager
def production_stack(
    folder: Path,
    pipeline_env: dict[str, str] | None = None,
    admin_password: str | None = None,
    airflow_port: int | None = None,
    mlflow_port: int | None = None,
    postgres_dir: Path | None = None,
    spark_cluster: bool = False,
    bucket: BucketDeployment | None = None,
) -> Iterator[Stack]:
    """PostgreSQL, MLflow server, a Spark Connect server and Airflow under ``folder``, stopped (in
    reverse) on exit. The tasks connect to the Spark Connect server: the driver is not in the
    scheduler's (or a task's) process. ``spark_cluster``: the Connect server's master is a
    standalone master and worker started here (``spark.master`` through ``RFM__SPARK__MASTER``),
    otherwise ``spark.master`` from the config (``local[2]``).

    ``pipeline_env`` (``RFM__…`` variables) goes to every Airflow process, so the DAG and its
    tasks see it; the MLflow tracking URI is set to the server started here. ``postgres_dir``:
    the cluster's folder (default ``folder/postgres``; see ``Postgres`` for root). ``bucket``:
    every location and the MLflow server's artifacts on an S3 server (``BucketDeployment``), only
    logs and service state under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    logs = folder / "services"
    mlflow_port = mlflow_port or free_port()
    mlflow_url = f"http://{HOST}:{mlflow_port}"
    with ExitStack() as stack:
        postgres = Postgres(postgres_dir or folder / "postgres").start()
        stack.callback(postgres.stop)
        artifacts, artifacts_env = (bucket.artifacts, bucket.mlflow_server_env()) if bucket else (None, None)
        mlflow = start_mlflow(
            postgres.url("mlflow"), artifacts or folder / "mlflow-artifacts", mlflow_port, logs, artifacts_env
        )
        stack.callback(stop, mlflow)
        pipeline_env = {**(bucket.pipeline_env(folder) if bucket else {}), **(pipeline_env or {})}
        cluster = None
        if spark_cluster:
            cluster = start_spark_standalone(folder, env=pipeline_env)
            stack.callback(cluster.stop)
            pipeline_env["RFM__SPARK__MASTER"] = cluster.url
        spark = stack.enter_context(spark_connect_server(logs, pipeline_env))
        lineage = lineage_env(load_settings(), pipeline_env.get("RFM__LINEAGE__TRANSPORT"))
        extra = {**lineage, **pipeline_env, "RFM__MLFLOW__TRACKING_URI": mlflow_url, "RFM__SPARK__REMOTE": spark.url}
        config = AirflowConfig(
            home=folder / "airflow",
            db_url=postgres.url("airflow"),
            port=airflow_port or free_port(),
            admin_password=admin_password or secrets.token_urlsafe(12),
            extra_env=extra,
        )
        procs = start_airflow(config, logs)
        stack.callback(stop, *procs)
        yield Stack(postgres, config, mlflow_url, spark.url, [mlflow, spark.process, *procs], cluster)
