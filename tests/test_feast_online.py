"""Materialize, push and online reads against real SQLite and Redis online stores through Feast."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from spark_features.config import Config, OnlineStoreConfig
from spark_features.errors import ValidationError
from spark_features.feast_provider import feature_store, repo_key
from spark_features.online import get_online, materialize, push
from spark_features.store import FeatureStoreSaveRepository
from tests.feast_data import (
    ENTITIES,
    FEATURES,
    T0,
    VIEW,
    feast_config,
    frame,
    latest,
    online_by_entity,
    online_store_config,
    sample_rows,
)


@pytest.fixture(params=["sqlite", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    return online_store_config(request, tmp_path)


def read_online(config: Config) -> dict[tuple[str, str], dict[str, Any]]:
    rows = [{"symbol": s, "timeframe": tf} for s, tf in ENTITIES]
    return online_by_entity(get_online(feature_store(config), rows, [f"quotes:{f}" for f in FEATURES]))


def store_rows(spark: SparkSession, config: Config, rows: list[Any]) -> None:
    FeatureStoreSaveRepository.from_config(spark, config).write(VIEW, frame(spark, rows))


@pytest.mark.slow
def test_materialize_equals_offline_latest_and_older_window_changes_nothing(
    spark: SparkSession, config: Config
) -> None:
    rows = sample_rows()
    store_rows(spark, config, rows)
    recent = (T0 + timedelta(minutes=60), T0 + timedelta(minutes=150))
    written = materialize(spark, config, [VIEW], *recent)
    expected = latest(rows, *recent)
    assert written[0].entities == len(expected) == 10
    assert read_online(config) == expected
    store = feature_store(config)
    intervals = store.get_feature_view(VIEW.feast_name).materialization_intervals
    assert intervals[-1] == recent

    older = (T0, T0 + timedelta(minutes=60))
    again = materialize(spark, config, [VIEW], *older)
    assert again[0].entities == 10  # every entity had an older row to offer
    assert read_online(config) == expected


@pytest.mark.slow
def test_push_never_replaces_newer_online_value(spark: SparkSession, config: Config) -> None:
    at = T0 + timedelta(minutes=10)

    def push_one(offset: timedelta, tag: str) -> None:
        push(spark, config, VIEW, frame(spark, [("A", "1m", at + offset, 1.0, 1, tag, True)]))

    def tag_online() -> str:
        return str(read_online(config)[("A", "1m")]["tag"])

    push_one(timedelta(0), "current")
    push_one(timedelta(milliseconds=-1), "older by 1 ms")
    push_one(timedelta(minutes=-5), "older by 5 min")
    assert tag_online() == "current"
    push_one(timedelta(microseconds=1), "newer by 1 us")
    assert tag_online() == "newer by 1 us"


@pytest.mark.slow
def test_sqlite_refuses_older_rows_from_feasts_own_writer(spark: SparkSession, tmp_path: Path) -> None:
    config = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "online.db")))
    push(spark, config, VIEW, frame(spark, [("B", "5m", T0 + timedelta(hours=1), 2.0, 2, "engine", False)]))
    older = pd.DataFrame(
        {
            "symbol": ["B"],
            "timeframe": ["5m"],
            "event_timestamp": [pd.Timestamp(T0)],
            "x": [9.0],
            "n": [9],
            "tag": ["feast, older"],
            "flag": [True],
        }
    )
    feature_store(config).write_to_online_store(VIEW.feast_name, older)
    assert read_online(config)[("B", "5m")]["tag"] == "engine"


@pytest.mark.slow
def test_push_rejects_bad_rows_before_writing(spark: SparkSession, tmp_path: Path) -> None:
    config = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "online.db")))
    bad = frame(spark, [("C", "1m", T0, float("nan"), 1, "nan", True)])
    with pytest.raises(ValidationError, match="NaN"):
        push(spark, config, VIEW, bad)
    assert not (tmp_path / "online.db").exists()


def test_feature_store_is_cached_per_repo_configuration(tmp_path: Path) -> None:
    sqlite = OnlineStoreConfig(type="sqlite", path="online.db")  # relative: resolved against tmp_path
    first = feast_config(tmp_path, sqlite, project="same")
    same = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path=str(tmp_path / "online.db")), project="same")
    other = feast_config(tmp_path, OnlineStoreConfig(type="sqlite", path="other.db"), project="same")
    assert repo_key(first) == repo_key(same)
    assert id(feature_store(first)) == id(feature_store(same))
    assert feature_store(other) is not feature_store(first)
    assert feature_store(first).config.online_store.path == str(tmp_path / "online.db")
