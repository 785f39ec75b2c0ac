"""feature_repo/ as a real Feast repo: its yaml matches conf/, Feast's CLI and Feast's offline store
work on the tables the engine wrote, and the `online` command reads without Spark."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from feast.repo_config import load_repo_config
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

from spark_features.cli import main
from spark_features.config import PROJECT_ROOT, Config, OnlineStoreConfig, load_config
from spark_features.feast_provider import apply, feature_store, repo_key
from spark_features.fetch.repository import FeatureStoreFetchRepository
from spark_features.session import spark_conf
from spark_features.store import FeatureStoreSaveRepository
from tests.feast_data import FEATURES, T0, VIEW, feast_config, frame, latest, sample_rows
from tests.test_feast_online import read_online

REPO = PROJECT_ROOT / "feature_repo"
FEAST = str(Path(sys.executable).parent / "feast")
SPARK_KEYS = (
    "spark.jars.packages",
    "spark.sql.extensions",
    "spark.sql.catalog.spark_catalog",
    "spark.sql.session.timeZone",
)


def test_feature_store_yaml_matches_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    local = load_config(PROJECT_ROOT / "conf" / "local.yaml")
    sqlite = load_repo_config(REPO, REPO / "feature_store.yaml")
    ours = repo_key(local)
    assert (sqlite.project, sqlite.online_store.type) == (ours.project, "sqlite")
    assert str((REPO / sqlite.registry.path).resolve()) == ours.registry
    assert str((REPO / sqlite.online_store.path).resolve()) == ours.online_target
    expected = spark_conf(local)
    assert {k: sqlite.offline_store.spark_conf[k] for k in SPARK_KEYS} == {k: expected[k] for k in SPARK_KEYS}

    monkeypatch.setenv("REDIS_CONNECTION_STRING", "127.0.0.1:6390")
    monkeypatch.setenv("SPARK_MASTER", "local[1]")
    cluster = repo_key(load_config(PROJECT_ROOT / "conf" / "cluster.yaml"))
    redis = load_repo_config(REPO, REPO / "feature_store.redis.yaml")
    assert (redis.online_store.type, redis.online_store.connection_string) == ("redis", cluster.online_target)
    assert str((REPO / redis.registry.path).resolve()) == cluster.registry


@pytest.fixture
def feast_session(spark: SparkSession) -> Iterator[SparkSession]:
    """Feast's Spark offline store changes session settings; put them back for the other tests."""
    keys = ("spark.sql.parser.quotedRegexColumnNames", "spark.sql.execution.arrow.pyspark.enabled")
    saved = {k: spark.conf.get(k, None) for k in keys}
    yield spark
    for key, value in saved.items():
        if value is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, value)


def _entity_rows() -> list[tuple[int, str, str, datetime]]:
    tenth = T0 + timedelta(minutes=30, microseconds=70)  # row i=10 of entity (A, 1m)
    ttl = VIEW.ttl
    assert ttl is not None
    special = [
        ("A", "1m", T0 - timedelta(minutes=1)),  # before any row
        ("A", "1m", tenth),  # exactly at a row
        ("A", "1m", tenth + timedelta(minutes=1)),
        ("A", "1m", tenth + timedelta(minutes=1)),  # duplicate entity row
        ("A", "1m", tenth + ttl),  # TTL boundary: still valid
        ("A", "1m", tenth + ttl + timedelta(microseconds=1)),  # just expired
        ("Z", "1m", T0 + timedelta(hours=1)),  # no data at all
    ]
    spread = [(s, tf, T0 + timedelta(minutes=17 * k)) for k in range(12) for s, tf in (("B", "5m"), ("E", "1m"))]
    return [(i, s, tf, ts) for i, (s, tf, ts) in enumerate(special + spread)]


def _as_of(rows: list[Any], symbol: str, timeframe: str, at: datetime) -> dict[str, Any]:
    assert VIEW.ttl is not None
    candidates = [r for r in rows if (r[0], r[1]) == (symbol, timeframe) and at - VIEW.ttl <= r[2] <= at]
    best = max(candidates, key=lambda r: r[2], default=None)
    return {f: (None if best is None else best[3 + i]) for i, f in enumerate(FEATURES)}


def _clean(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


@pytest.mark.slow
def test_feast_historical_features_equal_training_set(feast_session: SparkSession, tmp_path: Path) -> None:
    spark = feast_session
    config = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "online.db")))
    rows = sample_rows()
    FeatureStoreSaveRepository.from_config(spark, config).write(VIEW, frame(spark, rows))
    entities = _entity_rows()
    reference = {i: _as_of(rows, s, tf, ts) for i, s, tf, ts in entities}

    schema = StructType(
        [
            StructField("row_id", LongType(), False),
            StructField("symbol", StringType(), False),
            StructField("timeframe", StringType(), False),
            StructField("event_timestamp", TimestampType(), False),
        ]
    )
    repo = FeatureStoreFetchRepository.from_config(spark, config)
    ours = repo.training_set(spark.createDataFrame(entities, schema), [f"quotes:{f}" for f in FEATURES]).collect()
    assert sorted(r["row_id"] for r in ours) == [e[0] for e in entities]
    assert {r["row_id"]: {f: r[f] for f in FEATURES} for r in ours} == reference

    store = feature_store(config)
    apply(store, [VIEW], config)
    entity_df = pd.DataFrame(entities, columns=["row_id", "symbol", "timeframe", "event_timestamp"])
    entity_df["event_timestamp"] = pd.to_datetime(entity_df["event_timestamp"], utc=True)
    theirs = store.get_historical_features(entity_df, [f"{VIEW.feast_name}:{f}" for f in FEATURES]).to_df()
    assert len(theirs) == len(entities)
    by_row = {int(r["row_id"]): {f: _clean(r[f]) for f in FEATURES} for _, r in theirs.iterrows()}
    assert by_row == reference


def _feast(repo: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run([FEAST, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"feast {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _temp_repo(tmp_path: Path, config: Config) -> tuple[Path, dict[str, str]]:
    """A copy of feature_repo/ whose yaml points at this test's registry and online store, and a conf
    file (for definitions.py and the `online` command) with this test's offline root."""
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    shutil.copy(REPO / "definitions.py", repo)
    store_yaml = yaml.safe_load((REPO / "feature_store.yaml").read_text())
    store_yaml["registry"]["path"] = config.resolve(config.feast.registry)
    store_yaml["online_store"]["path"] = config.resolve(config.feast.online_store.path)
    store_yaml["offline_store"]["spark_conf"]["spark.master"] = "local[1]"
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(store_yaml))
    conf = tmp_path / "conf" / "local.yaml"
    conf.parent.mkdir()
    conf.write_text(
        yaml.safe_dump(
            {
                "spark": {"master": "local[1]", "shuffle_partitions": 2},
                "offline": {"root": config.offline_root},
                "feast": {
                    "project": config.feast.project,
                    "registry": config.resolve(config.feast.registry),
                    "online_store": {"type": "sqlite", "path": config.resolve(config.feast.online_store.path)},
                },
            }
        )
    )
    return repo, {**os.environ, "SPARK_FEATURES_CONF": str(conf)}


@pytest.mark.slow
def test_feast_cli_on_engine_data_and_online_command_without_spark(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite = OnlineStoreConfig(type="sqlite", path=str(tmp_path / "online.db"))
    config = feast_config(tmp_path, sqlite, project="spark_features")  # the project feature_store.yaml names
    rows = sample_rows()
    FeatureStoreSaveRepository.from_config(spark, config).write(VIEW, frame(spark, rows))
    repo, env = _temp_repo(tmp_path, config)

    assert "Created feature view quotes_v1_0_0" in _feast(repo, env, "apply")
    listed = _feast(repo, env, "feature-views", "list")
    assert "quotes_v1_0_0" in listed and "returns_v1_0_0" not in listed  # only views with data

    first, last = T0 + timedelta(minutes=60), T0 + timedelta(minutes=150)
    # our `materialize` command (in this process: its session is the test session), then Feast's CLI continues
    capsys.readouterr()
    command = ["materialize", "--start", T0.isoformat(), "--end", first.isoformat(), "--views", "quotes"]
    assert main(["--conf", env["SPARK_FEATURES_CONF"], *command]) == 0
    assert [(w["feast_view"], w["entities"]) for w in json.loads(capsys.readouterr().out)] == [(VIEW.feast_name, 10)]
    _feast(repo, env, "materialize-incremental", "--views", VIEW.feast_name, last.replace(tzinfo=None).isoformat())
    store = feature_store(config)
    store.refresh_registry()  # type: ignore[no-untyped-call]
    assert store.get_feature_view(VIEW.feast_name).materialization_intervals[-1] == (first, last)
    assert read_online(config) == latest(rows, T0, last)

    script = (
        "import json, sys; from pyspark import SparkContext; from spark_features.cli import main; "
        "code = main(sys.argv[1:]); assert SparkContext._active_spark_context is None, 'Spark started'; "
        "sys.exit(code)"
    )
    args = ["online", "--entity", "symbol=A,timeframe=1m", "--entity", "symbol=Z,timeframe=1m"]
    done = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(done.stdout)
    expected = latest(rows, T0, last)[("A", "1m")]
    assert records[0] == {"symbol": "A", "timeframe": "1m", **{f"quotes_v1_0_0__{f}": v for f, v in expected.items()}}
    assert all(records[1][f"quotes_v1_0_0__{f}"] is None for f in FEATURES)
