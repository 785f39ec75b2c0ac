"""FeastProvider: Feast objects built from our definitions, applied to the registry, one store per repo.

Every stored view version becomes a Feast ``FeatureView`` named ``<view>_v<major>_<minor>_<patch>``
(``FeatureView.feast_name``; ``parse_feast_name`` reverses it) over a ``SparkSource`` that reads the
offline table where the store wrote it (Delta or Parquet, local path or ``s3a://``). Fields keep their
Spark types; tags carry the version and the definition hash; every view also gets a ``FeatureService``
of the same name. ``feature_repo/`` builds the same objects for Feast's own CLI.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureStore, Field, RepoConfig, ValueType
from feast import FeatureView as FeastView
from feast.errors import FeatureServiceNotFoundException
from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat
from feast.types import Array, Bool, Bytes, FeastType, Float32, Float64, Int32, Int64, String, UnixTimestamp
from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    ByteType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    TimestampType,
)

from spark_features.config import Config
from spark_features.errors import ConfigError, DefinitionError, FeatureNotFoundError
from spark_features.features import ALL_FEATURES
from spark_features.features.base import CREATED_TS, EVENT_DATE, EVENT_TS, NAME_RULE, VERSION_RULE, FeatureView
from spark_features.store.tables import load_view, stored_versions, stored_view_names, table_uri

TAG_VIEW, TAG_VERSION, TAG_HASH = "spark_features.view", "spark_features.version", "spark_features.definition_hash"
ENTITY_KEY_SERIALIZATION = 3

_SCALAR_TYPES: dict[type[DataType], tuple[FeastType, ValueType]] = {
    StringType: (String, ValueType.STRING),
    DoubleType: (Float64, ValueType.DOUBLE),
    FloatType: (Float32, ValueType.FLOAT),
    LongType: (Int64, ValueType.INT64),
    IntegerType: (Int32, ValueType.INT32),
    ShortType: (Int32, ValueType.INT32),
    ByteType: (Int32, ValueType.INT32),
    BooleanType: (Bool, ValueType.BOOL),
    BinaryType: (Bytes, ValueType.BYTES),
    TimestampType: (UnixTimestamp, ValueType.UNIX_TIMESTAMP),
}
_KEY_TYPES = (StringType, LongType, IntegerType, ShortType, ByteType, BinaryType)


def feast_type(view: str, column: str, data_type: DataType) -> FeastType:
    """The Feast type of a Spark column; arrays of scalars become ``Array``; others are refused."""
    if isinstance(data_type, ArrayType) and type(data_type.elementType) in _SCALAR_TYPES:
        return Array(_SCALAR_TYPES[type(data_type.elementType)][0])  # type: ignore[arg-type]
    if type(data_type) in _SCALAR_TYPES:
        return _SCALAR_TYPES[type(data_type)][0]
    raise DefinitionError(f"view {view!r}: column {column!r} has type {data_type.simpleString()}, which Feast lacks")


def entities(view: FeatureView) -> list[Entity]:
    """One Feast entity per join key, named after the key and typed like it."""
    out = []
    for field in view.key_types.fields:
        if not isinstance(field.dataType, _KEY_TYPES):
            raise DefinitionError(
                f"view {view.name!r}: join key {field.name!r} has type {field.dataType.simpleString()}; "
                "Feast join keys must be string, integer or binary"
            )
        value_type = _SCALAR_TYPES[type(field.dataType)][1]
        out.append(Entity(name=field.name, join_keys=[field.name], value_type=value_type))
    return out


def spark_source(view: FeatureView, offline_root: str, table_format: str) -> SparkSource:
    """A Spark source over the view's offline table (the path the save repository writes)."""
    location = table_uri(offline_root, view.name, view.version)
    layout: dict[str, Any] = {"table_format": DeltaFormat()} if table_format == "delta" else {"file_format": "parquet"}
    return SparkSource(
        name=view.feast_name,
        path=location,
        timestamp_field=EVENT_TS,
        created_timestamp_column=CREATED_TS if view.has_created_timestamp else None,
        date_partition_column=EVENT_DATE,
        description=f"offline table of {view.name} v{view.version}",
        **layout,
    )


def feast_view(view: FeatureView, offline_root: str, table_format: str) -> FeastView:
    keys = [Field(name=f.name, dtype=feast_type(view.name, f.name, f.dataType)) for f in view.key_types.fields]
    features = [Field(name=f.name, dtype=feast_type(view.name, f.name, f.dataType)) for f in view.features.fields]
    return FeastView(
        name=view.feast_name,
        entities=entities(view),
        schema=keys + features,
        source=spark_source(view, offline_root, table_format),
        ttl=view.ttl or timedelta(0),
        online=True,
        description=view.description,
        tags={TAG_VIEW: view.name, TAG_VERSION: view.version, TAG_HASH: view.definition_hash},
    )


def feast_objects(views: list[FeatureView], offline_root: str, table_format: str) -> list[Any]:
    """Entities, feature views and one feature service per view, ready for ``FeatureStore.apply``."""
    by_key: dict[str, tuple[Entity, str]] = {}
    objects: list[Any] = []
    for view in _unique(views):
        for entity in entities(view):
            seen = by_key.get(entity.name)
            if seen is not None and seen[0].value_type != entity.value_type:
                raise DefinitionError(
                    f"join key {entity.name!r} is {entity.value_type.name} in view {view.name!r} "
                    f"but {seen[0].value_type.name} in view {seen[1]!r}"
                )
            by_key.setdefault(entity.name, (entity, view.name))
        fv = feast_view(view, offline_root, table_format)
        objects += [fv, FeatureService(name=view.feast_name, features=[fv], tags=dict(fv.tags))]
    return [entity for entity, _ in by_key.values()] + objects


def _unique(views: list[FeatureView]) -> list[FeatureView]:
    """One view per Feast name; two different definitions under one name are refused."""
    by_name: dict[str, FeatureView] = {}
    for view in views:
        other = by_name.setdefault(view.feast_name, view)
        if other.definition_hash != view.definition_hash:
            raise DefinitionError(
                f"view {view.name!r} v{view.version} has two definitions ({other.definition_hash} and "
                f"{view.definition_hash}); bump the version of the changed one"
            )
    return list(by_name.values())


def code_views() -> list[FeatureView]:
    """The built-in views, as the code defines them."""
    return [feature.view for feature in ALL_FEATURES]


def repo_views(spark: SparkSession, config: Config) -> list[FeatureView]:
    """Every view version stored under the offline root (built-in and ingested), each with the
    definition stored with its table. Views without data are not Feast's business yet."""
    root = config.offline_root
    views = [
        load_view(spark, root, name, version)
        for name in stored_view_names(spark, root)
        for version in stored_versions(spark, root, name)
    ]
    return _unique(views)


def local_code_views(offline_root: str) -> list[FeatureView] | None:
    """The code's definitions of the tables under a local offline root, found without Spark; None when
    some table is not a built-in view version (its definition must be read from the table) or the
    root is remote."""
    if "://" in offline_root:
        return None
    root = Path(offline_root)
    stored = {
        (view.name, version.name[1:])
        for view in (root.iterdir() if root.is_dir() else [])
        if view.is_dir() and NAME_RULE.match(view.name)
        for version in view.iterdir()
        if version.is_dir() and version.name.startswith("v") and VERSION_RULE.match(version.name[1:])
    }
    code = {(v.name, v.version): v for v in code_views()}
    if not stored <= set(code):
        return None
    return [code[key] for key in sorted(stored)]


@dataclass(frozen=True)
class RepoKey:
    """Everything that identifies one Feast repo configuration (resolved, hashable)."""

    project: str
    registry: str
    repo_path: str
    online_type: str
    online_target: str


def repo_key(config: Config) -> RepoKey:
    online = config.feast.online_store
    if online.type == "redis":
        if not online.connection_string:
            raise ConfigError("config key 'feast.online_store.connection_string' is required for the redis store")
        target = online.connection_string
    else:
        target = config.resolve(online.path)
    return RepoKey(
        project=config.feast.project,
        registry=config.resolve(config.feast.registry),
        repo_path=config.resolve(config.feast.repo_path),
        online_type=online.type,
        online_target=target,
    )


def repo_config_dict(key: RepoKey) -> dict[str, Any]:
    """Plain, picklable ``RepoConfig`` arguments (also shipped to the executors)."""
    online: dict[str, Any] = (
        {"type": "redis", "connection_string": key.online_target}
        if key.online_type == "redis"
        else {"type": "sqlite", "path": key.online_target}
    )
    return {
        "project": key.project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": key.registry, "cache_ttl_seconds": 60},
        # The engine always hands Feast its own session, so no spark_conf here (feature_store.yaml has one).
        "offline_store": {"type": "spark"},
        "batch_engine": {"type": "spark.engine"},
        "online_store": online,
        "entity_key_serialization_version": ENTITY_KEY_SERIALIZATION,
        "repo_path": key.repo_path,
    }


def feature_store(config: Config) -> FeatureStore:
    """The process-wide ``FeatureStore`` of this repo configuration (created on first use)."""
    return _store(repo_key(config))


@functools.cache
def _store(key: RepoKey) -> FeatureStore:
    os.makedirs(Path(key.registry).parent, exist_ok=True)
    kwargs = repo_config_dict(key)
    kwargs["repo_path"] = Path(kwargs["repo_path"])
    return FeatureStore(config=RepoConfig(**kwargs))


def refresh(store: FeatureStore) -> None:
    """Re-read the registry (another process, e.g. ``feast apply``, may have changed it)."""
    store.refresh_registry()  # type: ignore[no-untyped-call]


def apply(store: FeatureStore, views: list[FeatureView], config: Config) -> list[str]:
    """Register ``views`` (their entities, views and services) and create their online tables.
    Partial apply: views registered earlier and not named here stay. Returns the Feast view names."""
    objects = feast_objects(views, config.offline_root, config.offline.format)
    refresh(store)
    store.apply(objects)
    return [obj.name for obj in objects if isinstance(obj, FeastView)]


def registered_view(store: FeatureStore, view: FeatureView) -> FeastView:
    """The registered Feast view of ``view``, checked against its definition hash."""
    registered = store.get_feature_view(view.feast_name)
    stored_hash = registered.tags.get(TAG_HASH)
    if stored_hash != view.definition_hash:
        raise DefinitionError(
            f"Feast view {view.feast_name!r} is registered with definition {stored_hash} but the data's "
            f"definition is {view.definition_hash}; re-apply"
        )
    return registered


def service_resolver(store: FeatureStore) -> Callable[[str], list[str]]:
    """Feature-service name -> its ``VIEW:FEATURE`` references (for ``FeatureStoreFetchRepository``)."""

    def resolve(name: str) -> list[str]:
        try:
            service = store.get_feature_service(name)
        except FeatureServiceNotFoundException:
            raise FeatureNotFoundError(f"no feature service {name!r} in Feast project {store.project}") from None
        return [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]

    return resolve
