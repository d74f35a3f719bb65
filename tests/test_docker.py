"""The Docker deployment (docker/): the compose file is valid, secrets are required, every location is
on the S3 store's bucket and no service mounts another's files.

No Docker engine is needed: check-jsonschema (a dev dependency) validates docker/compose.yml
against the Compose Specification's JSON schema, and the tests below read the file with its
``${VAR}`` interpolation and YAML anchors resolved the way Compose does.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from packaging.requirements import Requirement

if TYPE_CHECKING:
    from jobs.config import Settings

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"

SERVICES = {
    "postgres",
    "s3",
    "s3-init",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "spark-master",
    "spark-worker",
    "spark-connect",
    "mlflow",
    "dashboard",
}
ONE_OFF = {"airflow-init", "s3-init"}  # run to completion: no healthcheck
IMAGE_DATA_DIR = "/opt/rfm/data"  # the image's own data folder (a container run without a bucket)
BUCKET = "lake"
ENDPOINT = "http://s3:8333"
# The services that run the project's code against the bucket, by the keys they hold: the ones that
# run steps (tasks, driver, executors) or store artifacts write; the others only read.
WRITERS = {"airflow-scheduler", "spark-connect", "spark-worker", "mlflow", "s3-init"}
READERS = {"airflow-init", "airflow-apiserver", "airflow-dag-processor", "airflow-triggerer", "dashboard"}
# The one volume two services may mount: Airflow's own task logs (compose.yml x-airflow-logs).
SHARED_VOLUMES = {"airflow-logs": {"airflow-scheduler", "airflow-triggerer", "airflow-apiserver"}}

# Every `${VAR:?message}` in the compose file is a value that must be supplied.
REQUIRED_VARS = sorted(set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text())))
TEST_VALUES = {name: f"test-{name.lower().replace('_', '-')}" for name in REQUIRED_VARS}
VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def interpolate(node, values: dict[str, str]):
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` substitution; ``$$`` is a literal ``$``."""
    if isinstance(node, dict):
        return {key: interpolate(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, values) for value in node]
    if not isinstance(node, str):
        return node

    def substitute(match: re.Match) -> str:
        name, kind, arg = match.groups()
        if values.get(name):
            return values[name]
        if kind == "?":
            raise KeyError(f"required variable {name} is missing: {arg}")
        return arg if kind == "-" else ""

    return VARIABLE.sub(substitute, node.replace("$$", "\0")).replace("\0", "$")


def render(values: dict[str, str]) -> dict:
    """The compose file as Compose sees it: anchors and merge keys resolved, variables substituted,
    each service's ``env_file`` read under its ``environment`` (which wins, as in Compose)."""
    from dotenv import dotenv_values

    config = interpolate(yaml.safe_load(COMPOSE.read_text()), values)
    for service in config["services"].values():
        files = service.get("env_file", [])
        from_files = {
            k: v for f in ([files] if isinstance(files, str) else files) for k, v in dotenv_values(DOCKER / f).items()
        }
        if from_files:
            service["environment"] = {**from_files, **service.get("environment", {})}
    return config


@pytest.fixture(scope="module")
def rendered() -> dict:
    return render(TEST_VALUES)


def test_compose_file_follows_the_compose_specification():
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    raw = yaml.safe_load(COMPOSE.read_text())
    assert raw["name"] == "rfm-segmentation" and "version" not in raw, "Compose v2: a project name, no version"


def test_schema_validation_catches_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yml"
    broken.write_text(COMPOSE.read_text().replace("condition: service_healthy", "condition: when_ready", 1))
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("check-jsonschema")),
            "--builtin-schema",
            "vendor.compose-spec",
            str(broken),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "when_ready" in done.stdout, done.stdout


def test_every_long_running_service_has_a_healthcheck(rendered):
    for name, service in rendered["services"].items():
        if name not in ONE_OFF:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_no_log_server_or_health_server_beyond_the_container(rendered):
    services = rendered["services"]
    for name in ("airflow-scheduler", "airflow-triggerer"):
        assert "--skip-serve-logs" in services[name]["command"], name
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"


def volume_targets(service: dict, source: str) -> list[str]:
    """Container paths where named volume ``source`` is mounted (short or long syntax)."""
    targets = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            if parts[0] == source:
                targets.append(parts[1])
        elif vol.get("source") == source:
            targets.append(vol["target"])
    return targets


def test_required_variables_are_documented():
    assert "POSTGRES_PASSWORD" in REQUIRED_VARS
    example = ENV_EXAMPLE.read_text()
    for name in REQUIRED_VARS:
        # documented, with an empty value: no real secret is committed
        assert re.search(rf"^{name}=$", example, re.M), f"{name} missing (or not empty) in {ENV_EXAMPLE}"


def test_config_renders_all_services(rendered):
    assert SERVICES <= set(rendered["services"])


def test_config_fails_clearly_without_postgres_password():
    values = {k: v for k, v in TEST_VALUES.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(KeyError, match="set POSTGRES_PASSWORD in docker/.env"):
        render(values)


def mounts_by_source(config: dict) -> dict[str, set[str]]:
    """Which services mount each named volume or host path (short or long syntax)."""
    found: dict[str, set[str]] = {}
    for name, service in config["services"].items():
        for vol in service.get("volumes", []):
            if isinstance(vol, str):
                source = vol.split(":")[0] if ":" in vol else None  # no colon: an anonymous volume
            else:
                source = vol.get("source")
            if source:
                found.setdefault(source, set()).add(name)
    return found


def shared_mounts(config: dict) -> dict[str, set[str]]:
    """The volumes and host paths that more than one service mounts."""
    return {source: names for source, names in mounts_by_source(config).items() if len(names) > 1}


def test_no_service_mounts_another_services_files(rendered):
    """Issue 29: the bucket replaced the shared `lake` volume; only Airflow's logs are shared."""
    assert "lake" not in rendered["volumes"], "the lake volume is back"
    assert "lake" not in mounts_by_source(rendered), f"mounted by {mounts_by_source(rendered).get('lake')}"
    shared = shared_mounts(rendered)
    for source, names in shared.items():
        assert SHARED_VOLUMES.get(source) == names, f"{source} is mounted by {sorted(names)}"
    assert shared == SHARED_VOLUMES
    for name, service in rendered["services"].items():
        for vol in service.get("volumes", []):
            target = vol.split(":")[1] if isinstance(vol, str) else vol["target"]
            assert not target.startswith(IMAGE_DATA_DIR), f"{name} mounts {vol!r} over the data folder"


def test_a_second_mount_of_a_volume_is_caught(rendered):
    broken = copy.deepcopy(rendered)
    broken["services"]["dashboard"]["volumes"] = [{"type": "volume", "source": "s3-data", "target": "/data"}]
    broken["services"]["mlflow"]["volumes"].append("pgdata:/var/lib/postgresql/data:ro")
    added = {"s3-data": {"s3", "dashboard"}, "pgdata": {"postgres", "mlflow"}}
    assert shared_mounts(broken) == {**shared_mounts(rendered), **added}


def test_the_spark_services_mount_nothing(rendered):
    """The worker reaches the bucket over s3a only, so it can run on another host."""
    for name in ("spark-master", "spark-worker", "spark-connect"):
        assert not rendered["services"][name].get("volumes"), f"{name} mounts {rendered['services'][name]['volumes']}"


def test_an_s3_store_with_its_own_volume_and_a_healthcheck(rendered):
    from jobs.orchestration.object_store import SEAWEEDFS_VERSION

    services = rendered["services"]
    s3 = services["s3"]
    assert s3["image"] == f"chrislusf/seaweedfs:{SEAWEEDFS_VERSION}", "the S3 server version the tests run"
    assert s3["command"][0] == "server" and {"-filer", "-s3", "-s3.port=8333"} <= set(s3["command"])
    assert "http://127.0.0.1:8333/healthz" in s3["healthcheck"]["test"], s3["healthcheck"]
    assert volume_targets(s3, "s3-data") == ["/data"] and "s3-data" in rendered["volumes"]
    assert "ports" not in s3, "the store is reached inside the compose networks only"
    assert set(s3["networks"]) == {"default", "spark"}, "the Spark driver and executors reach it too"
    init = services["s3-init"]
    assert init["depends_on"]["s3"]["condition"] == "service_healthy"
    assert "create_bucket(" in "\n".join(init["command"]), "the one-off creates the bucket"


def s3_identities(config: dict) -> dict[str, dict]:
    """The S3 store's identities by name: the JSON config it is started with (-s3.config)."""
    s3 = config["services"]["s3"]
    (ref,) = s3["configs"]
    assert f"-s3.config={ref['target']}" in s3["command"], "the store does not read its identities"
    return {i["name"]: i for i in json.loads(config["configs"][ref["source"]]["content"])["identities"]}


def keys(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return {name: env[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if name in env}


def test_writers_and_readers_hold_their_own_keys(rendered):
    """Issue 12, item 15 on the bucket: only the services that run steps (and MLflow's artifact store)
    write; the dashboard and the Airflow services that run no step hold keys that only read."""
    identities = s3_identities(rendered)
    assert set(identities) == {"rfm", "reader"}
    writer = {"AWS_ACCESS_KEY_ID": TEST_VALUES["S3_ACCESS_KEY"], "AWS_SECRET_ACCESS_KEY": TEST_VALUES["S3_SECRET_KEY"]}
    reader = {
        "AWS_ACCESS_KEY_ID": TEST_VALUES["S3_READER_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": TEST_VALUES["S3_READER_SECRET_KEY"],
    }
    for name, expected in (("rfm", writer), ("reader", reader)):
        (credential,) = identities[name]["credentials"]
        assert credential == {
            "accessKey": expected["AWS_ACCESS_KEY_ID"],
            "secretKey": expected["AWS_SECRET_ACCESS_KEY"],
        }
    assert sorted(identities["reader"]["actions"]) == [f"List:{BUCKET}", f"Read:{BUCKET}"], "the reader only reads"
    services = rendered["services"]
    for name in sorted(WRITERS):
        assert keys(services[name]) == writer, f"{name} must hold the writer keys"
    for name in sorted(READERS):
        assert keys(services[name]) == reader, f"{name} must hold the reader keys only"
    for name in sorted(set(services) - WRITERS - READERS):
        assert not keys(services[name]), f"{name} runs no pipeline code: no keys"


def settings_of(service: dict, monkeypatch) -> Settings:
    """The pipeline's configuration as a service's processes load it (its RFM__* and AWS_* environment)."""
    from jobs.config import Settings

    for name in [n for n in os.environ if n.startswith(("RFM__", "AWS_"))]:
        monkeypatch.delenv(name)
    for name, value in service["environment"].items():
        if name.startswith(("RFM__", "AWS_")):
            monkeypatch.setenv(name, str(value))
    return Settings()


def test_every_pipeline_service_finds_every_location_on_the_bucket(rendered, monkeypatch):
    """Read by the real configuration loader: every bucket-capable location under s3://lake/rfm, the
    endpoint of the `s3` service, the local-only folders local (jobs.config refuses them on a bucket)."""
    from jobs import storage

    for name in sorted(WRITERS | READERS):
        settings = settings_of(rendered["services"][name], monkeypatch)
        for location in storage.BUCKET_CAPABLE:
            found = str(settings.path(location))
            assert found.startswith(f"s3://{BUCKET}/rfm"), f"{name}: paths.{location} is {found}, not on the bucket"
        assert str(settings.local_path("airflow_home")) == "/opt/airflow", name
        assert not storage.is_s3(settings.local_path("mlflow_dir")), name
        assert settings.storage.endpoint_url == ENDPOINT, f"{name} does not reach the s3 service"
        assert storage.spark_conf(settings)["spark.hadoop.fs.s3a.endpoint"] == ENDPOINT, name


def test_the_executors_read_the_keys_from_the_workers_environment(rendered, monkeypatch):
    """s3a's credentials provider reads the environment of each JVM: the worker's, which its
    executors inherit, holds the writer keys (nothing is mounted from the driver's host)."""
    from jobs import storage

    worker = rendered["services"]["spark-worker"]
    conf = storage.spark_conf(settings_of(worker, monkeypatch))
    assert conf["spark.hadoop.fs.s3a.aws.credentials.provider"].endswith("EnvironmentVariableCredentialsProvider")
    assert keys(worker) == keys(rendered["services"]["spark-connect"]), "driver and executors write as one identity"


def test_mlflow_stores_artifacts_on_the_bucket(rendered, monkeypatch):
    from jobs import storage

    services = rendered["services"]
    mlflow = services["mlflow"]
    destinations = [arg.split("=", 1)[1] for arg in mlflow["command"] if arg.startswith("--artifacts-destination=")]
    assert destinations == [f"s3://{BUCKET}/rfm/mlflow"], destinations
    for name in sorted(WRITERS | READERS):
        env = services[name]["environment"]
        assert env["RFM__MLFLOW__ARTIFACTS_DESTINATION"] == destinations[0], f"{name} names another destination"
    # what jobs.storage.mlflow_env gives an MLflow server of this configuration (boto3's endpoint, keys, region)
    expected = storage.mlflow_env(settings_of(mlflow, monkeypatch))
    assert expected and {k: mlflow["environment"].get(k) for k in expected} == expected


def test_one_image_for_driver_executors_and_mlflow(rendered):
    services = rendered["services"]
    images = {services[name]["image"] for name in SERVICES - {"postgres", "s3"}}
    assert len(images) == 1, images
    build = services["airflow-scheduler"]["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == REPO and build["dockerfile"] == "docker/Dockerfile"


def test_published_ports_bind_loopback_only(rendered):
    published = {}
    for name, service in rendered["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, str):
                host_ip, host_port, _ = port.split(":") if port.count(":") == 2 else ("", "", "")
            else:
                host_ip, host_port = port.get("host_ip", ""), str(port.get("published", ""))
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond loopback"
            published[name] = host_port
    assert published == {"airflow-apiserver": "8080", "mlflow": "5000", "dashboard": "8050"}


def test_airflow_and_pipeline_settings(rendered):
    services = rendered["services"]
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/rfm/dags"
    assert env["RFM__SPARK__REMOTE"] == "sc://spark-connect:15002", "the tasks are Spark Connect clients"
    assert "RFM__SPARK__MASTER" not in env, "no driver in the Airflow containers"
    assert env["RFM__MLFLOW__TRACKING_URI"] == "http://mlflow:5000"
    connect = services["spark-connect"]
    assert connect["environment"]["RFM__SPARK__MASTER"] == "spark://spark-master:7077"
    assert (
        connect["command"][:4] == ["python", "-m", "jobs.adapters.spark", "--serve"] and "15002" in connect["command"]
    )
    assert services["airflow-scheduler"]["depends_on"]["spark-connect"]["condition"] == "service_healthy"
    shared = without_keys(env)  # the keys differ: test_writers_and_readers_hold_their_own_keys
    for name in ("airflow-apiserver", "airflow-dag-processor", "airflow-triggerer"):
        assert without_keys(services[name]["environment"]) == shared, f"{name} must share the Airflow settings"
    init_env = without_keys(services["airflow-init"]["environment"])
    assert {k: v for k, v in init_env.items() if k != "AIRFLOW_ADMIN_PASSWORD"} == shared, "init shares them too"
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")


def without_keys(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def test_compose_and_the_local_launcher_read_one_table_of_airflow_settings(rendered, tmp_path):
    from jobs.orchestration.services import SHARED_AIRFLOW_ENV, AirflowConfig, shared_airflow_env

    shared = shared_airflow_env()
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor" and len(shared) >= 5, shared
    airflow_services = [name for name in rendered["services"] if name.startswith("airflow-")]
    for name in airflow_services:
        service = rendered["services"][name]
        assert (DOCKER / service["env_file"][0]).resolve() == SHARED_AIRFLOW_ENV, f"{name} reads another env_file"
        assert {k: service["environment"][k] for k in shared} == shared, f"{name} overrides a shared setting"
    raw_env = yaml.safe_load(COMPOSE.read_text())["x-airflow-env"]
    assert not set(raw_env) & set(shared), "compose.yml repeats a setting of conf/airflow.env"
    local = AirflowConfig(home=tmp_path / "airflow", db_url="sqlite://", port=8080, admin_password="x").env()
    assert {k: local[k] for k in shared} == shared, "the local launcher does not read conf/airflow.env"


def test_start_order(rendered):
    services = rendered["services"]
    assert services["airflow-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "mlflow"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    # the bucket exists before anything reads or writes it
    assert services["s3-init"]["depends_on"]["s3"]["condition"] == "service_healthy"
    for name in ("airflow-scheduler", "spark-connect", "mlflow", "dashboard"):
        assert services[name]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully", name


def test_no_literal_secret_in_compose_file():
    raw = COMPOSE.read_text()
    for value in TEST_VALUES.values():
        assert value not in raw
    parsed = yaml.safe_load(raw)  # anchors and merge keys resolved
    for name, service in parsed["services"].items():
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        for key, value in env.items():
            if re.search(r"PASSWORD|SECRET|FERNET|ACCESS_KEY", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}.{key} must be a required variable"
    # passwords inside connection URLs (environment, commands, anywhere)
    for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", raw):
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", password), f"literal password in URL: {password}"
    # the S3 store's keys in its identities config
    found = re.findall(r'"(?:accessKey|secretKey)": "([^"]*)"', raw)
    assert len(found) == 4, found
    for key in found:
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", key), f"literal S3 key: {key}"


def dockerfile_text() -> str:
    """The Dockerfile without comments, with ARG defaults substituted."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = "\n".join(lines)
    for name, default in re.findall(r"^ARG (\w+)=(\S+)", text, re.M):
        text = text.replace(f"${{{name}}}", default).replace(f"${name}", default)
    return text


def test_dockerfile_installs_the_pyproject_pins():
    text = dockerfile_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm\b", text, re.M)
    assert "openjdk-17-jre-headless" in text
    assert re.search(r"^USER (?!root\b)\S+", text, re.M), "must run as a non-root user"
    # the project itself, and its dependencies read from pyproject.toml (not a second list)
    assert re.search(r"^COPY\b.*\bpyproject\.toml\b", text, re.M)
    assert re.search(r"pip install\b[^\n]*\s\.(\s|$)", text, re.M), "must `pip install .`"
    assert "['project']['dependencies']" in text or re.search(r"pip install (?!--no-deps)[^\n]*\s\.\s", text)
    pins = {}
    for dep in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(dep)
        pins[req.name.lower()] = str(req.specifier)
    for name in ("pyspark", "delta-spark", "apache-airflow"):
        assert pins[name].startswith("=="), f"pyproject.toml must pin {name}"
        # a version written into the Dockerfile must agree with pyproject.toml
        for found in re.findall(rf"(?<![\w-]){re.escape(name)}==([\w.]+)", text, re.I):
            assert f"=={found}" == pins[name], f"Dockerfile pins {name}=={found}, pyproject {pins[name]}"
    # the Postgres drivers come with pyproject.toml's dependencies, at the lock's versions
    assert "apache-airflow[postgres]" in {str(Requirement(d)).split("==")[0] for d in dependencies()}
    assert {"apache-airflow-providers-postgres", "psycopg2-binary", "asyncpg"} <= set(locked_versions())
    # Delta jars resolved at build time into the ivy dir the containers use
    assert "RFM__PATHS__IVY_DIR=/opt/rfm/.ivy" in text
    assert re.search(r"^RUN python -m jobs\.adapters\.spark\b", text, re.M)
    # and hadoop-aws with the AWS SDK: the driver's sessions on s3a:// locations start offline
    assert re.search(r"^RUN [^\n]*python -m jobs\.adapters\.spark --s3\b", text, re.M), "no S3 jars in the image"
    for var in ("JAVA_HOME=", "PYSPARK_PYTHON=", "AIRFLOW_HOME=", f"RFM__PATHS__DATA_DIR={IMAGE_DATA_DIR}"):
        assert var in text


LOCK = REPO / "constraints.txt"
IMAGE_REQUIREMENTS = DOCKER / "requirements-image.txt"


def dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def locked_versions() -> dict[str, str]:
    """name -> version of every line of the lock (each must be an exact pin)."""
    from packaging.utils import canonicalize_name

    found = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"not an exact pin in the lock: {line}"
            found[canonicalize_name(req.name)] = spec.version
    return found


def test_setup_and_the_image_install_from_the_same_lock():
    """make setup and docker/Dockerfile install with the one constraints file; it is in the build context."""
    makefile = (REPO / "Makefile").read_text()
    lock_name = re.search(r"^LOCK := (\S+)$", makefile, re.M).group(1)
    assert (REPO / lock_name) == LOCK and LOCK.is_file()
    assert re.search(r"pip install [^\n]*-c \$\(LOCK\) -e '\.\[dev\]'", makefile), "make setup installs from the lock"
    assert re.search(r"^\$\(INSTALLED\): [^\n]*\$\(LOCK\)", makefile, re.M), "a new lock re-installs"
    assert re.search(
        r"uv pip compile pyproject.toml --extra dev docker/requirements-image.txt [^\n]*-o \$\(LOCK\)",
        makefile.replace("\\\n", " "),
    )
    text = dockerfile_text()
    assert re.search(rf"^COPY [^\n]*\b{lock_name}\b", text, re.M)
    installs = re.findall(r"pip install (?!--no-deps)[^\n]*", text.replace("\\\n", " "))
    assert installs and all(f"-c {lock_name}" in line for line in installs), installs
    assert f"!{lock_name}" in DOCKERIGNORE.read_text() and "!docker/requirements-image.txt" in DOCKERIGNORE.read_text()


def test_every_pin_agrees_with_the_lock():
    """The lock holds each direct pin (pyproject.toml, its dev extra, the image's extras) at that version:
    apache-airflow above all, whose version also names the official image and its constraints."""
    from packaging.utils import canonicalize_name

    locked = locked_versions()
    image = [ln for ln in IMAGE_REQUIREMENTS.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for dep in dependencies() + image:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in locked, f"{name} is not in the lock: run make lock"
        assert req.specifier.contains(locked[name]), f"{name}: pinned {req.specifier}, locked {locked[name]}"
    assert locked["apache-airflow"] == locked["apache-airflow-core"] == "3.3.2"


def test_build_context_excludes_local_state():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if "*" in patterns:  # allow-list style: nothing but the re-included sources
        included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
        assert included == {
            "pyproject.toml",
            "constraints.txt",
            "docker/requirements-image.txt",
            "jobs",
            "app",
            "conf",
            "expectations",
            "dags",
            "plugins",
        }
    else:
        for path in (".venv", ".ivy", "data", ".git"):
            assert any(p.strip("/") == path for p in patterns), path


def test_the_dashboard_is_served_by_gunicorn_behind_basic_auth(rendered):
    dashboard = rendered["services"]["dashboard"]
    command = " ".join(dashboard["command"]) if isinstance(dashboard["command"], list) else dashboard["command"]
    assert "gunicorn" in command and "app.wsgi:server" in command
    assert dashboard["environment"]["RFM__DASHBOARD__AUTH_PASSWORD"] == TEST_VALUES["DASHBOARD_PASSWORD"]


def test_the_env_file_with_secrets_is_git_ignored():
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO)
    assert ignored.returncode == 0, "docker/.env (secrets) is not git-ignored"
    assert ENV_EXAMPLE.is_file()


def test_real_auth_with_persisted_users_and_secrets_from_env(rendered):
    services = rendered["services"]
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("fab_auth_manager.FabAuthManager")
    assert "SIMPLE_AUTH_MANAGER" not in str(rendered)
    init = services["airflow-init"]
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"] == TEST_VALUES["AIRFLOW_ADMIN_PASSWORD"]
    script = " ".join(init["command"])
    assert "airflow users create --role Admin" in script and '"${AIRFLOW_ADMIN_PASSWORD}"' in script
    assert "grep -qw admin ||" in script, "the admin is created once, then persisted"
    mlflow = services["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    assert mlflow["environment"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == env["MLFLOW_TRACKING_PASSWORD"]
    ini = (DOCKER / "mlflow-auth.ini").read_text()
    assert not re.search(r"^\s*admin_password\s*=", ini, re.M), "the admin password comes from .env only"
    assert "database_uri = sqlite:////opt/mlflow-auth/" in ini
    assert any(str(v).startswith("mlflow-auth:/opt/mlflow-auth") for v in mlflow["volumes"])
    assert re.search(r"^apache-airflow-providers-fab==", IMAGE_REQUIREMENTS.read_text(), re.M)
    assert "-r requirements-image.txt" in DOCKERFILE.read_text()


def test_plugins_ship_in_the_image_and_are_configured(rendered):
    assert re.search(r"^COPY\b.*\bplugins/ plugins/", DOCKERFILE.read_text(), re.M)
    assert (
        rendered["services"]["airflow-apiserver"]["environment"]["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/rfm/plugins"
    )


def test_lineage_settings_are_the_ones_the_pipeline_derives_from_conf(rendered):
    """Compose cannot run jobs.orchestration.lineage.airflow_env, so it spells out the same settings:
    off by default; with LINEAGE_URL and LINEAGE_DISABLED=false, exactly what airflow_env gives."""
    from jobs.orchestration.lineage import airflow_env
    from tests.conftest import settings_for

    def lineage(env: dict) -> dict:
        return {k: str(v) for k, v in env.items() if k.startswith("AIRFLOW__OPENLINEAGE__")}

    scheduler = rendered["services"]["airflow-scheduler"]["environment"]
    assert lineage(scheduler)["AIRFLOW__OPENLINEAGE__DISABLED"] == "true"
    url = "http://marquez:5000"
    enabled = render({**TEST_VALUES, "LINEAGE_URL": url, "LINEAGE_DISABLED": "False"})
    expected = airflow_env(settings_for(Path("/lake"), lineage={"transport": url}))
    assert lineage(enabled["services"]["airflow-scheduler"]["environment"]) == expected
