"""The foundation works against real components: Delta locally, Delta over s3a on the S3 server,
and Redis."""

from __future__ import annotations

import socket
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_features.session import job_description, jvm_packages, spark_conf
from tests.conftest import RedisServer, S3Server


def test_session_is_utc_with_delta(spark: SparkSession) -> None:
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions", "")


def test_jar_coordinates_match_installed_pyspark(test_config) -> None:  # type: ignore[no-untyped-def]
    delta, aws = jvm_packages()
    line = ".".join(pyspark.__version__.split(".")[:2])
    assert delta.startswith(f"io.delta:delta-spark_{line}_2.13:")
    assert aws.startswith("org.apache.hadoop:hadoop-aws:3.")
    conf = spark_conf(test_config)
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert "SECRET" not in " ".join(conf.values()).upper()


def test_delta_round_trip_with_time_travel(spark: SparkSession, tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    spark.range(5).write.format("delta").save(path)
    spark.range(10, 13).write.format("delta").mode("overwrite").save(path)
    assert sorted(r.id for r in spark.read.format("delta").load(path).collect()) == [10, 11, 12]
    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert sorted(r.id for r in v0.collect()) == [0, 1, 2, 3, 4]


def test_delta_round_trip_on_s3(spark: SparkSession, s3_server: S3Server) -> None:
    uri = f"s3a://{s3_server.bucket}/foundation/t"
    spark.range(100).withColumn("x", F.col("id") * 2).write.format("delta").save(uri)
    spark.range(3).withColumn("x", F.lit(0).cast("long")).write.format("delta").mode("append").save(uri)
    assert spark.read.format("delta").load(uri).count() == 103
    assert spark.read.format("delta").option("versionAsOf", 0).load(uri).count() == 100
    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="foundation/t/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert "foundation/t/_delta_log/00000000000000000000.json" in keys
    assert any(k.endswith(".parquet") for k in keys)


def test_redis_round_trip(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    client.set("spark_features:probe", b"\x00value")
    assert client.get("spark_features:probe") == b"\x00value"
    with socket.create_connection((redis_server.host, redis_server.port)) as sock:
        assert sock.getpeername()[0] == "127.0.0.1"


def test_job_description_nests_and_restores(spark: SparkSession) -> None:
    def label() -> str | None:
        return spark.sparkContext.getLocalProperty("spark.job.description")

    outer = label()
    with job_description(spark, "spark_features: write"):
        assert label() == "spark_features: write"
        with job_description(spark, "spark_features: duplicate check"):
            assert label() == "spark_features: duplicate check"
        assert label() == "spark_features: write"
    assert label() == outer
