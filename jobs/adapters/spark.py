"""The one Spark session factory: Delta-enabled, configured from ``conf/``.

The Delta jars are resolved from Maven Central once (``python -m jobs.adapters.spark``, run by
``make setup``) into the project's ivy cache; later sessions load the cached jars directly
and need no network. Under ``spark-submit`` the JVM starts before this code runs, so pass
them on the command line: ``spark-submit --jars "$(python -m jobs.adapters.spark --jars)" jobs/__main__.py ingest --run-date D``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from jobs.config import Settings, load_settings

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


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


def get_spark(settings: Settings | None = None, app_name: str | None = None) -> SparkSession:
    """Return the process's SparkSession, creating it with Delta and the configured conf."""
    settings = settings or load_settings()
    logging.getLogger("py4j").setLevel(logging.WARNING)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers use this interpreter and its packages
    builder = (
        SparkSession.builder.master(settings.spark.master)
        .appName(app_name or settings.spark.app_name)
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
    )
    for key, value in settings.spark.conf.items():
        builder = builder.config(key, str(value).lower() if isinstance(value, bool) else str(value))
    jars = delta_jars(settings)
    if jars:
        builder = builder.config("spark.jars", ",".join(str(j) for j in jars))
    else:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder).config("spark.jars.ivy", str(settings.path("ivy_dir")))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def main(argv: list[str] | None = None) -> None:
    """Resolve the Delta jars into the project's ivy cache (``--jars``: print them for spark-submit)."""
    parser = argparse.ArgumentParser(description="Resolve the Delta jars, or print them for spark-submit --jars.")
    parser.add_argument("--jars", action="store_true", help="print the cached jars, comma-separated, and exit")
    settings = load_settings()
    if parser.parse_args(argv).jars:
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
