"""Build the SparkSession from config. Only the edge (a job, a notebook, a test fixture) calls this.

The JVM packages are derived from what is installed: Delta's artifact for the installed
``delta-spark`` and PySpark line, and ``hadoop-aws`` for the Hadoop version PySpark bundles. Spark
resolves them from Maven Central through Ivy on first use and caches them (``~/.ivy2.5.2``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version as installed_version
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession

from spark_features.config import Config
from spark_features.errors import EnvironmentSetupError
from spark_features.s3 import s3a_spark_conf, unsafe_delta_on_s3

log = logging.getLogger(__name__)
MIN_JAVA = 17


def hadoop_version() -> str:
    """Hadoop version of the client jars shipped inside the installed PySpark."""
    jars = Path(pyspark.__file__).parent / "jars"
    for jar in sorted(jars.glob("hadoop-client-api-*.jar")):
        return jar.name.removeprefix("hadoop-client-api-").removesuffix(".jar")
    raise EnvironmentSetupError(f"no hadoop-client-api jar in {jars}; is PySpark installed completely?")


def jvm_packages() -> list[str]:
    """Maven coordinates of the Delta and hadoop-aws jars matching the installed PySpark."""
    spark_line = ".".join(pyspark.__version__.split(".")[:2])
    delta = installed_version("delta-spark")
    return [f"io.delta:delta-spark_{spark_line}_2.13:{delta}", f"org.apache.hadoop:hadoop-aws:{hadoop_version()}"]


def java_major_version() -> int:
    """Major version of the ``java`` that Spark will launch (``JAVA_HOME`` first, then ``PATH``)."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise EnvironmentSetupError(f"no Java found (JAVA_HOME={home!r}); install a JDK {MIN_JAVA}+")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise EnvironmentSetupError(f"cannot read the Java version from {java}: {out.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def spark_conf(config: Config) -> dict[str, str]:
    """Every Spark setting the engine needs, as ``spark-submit --conf`` pairs."""
    python = os.environ.get("PYSPARK_PYTHON", sys.executable)
    utc = "-Duser.timezone=UTC"
    conf = {
        "spark.app.name": config.spark.app_name,
        "spark.jars.packages": ",".join(jvm_packages()),
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": utc,
        "spark.executor.extraJavaOptions": utc,
        "spark.sql.shuffle.partitions": str(config.spark.shuffle_partitions),
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        # a view's Delta log lists at most a few thousand files: its state needs few tasks, and every
        # commit rebuilds it (a 3M-row write to a new table: 0.9 s of snapshot jobs with 8 partitions, 0.4 s with 2)
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        "spark.ui.enabled": str(config.spark.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": config.spark.log_level,
        **s3a_spark_conf(config.s3),
        **config.spark.extra,
    }
    if config.spark.master.startswith("local"):
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    if config.spark.ui_enabled:
        conf["spark.ui.host"] = "127.0.0.1"
    return conf


def build_session(config: Config) -> SparkSession:
    """Create (or, under ``spark-submit``, attach to) the session configured by ``config``."""
    unsafe = unsafe_delta_on_s3(config.offline_root, config.offline.format, config.spark.extra)
    if unsafe:
        log.warning(unsafe)
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Launched by spark-submit: master, packages and conf were passed on its command line.
        return SparkSession.builder.getOrCreate()
    if java_major_version() < MIN_JAVA:
        raise EnvironmentSetupError(f"Java {java_major_version()} found; Spark {pyspark.__version__} needs {MIN_JAVA}+")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(config.spark.master)
    for key, value in spark_conf(config).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


@contextmanager
def job_description(spark: SparkSession, text: str) -> Iterator[None]:
    """Label the Spark jobs started inside (Spark UI, event logs), so a profile shows which step
    of the engine each job belongs to."""
    context = spark.sparkContext
    previous = context.getLocalProperty("spark.job.description")
    context.setLocalProperty("spark.job.description", text)
    try:
        yield
    finally:
        context.setLocalProperty("spark.job.description", previous)  # type: ignore[arg-type]  # None unsets


def fetch_jars() -> None:
    """Resolve the JVM packages into Spark's Ivy cache by starting and stopping a tiny session."""
    from spark_features.config import SparkConfig

    session = build_session(Config(spark=SparkConfig(master="local[1]", shuffle_partitions=1)))
    session.range(1).count()
    session.stop()
    print("jars ready: " + ", ".join(jvm_packages()))


if __name__ == "__main__":
    if sys.argv[1:] != ["--fetch-jars"]:
        raise SystemExit("usage: python -m spark_features.session --fetch-jars")
    fetch_jars()
