"""The Docker deployment (docker/): the compose file is valid, secrets are required, the lake is shared.

No Docker engine is needed: check-jsonschema (a dev dependency) validates docker/compose.yml
against the Compose Specification's JSON schema, and the tests below read the file with its
``${VAR}`` interpolation and YAML anchors resolved the way Compose does.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"

SERVICES = {
    "postgres",
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
ONE_OFF = {"airflow-init"}  # runs to completion: no healthcheck
LAKE_USERS = ["airflow-scheduler", "spark-master", "spark-worker", "spark-connect", "mlflow", "dashboard"]
LAKE_PATH = "/opt/rfm/data"

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


def test_lake_volume_is_mounted_at_the_same_path(rendered):
    assert "lake" in rendered["volumes"]
    services = rendered["services"]
    for name in LAKE_USERS:
        assert volume_targets(services[name], "lake") == [LAKE_PATH], name


def test_one_image_for_driver_executors_and_mlflow(rendered):
    services = rendered["services"]
    images = {services[name]["image"] for name in SERVICES - {"postgres"}}
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
    for name in ("airflow-apiserver", "airflow-dag-processor", "airflow-triggerer"):
        assert services[name]["environment"] == env, f"{name} must share the Airflow settings"
    init_env = services["airflow-init"]["environment"]
    assert {k: v for k, v in init_env.items() if k != "AIRFLOW_ADMIN_PASSWORD"} == env, "init shares them too"
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]
    assert f"--artifacts-destination={LAKE_PATH}/mlflow/artifacts" in services["mlflow"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")


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
            if re.search(r"PASSWORD|SECRET|FERNET", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", str(value)), f"{name}.{key} must be a required variable"
    # passwords inside connection URLs (environment, commands, anywhere)
    for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", raw):
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", password), f"literal password in URL: {password}"


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
    for var in ("JAVA_HOME=", "PYSPARK_PYTHON=", "AIRFLOW_HOME=", f"RFM__PATHS__DATA_DIR={LAKE_PATH}"):
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


LAKE_WRITERS = {"airflow-scheduler", "spark-connect", "spark-worker", "mlflow"}  # tasks, driver, executors, artifacts


def lake_read_only(service: dict) -> list[bool]:
    """For each mount of the lake volume: read-only or not (short or long syntax)."""
    modes = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str) and vol.split(":")[0] == "lake":
            modes.append(vol.split(":")[-1] == "ro")
        elif isinstance(vol, dict) and vol.get("source") == "lake":
            modes.append(bool(vol.get("read_only")))
    return modes


def test_only_the_steps_write_the_lake(rendered):
    """Issue 12, item 15: the dashboard and the Airflow services that run no step mount it read-only."""
    for name, service in rendered["services"].items():
        modes = lake_read_only(service)
        if name in LAKE_WRITERS:
            assert modes == [False], f"{name} needs write access to the lake"
        else:
            assert all(modes), f"{name} mounts the lake writable"
    assert lake_read_only(rendered["services"]["dashboard"]) == [True]


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
