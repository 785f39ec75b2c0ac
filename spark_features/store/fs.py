"""Small file-system operations through Hadoop's FileSystem API, so local paths and ``s3a://``
behave the same and S3 credentials stay inside the JVM's credential providers."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession


def _path(spark: SparkSession, uri: str) -> tuple[Any, Any]:
    jvm: Any = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), path


def exists(spark: SparkSession, uri: str) -> bool:
    fs, path = _path(spark, uri)
    return bool(fs.exists(path))


def list_dirs(spark: SparkSession, uri: str) -> list[str]:
    """Names of the sub-directories of ``uri`` (empty when it does not exist)."""
    fs, path = _path(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(str(s.getPath().getName()) for s in fs.listStatus(path) if s.isDirectory())


def list_files(spark: SparkSession, uri: str) -> list[str]:
    """Names of the files directly under ``uri`` (empty when it does not exist)."""
    fs, path = _path(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(str(s.getPath().getName()) for s in fs.listStatus(path) if s.isFile())


def read_text(spark: SparkSession, uri: str) -> str | None:
    fs, path = _path(spark, uri)
    if not fs.exists(path):
        return None
    stream = fs.open(path)
    try:
        jvm: Any = spark.sparkContext._jvm
        return str(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
    finally:
        stream.close()


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write ``text`` to ``uri`` (a single PUT on S3, a temp-file rename on local disks)."""
    fs, path = _path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()


def delete(spark: SparkSession, uri: str) -> None:
    fs, path = _path(spark, uri)
    fs.delete(path, True)
