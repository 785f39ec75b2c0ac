"""Shared fixtures: one SparkSession, a real S3-compatible server (moto in server mode) and a real
redis-server, each on a free 127.0.0.1 port, started once per test session and stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from spark_features.config import Config, FeastConfig, OfflineConfig, S3Config, SparkConfig
from spark_features.session import build_session

S3_BUCKET = "spark-features-test"
# Canary credentials: the S3 server accepts any; tests search outputs for them.
S3_ACCESS_KEY = "AKIACANARYTESTKEY0001"
S3_SECRET_KEY = "canary-secret-Zq9xW4vT7uR2pL5mN8bK"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if callable(check) and check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    port = free_port()
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: urllib.request.urlopen(endpoint + "/moto-api/").status == 200, "moto S3 server")
        server = S3Server(endpoint, S3_BUCKET)
        server.client().create_bucket(Bucket=S3_BUCKET)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int

    @property
    def connection_string(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server); .ci/run installs it")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    try:
        wait_until(ping, "redis-server")
        yield RedisServer("127.0.0.1", port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def make_config(tmp: Path, s3: S3Server, **offline: str) -> Config:
    return Config(
        spark=SparkConfig(master="local[2]", shuffle_partitions=2, app_name="spark_features_tests"),
        offline=OfflineConfig(**offline) if offline else OfflineConfig(root=str(tmp / "offline")),
        s3=S3Config(endpoint=s3.endpoint, create_bucket=True),
        feast=FeastConfig(),
        project_root=tmp,
    )


@pytest.fixture(scope="session")
def test_config(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> Config:
    return make_config(tmp_path_factory.mktemp("project"), s3_server)


@pytest.fixture(scope="session")
def spark(test_config: Config) -> Iterator[SparkSession]:
    session = build_session(test_config)
    yield session
    session.stop()
