"""The production path on one machine: PostgreSQL, MLflow server and Airflow, all on 127.0.0.1.

Used by ``make prod-local`` (``python -m jobs.orchestration prod-local``) and by
tests/test_scheduled_path.py. Every process runs in its own session (process group), so
stopping one stops its workers too; every listener binds 127.0.0.1:

- PostgreSQL (Debian's ``postgresql`` package): ``initdb`` into a folder, ``pg_ctl`` on a free
  port, one database and role for the Airflow metadata, one for MLflow. PostgreSQL refuses to
  run as root, so under root it runs as the ``postgres`` OS user.
- ``mlflow server`` on its database, artifacts proxied from a local folder.
- a Spark Connect server holding the driver of every task; optionally on a Spark standalone
  master and worker (the pip pyspark's ``spark-class``), as in the compose shape.
- ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer`` with the
  LocalExecutor. The scheduler and triggerer run with ``--skip-serve-logs``: Airflow 3.3 binds
  their log servers to every interface with no setting to change it, and on one host the
  api-server reads the task logs from ``$AIRFLOW_HOME/logs`` itself.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from jobs.config import REPO_ROOT, load_settings
from jobs.orchestration.lineage import airflow_env as lineage_env

HOST = "127.0.0.1"
PLUGINS_FOLDER = REPO_ROOT / "plugins"
DAGS_FOLDER = REPO_ROOT / "dags"
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on the loopback interface right now (bound together, so
    never the same port twice)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def venv_bin(name: str) -> str:
    """The executable ``name`` beside this interpreter (the project's virtualenv)."""
    return str(Path(sys.executable).with_name(name))


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


# ------------------------------------------------------------------------------ processes
@dataclass
class Process:
    """A server started in its own session; ``stop`` signals the whole process group."""

    name: str
    popen: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, name: str, cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
            )
        return cls(name, popen, log)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to the group, SIGKILL after ``timeout``; nothing of the group survives."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            deadline = time.monotonic() + wait  # the leader is gone: give its children the same time
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.popen.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.2)


def wait_until(what: str, check: Callable[[], bool], timeout: float, processes: list[Process] = ()) -> None:
    """Poll ``check`` until it is true; fail early, with the log, when a process has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in processes:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}) before {what}:\n{proc.tail()}")
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s")


# ------------------------------------------------------------------------------ PostgreSQL
@dataclass
class Postgres:
    """A PostgreSQL cluster in ``folder`` on a loopback port, one database and role per name."""

    folder: Path
    databases: tuple[str, ...] = ("airflow", "mlflow")
    port: int = field(default_factory=free_port)
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.os_user = "postgres" if os.geteuid() == 0 else None
        self.bin = postgres_bin_dir()
        saved = self.folder / "roles.json"  # a restarted cluster keeps its roles' passwords
        if not self.passwords and saved.exists():
            self.passwords = json.loads(saved.read_text())
        self.passwords = self.passwords or {db: secrets.token_urlsafe(16) for db in self.databases}

    def url(self, database: str, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of ``database`` (its own role). SQLAlchemy 2.1 needs the driver named."""
        return f"postgresql+{driver}://{database}:{self.passwords[database]}@{HOST}:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        kwargs: dict[str, Any] = {}
        if self.os_user:
            user = pwd.getpwnam(self.os_user)
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        done = subprocess.run(list(args), capture_output=True, text=True, cwd=self.folder, **kwargs)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}")

    def _sql(self, statement: str) -> None:
        self._run(
            str(self.bin / "psql"),
            "-h",
            str(self.folder),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            statement,
        )

    def start(self) -> Postgres:
        """initdb (first time only), start, create the roles and databases (first time only)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.os_user:  # every parent must be traversable by the postgres user
            user = pwd.getpwnam(self.os_user)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            for parent in self.folder.parents:
                if parent.stat().st_mode & 0o001 == 0:
                    parent.chmod(parent.stat().st_mode | 0o011)
        data = self.folder / "data"
        fresh = not data.exists()
        if fresh:
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
            )
        options = (
            f"-k {self.folder} -p {self.port} -c listen_addresses={HOST} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(self.folder / "postgres.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        if fresh:
            saved = self.folder / "roles.json"
            saved.write_text(json.dumps(self.passwords))
            saved.chmod(0o600)
            for db in self.databases:
                self._sql(f"CREATE ROLE {db} LOGIN PASSWORD '{self.passwords[db]}'")
                self._sql(f"CREATE DATABASE {db} OWNER {db}")
                self._sql(f"REVOKE CONNECT ON DATABASE {db} FROM PUBLIC")
        return self

    def stop(self) -> None:
        data = self.folder / "data"
        if (data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")


# ------------------------------------------------------------------------------ MLflow
def start_mlflow(db_url: str, artifacts: Path, port: int, logs: Path) -> Process:
    """``mlflow server`` on ``db_url`` with proxied artifacts, on 127.0.0.1:``port``; waits for /health."""
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        venv_bin("mlflow"),
        "server",
        "--backend-store-uri",
        db_url,
        "--artifacts-destination",
        str(artifacts),
        "--default-artifact-root",
        "mlflow-artifacts:/",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = Process.start("mlflow", cmd, logs / "mlflow.log", {**os.environ, "NO_PROXY": "*"})
    url = f"http://{HOST}:{port}"
    wait_until("MLflow /health", lambda: requests.get(f"{url}/health", timeout=5).ok, 300, [proc])
    return proc


# ------------------------------------------------------------------------------ Spark Connect
def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@dataclass
class ConnectServer:
    url: str  # sc://127.0.0.1:<port>: the value of RFM__SPARK__REMOTE
    process: Process


@contextmanager
def spark_connect_server(logs: Path, env: dict[str, str] | None = None) -> Iterator[ConnectServer]:
    """A Spark Connect server holding the driver (``jobs.adapters.spark --serve``) on a free loopback
    port for the duration of the block, once it accepts connections. Tasks reach it with
    ``RFM__SPARK__REMOTE`` set to its ``url``."""
    port = free_port()
    cmd = [sys.executable, "-m", "jobs.adapters.spark", "--serve", "--port", str(port)]
    process = Process.start("spark-connect", cmd, logs / "spark-connect.log", {**os.environ, **(env or {})}, REPO_ROOT)
    try:
        wait_until("Spark Connect", lambda: port_open(port), 300, [process])
        yield ConnectServer(f"sc://{HOST}:{port}", process)
    finally:
        process.stop()


# ------------------------------------------------------------------------------ Spark standalone
@dataclass
class SparkStandalone:
    """A Spark standalone master and one worker on loopback."""

    url: str  # spark://127.0.0.1:<port>: the value of spark.master
    ui: str  # the master's web UI; its state as JSON at /json/
    work_dir: Path  # the worker's folder: one sub-folder per application, with its executors' logs
    processes: list[Process]

    def state(self) -> dict[str, Any]:
        return requests.get(f"{self.ui}/json/", timeout=5).json()

    def stop(self) -> None:
        stop_all(self.processes)


def start_spark_standalone(folder: Path, cores: int = 2, memory: str = "2g") -> SparkStandalone:
    """A master and one worker (``cores``, ``memory``) from the pip pyspark, bound to 127.0.0.1;
    waits until the worker has registered."""
    from jobs.adapters.spark import pyspark_home

    spark_class = str(pyspark_home() / "bin" / "spark-class")
    env = {
        **os.environ,
        "SPARK_HOME": str(pyspark_home()),
        "SPARK_LOCAL_IP": HOST,
        "SPARK_NO_DAEMONIZE": "1",
        "PYSPARK_PYTHON": sys.executable,
    }
    master_port, master_ui, worker_port, worker_ui = free_ports(4)
    url, ui, work_dir = f"spark://{HOST}:{master_port}", f"http://{HOST}:{master_ui}", folder / "spark-worker"
    master = Process.start(
        "spark-master",
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            HOST,
            "--port",
            str(master_port),
            "--webui-port",
            str(master_ui),
        ],
        folder / "services" / "spark-master.log",
        env,
    )
    cluster = SparkStandalone(url, ui, work_dir, [master])
    try:
        wait_until("the Spark master", lambda: port_open(master_port), 180, [master])
        cluster.processes.append(
            Process.start(
                "spark-worker",
                [
                    spark_class,
                    "org.apache.spark.deploy.worker.Worker",
                    url,
                    "--host",
                    HOST,
                    "--port",
                    str(worker_port),
                    "--webui-port",
                    str(worker_ui),
                    "--cores",
                    str(cores),
                    "--memory",
                    memory,
                    "--work-dir",
                    str(work_dir),
                ],
                folder / "services" / "spark-worker.log",
                env,
            )
        )
        wait_until("a Spark worker to register", lambda: cluster.state()["aliveworkers"] >= 1, 180, cluster.processes)
    except BaseException:
        cluster.stop()
        raise
    return cluster


# ------------------------------------------------------------------------------ Airflow
@dataclass
class AirflowConfig:
    """What differs between one Airflow installation and another on this machine."""

    home: Path
    db_url: str
    port: int
    admin_password: str
    extra_env: dict[str, str] = field(default_factory=dict)
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for every Airflow process and CLI call (all components share it)."""
        from cryptography.fernet import Fernet

        fernet_file = self.home / "fernet.key"
        if not fernet_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            fernet_file.write_text(Fernet.generate_key().decode())
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({ADMIN_USER: self.admin_password}))
        return {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__FERNET_KEY": fernet_file.read_text().strip(),
            "AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACKS": "True",
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


def airflow_cli(config: AirflowConfig, *args: str, timeout: float = 600) -> str:
    """``airflow <args>`` in ``config``'s environment; its stdout, or RuntimeError with the output."""
    done = subprocess.run(
        [venv_bin("airflow"), *args], env=config.env(), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


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
    health = requests.get(f"{config.url}/api/v2/monitor/health", timeout=5)
    if not health.ok:
        return False
    wanted = ["metadatabase", *(c.replace("-", "_") for c in components if c != "api-server")]
    return all((health.json().get(part) or {}).get("status") == "healthy" for part in wanted)


def start_airflow(
    config: AirflowConfig, logs: Path, components: tuple[str, ...] = AIRFLOW_COMPONENTS, migrate: bool = True
) -> list[Process]:
    """``airflow db migrate`` (unless done already), then each component as its own process; waits until healthy."""
    config.home.mkdir(parents=True, exist_ok=True)
    if migrate:
        airflow_cli(config, "db", "migrate")
    procs: list[Process] = []
    try:
        # the api-server first: tasks report to its execution API, so nothing may run before it answers
        for name in sorted(components, key=lambda c: c != "api-server"):
            procs.append(start_component(config, name, logs))
            if name == "api-server":
                wait_until(
                    "the Airflow API server",
                    lambda: requests.get(f"{config.url}/api/v2/monitor/health", timeout=5).ok,
                    600,
                    procs,
                )
        wait_until("Airflow components healthy", lambda: airflow_healthy(config, components), 600, procs)
    except BaseException:
        stop_all(procs)
        raise
    return procs


def start_component(config: AirflowConfig, name: str, logs: Path) -> Process:
    """One Airflow component as its own process (scheduler and triggerer without log servers)."""
    skip = ["--skip-serve-logs"] if name in ("scheduler", "triggerer") else []
    return Process.start(f"airflow {name}", [venv_bin("airflow"), name, *skip], logs / f"{name}.log", config.env())


def stop_all(procs: list[Process]) -> None:
    """Stop every process, the last started first."""
    for proc in reversed(procs):
        proc.stop()


# ------------------------------------------------------------------------------ the whole set
@dataclass
class Stack:
    """A running set: its URLs, credentials and the Airflow config for CLI and API calls."""

    postgres: Postgres
    airflow: AirflowConfig
    mlflow_url: str
    spark_url: str
    processes: list[Process]
    spark_cluster: SparkStandalone | None = None

    def describe(self) -> str:
        pg = self.postgres
        lines = [
            f"Airflow UI/API   {self.airflow.url}   user {ADMIN_USER!r}, password {self.airflow.admin_password!r}",
            f"MLflow UI        {self.mlflow_url}   (no auth on loopback)",
            f"Spark Connect    {self.spark_url}   (the tasks' driver)",
            f"PostgreSQL       {HOST}:{pg.port}   socket dir {pg.folder}",
        ]
        if self.spark_cluster:
            lines.insert(3, f"Spark master     {self.spark_cluster.url}   UI {self.spark_cluster.ui}")
        lines += [f"  database {db:<8} {pg.url(db)}" for db in pg.databases]
        lines += [
            f"Logs             {self.airflow.home / 'services'}",
            f"Tasks log to MLflow at RFM__MLFLOW__TRACKING_URI={self.mlflow_url}",
        ]
        return "\n".join(lines)


@contextmanager
def production_stack(
    folder: Path,
    pipeline_env: dict[str, str] | None = None,
    admin_password: str | None = None,
    airflow_port: int | None = None,
    mlflow_port: int | None = None,
    postgres_dir: Path | None = None,
    spark_cluster: bool = False,
) -> Iterator[Stack]:
    """PostgreSQL, MLflow server, a Spark Connect server and Airflow under ``folder``, stopped (in
    reverse) on exit. The tasks connect to the Spark Connect server: the driver is not in the
    scheduler's (or a task's) process. ``spark_cluster``: the Connect server's master is a
    standalone master and worker started here (``spark.master`` through ``RFM__SPARK__MASTER``),
    otherwise ``spark.master`` from the config (``local[2]``).

    ``pipeline_env`` (``RFM__…`` variables) goes to every Airflow process, so the DAG and its
    tasks see it; the MLflow tracking URI is set to the server started here. ``postgres_dir``
    (default ``folder/postgres``) must stay traversable by the ``postgres`` user: not under
    pytest's temporary root, which pytest resets to mode 0700 at every session start.
    """
    folder.mkdir(parents=True, exist_ok=True)
    logs = folder / "services"
    mlflow_port = mlflow_port or free_port()
    mlflow_url = f"http://{HOST}:{mlflow_port}"
    with ExitStack() as stack:
        postgres = Postgres(postgres_dir or folder / "postgres").start()
        stack.callback(postgres.stop)
        mlflow = start_mlflow(postgres.url("mlflow"), folder / "mlflow-artifacts", mlflow_port, logs)
        stack.callback(mlflow.stop)
        pipeline_env = dict(pipeline_env or {})
        cluster = None
        if spark_cluster:
            cluster = start_spark_standalone(folder)
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
        stack.callback(stop_all, procs)
        yield Stack(postgres, config, mlflow_url, spark.url, [mlflow, spark.process, *procs], cluster)
