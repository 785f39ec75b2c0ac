"""Randomized equivalence with Feast: the same Delta tables, read by Feast's own Spark offline store
(``get_historical_features``) and by ``training_set``, must give identical rows.

The data is drawn on a minute grid so that exact ties (entity time == feature time, equal event
times told apart by the created timestamp) and exact TTL boundaries occur often; stored nulls,
entity rows before any feature row, unknown keys, duplicate entity rows and a two-column key are
included. Symbols are letters and timeframes start with a digit because Feast identifies entity
rows by the *concatenated* key strings, which would collide for e.g. ("s1", "15m") / ("s11", "5m").
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from spark_features.features.base import FeatureView
from spark_features.fetch.repository import FeatureStoreFetchRepository
from spark_features.store import FeatureStoreSaveRepository

pytestmark = pytest.mark.slow

ORIGIN = datetime(2024, 3, 1, 22, tzinfo=UTC)  # the range crosses midnight: two event_date partitions
SYMBOLS = ["AB", "CD", "EF", "GH"]
TIMEFRAMES = ["1m", "5m"]
FEAST_CONF = "spark.sql.parser.quotedRegexColumnNames"  # Feast sets it on the session it is given


def _keys(*names: str) -> StructType:
    return StructType([StructField(n, StringType(), False) for n in names])


def _fields(**types: Any) -> StructType:
    return StructType([StructField(name, dtype, True) for name, dtype in types.items()])


VIEWS = (
    FeatureView("px", "1.0.0", ("symbol", "timeframe"), _fields(close=DoubleType(), volume=LongType()),
                _keys("symbol", "timeframe"), ttl=timedelta(minutes=20), has_created_timestamp=True),
    FeatureView("sentiment", "1.2.0", ("symbol",), _fields(score=DoubleType()), _keys("symbol")),
    FeatureView("flow", "2.0.0", ("symbol",), _fields(net=LongType(), side=StringType()), _keys("symbol"),
                ttl=timedelta(minutes=7), has_created_timestamp=True),
)  # fmt: skip


def minute(m: int) -> datetime:
    return ORIGIN + timedelta(minutes=m)


def _value(rng: random.Random, view: FeatureView, name: str) -> object:
    if rng.random() < 0.15:
        return None
    dtype = view.features[name].dataType
    if isinstance(dtype, DoubleType):
        return round(rng.uniform(-5, 5), 3)
    if isinstance(dtype, LongType):
        return rng.randint(-100, 100)
    return rng.choice(["buy", "sell", "flat"])


def random_rows(rng: random.Random, view: FeatureView) -> list[tuple[object, ...]]:
    rows = []
    for key in [(s, tf) for s in SYMBOLS[:3] for tf in TIMEFRAMES] if len(view.entity_keys) == 2 else SYMBOLS[:3]:
        key_values = key if isinstance(key, tuple) else (key,)
        for m in sorted(rng.sample(range(0, 120), rng.randint(3, 25))):
            # several versions of one event (ties), told apart by distinct created times
            versions = rng.sample(range(0, 15), rng.choice([1, 1, 1, 2, 3])) if view.has_created_timestamp else [0]
            for delay in versions:
                created = (minute(m + delay),) if view.has_created_timestamp else ()
                values = tuple(_value(rng, view, f) for f in view.features.fieldNames())
                rows.append((*key_values, minute(m), *created, *values))
    return rows


def random_entities(spark: SparkSession, rng: random.Random, n: int) -> DataFrame:
    rows = []
    for i in range(n):
        row = (rng.choice(SYMBOLS), rng.choice(TIMEFRAMES), minute(rng.randint(-10, 140)), i % 7)
        rows.extend([row] * rng.choice([1, 1, 1, 2]))
    schema = "symbol string, timeframe string, event_timestamp timestamp, label long"
    return spark.createDataFrame(rows, schema)


@pytest.fixture()
def restore_feast_conf(spark: SparkSession) -> Iterator[None]:
    before = spark.conf.get(FEAST_CONF)
    yield
    spark.conf.set(FEAST_CONF, before)


def feast_store(tmp_path: Path, root: str) -> tuple[Any, list[str]]:
    from feast import Entity, FeatureStore, Field, RepoConfig, ValueType
    from feast import FeatureView as FeastView
    from feast.infra.offline_stores.contrib.spark_offline_store.spark import SparkOfflineStoreConfig
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.table_format import DeltaFormat
    from feast.types import Float64, Int64, String

    config = RepoConfig(
        project="equivalence",
        registry=str(tmp_path / "registry.db"),
        provider="local",
        offline_store=SparkOfflineStoreConfig(),
        online_store=SqliteOnlineStoreConfig(path=str(tmp_path / "online.db")),
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    entities = {k: Entity(name=k, join_keys=[k], value_type=ValueType.STRING) for k in ("symbol", "timeframe")}
    feast_type = {DoubleType(): Float64, LongType(): Int64, StringType(): String}
    objects: list[Any] = list(entities.values())
    for view in VIEWS:
        source = SparkSource(
            name=f"{view.feast_name}_source",
            path=f"{root}/{view.name}/v{view.version}",
            table_format=DeltaFormat(),
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp" if view.has_created_timestamp else None,
            date_partition_column="event_date",
        )
        schema = [Field(name=f.name, dtype=feast_type[f.dataType]) for f in view.features.fields]
        ents = [entities[k] for k in view.entity_keys]
        objects.append(FeastView(name=view.feast_name, entities=ents, ttl=view.ttl, schema=schema, source=source))
    store.apply(objects)
    refs = [f"{v.feast_name}:{f}" for v in VIEWS for f in v.features.fieldNames()]
    return store, refs


@pytest.mark.parametrize("seed", [11, 12])
def test_training_set_equals_feast(spark: SparkSession, tmp_path: Path, restore_feast_conf: None, seed: int) -> None:
    rng = random.Random(seed)
    root = str(tmp_path / "offline")
    save = FeatureStoreSaveRepository(spark, root)
    for view in VIEWS:
        save.write(view, spark.createDataFrame(random_rows(rng, view), view.stored_schema))
    entities = random_entities(spark, rng, 300)
    store, refs = feast_store(tmp_path, root)
    ours_repo = FeatureStoreFetchRepository(spark, root, time_buckets=seed % 5 + 1)
    results = []
    for known_at in (False, True):
        feast = store.get_historical_features(
            entity_df=entities, features=refs, full_feature_names=True, filter_by_created_timestamp=known_at
        ).to_spark_df()
        ours = ours_repo.training_set(entities, refs, full_feature_names=True, known_at=known_at)
        assert feast.count() == ours.count() == entities.count()
        assert_df_equality(ours.select(*feast.columns), feast, ignore_row_order=True, ignore_nullable=True)
        assert ours.filter(ours["px_v1_0_0__close"].isNotNull()).count() > 50  # the data exercises the join
        results.append(ours)
    assert results[0].exceptAll(results[1]).count() > 0  # known-at mode changed some rows
    # short feature names, and the Feast name form of a reference
    plain = ours_repo.training_set(entities, ["px:close", "sentiment_v1_2_0:score"])
    refs = ["px_v1_0_0:close", "sentiment_v1_2_0:score"]
    feast_plain = store.get_historical_features(entity_df=entities, features=refs).to_spark_df()
    assert_df_equality(plain.select(*feast_plain.columns), feast_plain, ignore_row_order=True, ignore_nullable=True)
