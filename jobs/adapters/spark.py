"""The one Spark session factory: Delta-enabled, configured from ``conf/``.

The Delta jars are resolved from Maven Central once (``python -m jobs.adapters.spark``, run by
``make setup``) into the project's ivy cache; later sessions load the cached jars directly
and need no network. Under ``spark-submit`` the JVM starts before this code runs, so pass
them on the command line: ``spark-submit --jars "$(python -m jobs.adapters.spark --jars)" jobs/__main__.py ingest --run-date D``.

With ``spark.remote`` set (``RFM__SPARK__REMOTE=sc://127.0.0.1:15002``) the session is a Spark
Connect client of a server that holds the driver: ``python -m jobs.adapters.spark --serve`` starts
one with the Delta jars, extensions and this conf (``make prod-local`` and compose do). A task then
connects in about 0.5 s instead of starting a JVM and a Delta session. The jobs only use what works
over Connect: DataFrames, Spark SQL (Delta ``MERGE``, ``OPTIMIZE``, ``VACUUM``), Spark ML; Delta
commit logs are read with delta-rs (``jobs.adapters.lake``).
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from jobs.config import Settings, load_settings

if TYPE_CHECKING:
    from pyspark.sql.connect.client.retries import RetryPolicy

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
# conf a Connect client may set on its own session; the rest (memory, UI, parallelism) is the server's
SESSION_CONF_PREFIXES = ("spark.sql.", "spark.databricks.delta.")


def delta_jars(settings: Settings) -> list[Path]:
    """The cached delta-spark and delta-storage jars, or [] when not resolved yet."""
    jars_dir = settings.path("ivy_dir") / "jars"
    version = settings.spark.delta_version
    wanted = [
        jars_dir / f"io.delta_delta-spark_{_spark_minor()}_{settings.spark.scala_binary}-{version}.jar",
        jars_dir / f"io.delta_delta-storage-{version}.jar",
    ]
    return wanted if all(p.is_file() for p in wanted) else []


def _spark_minor() -> str:
    import pyspark

    return ".".join(pyspark.__version__.split(".")[:2])


def conf_value(value: str | int | float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def loopback_driver() -> dict[str, str]:
    """The driver's RPC and block-manager listeners on ``SPARK_LOCAL_IP``, 127.0.0.1 unless set
    (compose sets the container's own name where executors on other hosts must reach the driver)."""
    address = os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")
    return {"spark.driver.bindAddress": address, "spark.driver.host": address}


def get_spark(settings: Settings | None = None, app_name: str | None = None) -> SparkSession:
    """Return the process's SparkSession: a Connect client when ``spark.remote`` is set, else a
    local driver created with Delta and the configured conf."""
    settings = settings or load_settings()
    if settings.spark.remote:
        return connect_session(settings)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers use this interpreter and its packages
    builder = (
        SparkSession.builder.master(settings.spark.master)
        .appName(app_name or settings.spark.app_name)
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    )
    for key, value in {**loopback_driver(), **settings.spark.conf}.items():
        builder = builder.config(key, conf_value(value))
    jars = delta_jars(settings)
    if jars:
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    else:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder).config("spark.jars.ivy", str(settings.path("ivy_dir")))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def connect_session(settings: Settings) -> SparkSession:
    """A Spark Connect client session of ``spark.remote``, with the session-level part of the conf
    and a bounded retry policy (``connect_retry_policy``) installed before its first call."""
    client_only = SparkSession.builder.remote(settings.spark.remote).getOrCreate()  # no call to the server yet
    client_only.client.set_retry_policies([connect_retry_policy(settings)])
    builder = SparkSession.builder.remote(settings.spark.remote)
    for key, value in settings.spark.conf.items():
        if key.startswith(SESSION_CONF_PREFIXES):
            builder = builder.config(key, conf_value(value))
    atexit.unregister(end_remote_session)  # registered once, however many sessions the process asks for
    atexit.register(end_remote_session)  # any entry point: ended before the interpreter shuts down
    return builder.getOrCreate()  # the same session, its conf now set through the bounded client


def connect_retry_policy(settings: Settings) -> RetryPolicy:
    """pyspark's default Connect retry policy with ``spark.connect_max_retries`` and
    ``spark.connect_max_backoff_seconds``. Its own defaults keep a client whose server is gone
    retrying for about 10 minutes, a task holding its slot all that time; with the conf's bound it
    fails within about 26 s and Airflow retries it."""
    from pyspark.sql.connect.client.retries import DefaultPolicy

    return DefaultPolicy(
        max_retries=settings.spark.connect_max_retries,
        max_backoff=round(settings.spark.connect_max_backoff_seconds * 1000),
    )


def from_pandas(spark: SparkSession, frame: pd.DataFrame, schema: str) -> DataFrame:
    """``spark.createDataFrame(frame, schema)``, with pandas' Arrow-backed columns handed over as
    NumPy objects. ``toPandas()`` of a large result gives pandas 3 strings backed by a multi-chunk
    Arrow array, which pyspark 4.1's Arrow path (always taken over Spark Connect) rejects:
    ``Cannot convert pyarrow.lib.ChunkedArray to pyarrow.lib.Array`` (SPARK-46776, fixed upstream by apache/spark#56157)."""
    arrow_backed = {
        name: object for name, dtype in frame.dtypes.items() if isinstance(dtype, (pd.StringDtype, pd.ArrowDtype))
    }
    return spark.createDataFrame(frame.astype(arrow_backed), schema=schema)


def end_remote_session() -> None:
    """Stop this process's Spark Connect session, if it has one. Its Spark ML models then go with
    the session on the server. Left to their finalizers at interpreter exit, they hang the process
    (pyspark 4.1.4: ``del_remote_cache`` starts a gRPC thread while the interpreter shuts down)."""
    from pyspark.sql.utils import is_remote

    if not is_remote():
        return
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    session = ConnectSession.getActiveSession()
    if session is not None:
        session.stop()


def pyspark_home() -> Path:
    """The pip pyspark's folder: its SPARK_HOME, with ``bin/spark-submit`` and the jars."""
    import pyspark

    return Path(pyspark.__file__).parent


def server_command(settings: Settings, host: str, port: int) -> list[str]:
    """``spark-submit`` of the Spark Connect server (in the pip pyspark) with the Delta jars and the conf."""
    jars = delta_jars(settings)
    if not jars:
        raise SystemExit("Delta jars not cached yet: run `make setup`")
    conf = {
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.connect.grpc.binding.address": host,
        "spark.connect.grpc.binding.port": str(port),
        "spark.log.level": "WARN",  # as get_spark's sessions; INFO logs every request
        **loopback_driver(),
        **{key: conf_value(value) for key, value in settings.spark.conf.items()},
    }
    command = [
        str(pyspark_home() / "bin" / "spark-submit"),
        "--master",
        settings.spark.master,
        "--name",
        f"{settings.spark.app_name}-connect",
        "--class",
        CONNECT_SERVER_CLASS,
        "--jars",
        ",".join(str(j) for j in jars),
    ]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    return command


def server_env() -> dict[str, str]:
    """The server's environment: this pyspark as SPARK_HOME, this interpreter for Python workers."""
    return {**os.environ, "SPARK_HOME": str(pyspark_home()), "PYSPARK_PYTHON": sys.executable}


def main(argv: list[str] | None = None) -> None:
    """Resolve the Delta jars into the project's ivy cache (``--jars``: print them for spark-submit;
    ``--serve``: run a Spark Connect server)."""
    parser = argparse.ArgumentParser(description="Resolve the Delta jars, print them, or serve Spark Connect.")
    parser.add_argument("--jars", action="store_true", help="print the cached jars, comma-separated, and exit")
    parser.add_argument("--serve", action="store_true", help="run a Spark Connect server (in the foreground)")
    parser.add_argument("--host", default="127.0.0.1", help="--serve: the address to bind (compose: 0.0.0.0)")
    parser.add_argument("--port", type=int, help="--serve: the port (default: spark.connect_port)")
    settings = load_settings()
    args = parser.parse_args(argv)
    if args.serve:
        command = server_command(settings, args.host, args.port or settings.spark.connect_port)
        os.execve(command[0], command, server_env())
    if args.jars:
        jars = delta_jars(settings)
        if not jars:
            raise SystemExit("Delta jars not cached yet: run `make setup`")
        print(",".join(str(j) for j in jars))
        return
    spark = get_spark(settings, app_name="resolve-delta-jars")
    spark.range(1).count()
    spark.stop()
    jars = delta_jars(settings)
    if not jars:
        raise SystemExit(f"Delta jars not found under {settings.path('ivy_dir')}/jars after resolution")
    print("Delta jars cached:", ", ".join(j.name for j in jars))


if __name__ == "__main__":
    main()
