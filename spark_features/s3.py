"""Everything that is specific to S3: s3a settings, credentials, the bucket check.

Credentials come only from the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, read by
the AWS SDK's environment provider inside the JVM, and by boto3 here); they never pass through
config objects, Spark conf values, logs or table metadata.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlparse

from spark_features.config import S3Config
from spark_features.errors import ConfigError, EnvironmentSetupError

ENV_CREDENTIALS = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
MULTI_DRIVER_LOG_STORE = "io.delta.storage.S3DynamoDBLogStore"
LOG_STORE_KEYS = ("spark.delta.logStore.s3a.impl", "spark.delta.logStore.s3.impl", "spark.delta.logStore.class")


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3a://", "s3://"))


def s3a_spark_conf(s3: S3Config) -> dict[str, str]:
    """Spark settings for ``s3a://`` paths. Parquet output uses the classic committer (algorithm 1):
    S3 is strongly consistent, and the S3A committers cannot do dynamic partition overwrite."""
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.aws.credentials.provider": ENV_CREDENTIALS,
        "spark.hadoop.fs.s3a.path.style.access": str(s3.path_style_access).lower(),
        "spark.hadoop.fs.s3a.endpoint.region": s3.region,
        "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version": "1",
    }
    if s3.endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = s3.endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(s3.endpoint.startswith("https")).lower()
    return conf


def unsafe_delta_on_s3(offline_root: str, table_format: str, spark_conf: Mapping[str, str]) -> str | None:
    """Why Delta writes to ``offline_root`` are unsafe from more than one driver at a time, or None.

    Delta's default S3 log store makes a commit atomic only inside one driver (an in-JVM lock): two
    drivers committing the same table version can overwrite each other's commit without an error.
    Only a shared log store (DynamoDB) makes concurrent writers from several drivers safe.
    """
    if not is_s3(offline_root) or table_format != "delta":
        return None
    if MULTI_DRIVER_LOG_STORE in {spark_conf.get(key) for key in LOG_STORE_KEYS}:
        return None
    return (
        f"Delta tables under {offline_root} use the single-driver S3 log store: run at most one writing "
        f"driver per table at a time, or set spark.delta.logStore.s3a.impl={MULTI_DRIVER_LOG_STORE} "
        "(see RELIABILITY.md)"
    )


def bucket_of(uri: str) -> str:
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise ConfigError(f"S3 URI {uri!r} has no bucket")
    return parsed.netloc


def ensure_bucket(uri: str, s3: S3Config) -> None:
    """Fail early with a clear message when the bucket of ``uri`` is missing; create it on request."""
    import boto3
    from botocore.exceptions import ClientError, NoCredentialsError

    bucket = bucket_of(uri)
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name=s3.region)
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError as exc:
        raise EnvironmentSetupError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
        ) from exc
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status != 404:
            raise EnvironmentSetupError(f"S3 bucket {bucket!r} at {s3.endpoint or 'AWS'}: HTTP {status}") from exc
        if not s3.create_bucket:
            raise EnvironmentSetupError(
                f"S3 bucket {bucket!r} does not exist at {s3.endpoint or 'AWS'} (set s3.create_bucket: true)"
            ) from exc
        client.create_bucket(Bucket=bucket)
