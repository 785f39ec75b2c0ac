"""Online serving: materialize offline tables into Feast's online store, push fresh frames, read online.

``materialize`` takes, per entity, the latest stored row with ``start < event_timestamp <= end``
(``latest_per_entity``: one aggregation, no window sort) and writes it from the executors: a
``mapInArrow`` over the latest rows hands each Arrow batch to ``online_writer.write_batches``, which
encodes it column-wise into Feast's online storage format and writes it to Feast's SQLite table or Redis
hashes in one statement / pipeline per batch. Nothing is collected to the driver except one row of
counts per partition. Older values never replace newer ones (see ``online_writer``). Each finished
view's interval is recorded in Feast's registry, so ``feast materialize-incremental`` continues after it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from feast import FeatureService, FeatureStore
from feast.errors import EntityNotFoundException, FeatureViewNotFoundException
from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_features.config import Config
from spark_features.errors import ConfigError, DefinitionError, FeatureNotFoundError, ValidationError
from spark_features.feast_provider import (
    ENTITY_KEY_SERIALIZATION,
    TAG_HASH,
    apply,
    code_views,
    feature_store,
    refresh,
    registered_view,
    repo_views,
)
from spark_features.features.base import EVENT_DATE, FeatureView, parse_feast_name
from spark_features.fetch.latest import latest_per_entity
from spark_features.online_encoding import value_field
from spark_features.online_writer import WriteSpec, write_batches
from spark_features.store import tables
from spark_features.timeutil import as_utc
from spark_features.validation import check_rows, check_schema

COUNTS_DDL = "rows long, written long"


@dataclass(frozen=True)
class OnlineWrite:
    """One view's online write. ``entities``: latest rows offered to the store; ``written``: those that
    were at least as new as the stored row of their entity, and so written."""

    view: str
    feast_view: str
    entities: int
    written: int
    seconds: float
    start: datetime | None = None
    end: datetime | None = None


def resolve_views(spark: SparkSession, config: Config, names: Sequence[str] | None = None) -> list[FeatureView]:
    """Views by name: ``returns`` (the code's definition, else the highest stored version) or a Feast
    name ``returns_v1_0_0``. Without names: every stored view version."""
    root = config.offline_root
    if names is None:
        return repo_views(spark, config)
    code = {v.name: v for v in code_views()}
    out = []
    for name in names:
        try:
            view_name, version = parse_feast_name(name)
        except DefinitionError:
            view_name, version = name, None
        in_code = code.get(view_name)
        if in_code is not None and version in (None, in_code.version):
            out.append(in_code)
        else:
            out.append(tables.load_view(spark, root, view_name, version))
    return out


def ensure_applied(store: FeatureStore, views: Sequence[FeatureView], config: Config) -> None:
    """Apply the views that are missing from the registry or registered with another definition."""
    refresh(store)
    stale = []
    for view in views:
        try:
            registered = store.get_feature_view(view.feast_name)
        except FeatureViewNotFoundException:
            stale.append(view)
            continue
        if registered.tags.get(TAG_HASH) != view.definition_hash:
            stale.append(view)
    if stale:
        apply(store, stale, config)


def materialize(
    spark: SparkSession,
    config: Config,
    views: Sequence[FeatureView] | None,
    start: datetime,
    end: datetime,
) -> list[OnlineWrite]:
    """Write the latest row per entity in ``(start, end]`` of each view (all stored views when None)
    into the online store and record the interval in the registry."""
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        rule = f"end {end.isoformat()} is not after start {start.isoformat()}"
        raise ValidationError("<materialize>", "end", rule, 1, [])
    chosen = list(views) if views is not None else resolve_views(spark, config)
    store = feature_store(config)
    ensure_applied(store, chosen, config)
    results = []
    for view in chosen:
        began = time.monotonic()
        uri = _uri(config, view)
        info = tables.read_info(spark, uri)
        if info is None:
            raise FeatureNotFoundError(f"view {view.name!r} v{view.version}: no stored table at {uri} to materialize")
        tables.check_version(view, info, uri)
        stored = tables.read_table(spark, uri).filter(
            (F.col(EVENT_DATE) >= F.lit(start.date())) & (F.col(EVENT_DATE) <= F.lit(end.date()))
        )
        latest = latest_per_entity(
            stored.select(*view.stored_schema.fieldNames()), view.entity_keys, start, end, view.has_created_timestamp
        )
        entities, written = write_online(latest, store, view)
        refresh(store)
        store.registry.apply_materialization(registered_view(store, view), store.project, start, end)
        results.append(
            OnlineWrite(view.name, view.feast_name, entities, written, round(time.monotonic() - began, 2), start, end)
        )
    return results


def push(spark: SparkSession, config: Config, view: FeatureView, df: DataFrame) -> OnlineWrite:
    """Validate a fresh frame of ``view`` (the stored columns) and write its latest row per entity
    straight to the online store, with the same newer-wins guarantee; the offline table is untouched."""
    began = time.monotonic()
    check_schema(view, df.schema)
    frame = df.select(*view.stored_schema.fieldNames())
    check_rows(view, frame, allow_empty=True)
    store = feature_store(config)
    ensure_applied(store, [view], config)
    latest = latest_per_entity(frame, view.entity_keys, has_created_timestamp=view.has_created_timestamp)
    entities, written = write_online(latest, store, view)
    return OnlineWrite(view.name, view.feast_name, entities, written, round(time.monotonic() - began, 2))


def write_spec(store: FeatureStore, view: FeatureView) -> WriteSpec:
    """Where and how the executors write ``view``: Feast's table / key space, resolved here on the driver."""
    registered = registered_view(store, view)
    fields = {f.name: value_field(f.dtype.to_value_type().name) for f in registered.schema}
    repo = store.config
    if repo.entity_key_serialization_version != ENTITY_KEY_SERIALIZATION:
        raise ConfigError(
            f"entity_key_serialization_version {repo.entity_key_serialization_version} is not supported "
            f"(the online writer encodes version {ENTITY_KEY_SERIALIZATION})"
        )
    versioning = repo.registry.enable_online_feature_view_versioning
    features = tuple((f, fields[f]) for f in view.features.fieldNames())
    common: dict[str, Any] = {
        "project": repo.project,
        "keys": tuple((k, fields[k]) for k in view.entity_keys),
        "features": features,
        "has_created_timestamp": view.has_created_timestamp,
    }
    if isinstance(repo.online_store, SqliteOnlineStoreConfig):
        path = SqliteOnlineStore._get_db_path(repo)
        table = compute_table_id(repo.project, registered, versioning)
        return WriteSpec(store="sqlite", target=path, table=table, **common)
    if isinstance(repo.online_store, RedisOnlineStoreConfig):
        if repo.online_store.redis_type != "redis" or repo.online_store.key_ttl_seconds:
            raise ConfigError("the online writer supports a single Redis server without key TTL")
        name = compute_versioned_name(registered, versioning)
        hashes = tuple(_mmh3(f"{name}:{f}") for f, _ in features)
        target = repo.online_store.connection_string
        return WriteSpec(store="redis", target=target, table=name, redis_fields=hashes, **common)
    raise ConfigError(f"online store {type(repo.online_store).__name__} is not supported (sqlite, redis)")


def write_online(latest: DataFrame, store: FeatureStore, view: FeatureView) -> tuple[int, int]:
    """Write one row per entity from the executors; returns (rows offered, rows written)."""
    spec = write_spec(store, view)
    counts = (
        latest.mapInArrow(functools.partial(write_batches, spec=spec), COUNTS_DDL)
        .agg(F.coalesce(F.sum("rows"), F.lit(0)).alias("rows"), F.coalesce(F.sum("written"), F.lit(0)).alias("written"))
        .first()
    )
    assert counts is not None
    return int(counts["rows"]), int(counts["written"])


def feature_refs(store: FeatureStore, refs: Iterable[str]) -> list[str]:
    """``VIEW:FEATURE`` references with VIEW a Feast name or a plain view name (-> highest registered version)."""
    out = []
    for ref in refs:
        view, sep, feature = ref.partition(":")
        if not sep or not feature:
            raise FeatureNotFoundError(f"feature reference {ref!r} is not VIEW:FEATURE")
        out.append(f"{_feast_view_name(store, view)}:{feature}")
    return out


def _feast_view_name(store: FeatureStore, view: str) -> str:
    try:
        parse_feast_name(view)
        return view
    except DefinitionError:
        versions = [_parsed(fv.name) for fv in store.list_feature_views() if _parsed(fv.name)[0] == view]
        if not versions:
            raise FeatureNotFoundError(f"no registered Feast view for {view!r} in project {store.project}") from None
        name, version = max(versions, key=lambda nv: tuple(int(p) for p in nv[1].split(".")))
        return f"{name}_v{version.replace('.', '_')}"


def _parsed(feast_name: str) -> tuple[str, str]:
    try:
        return parse_feast_name(feast_name)
    except DefinitionError:
        return feast_name, ""


def default_refs(store: FeatureStore, join_keys: Iterable[str]) -> list[str]:
    """Every feature of the highest registered version of each view whose keys are all given."""
    keys = set(join_keys)
    views = [fv for fv in store.list_feature_views() if set(fv.join_keys) <= keys and _parsed(fv.name)[1]]
    names = sorted({_parsed(fv.name)[0] for fv in views})
    return feature_refs(store, [f"{name}:{f.name}" for name in names for f in _latest(views, name).features])


def _latest(views: list[Any], name: str) -> Any:
    mine = [fv for fv in views if _parsed(fv.name)[0] == name]
    return max(mine, key=lambda fv: tuple(int(p) for p in _parsed(fv.name)[1].split(".")))


def get_online(
    store: FeatureStore,
    entity_rows: Sequence[Mapping[str, Any]],
    features_or_service: Sequence[str] | str | FeatureService,
    full_feature_names: bool = False,
) -> dict[str, list[Any]]:
    """Feast's ``get_online_features``: a feature service (object or name) or ``VIEW:FEATURE`` refs;
    returns Feast's column dict (join keys, then features)."""
    features: list[str] | FeatureService
    if isinstance(features_or_service, FeatureService):
        features = features_or_service
    elif isinstance(features_or_service, str):
        features = store.get_feature_service(features_or_service)
    else:
        features = feature_refs(store, features_or_service)
    rows = [dict(row) for row in entity_rows]
    response = store.get_online_features(features=features, entity_rows=rows, full_feature_names=full_feature_names)
    return dict(response.to_dict())


def online_lookup(config: Config, entities: Sequence[str], features: Sequence[str] | None) -> list[dict[str, Any]]:
    """The ``online`` command: ``symbol=AAA,timeframe=1m`` entity texts -> one JSON-able record each."""
    store = feature_store(config)
    refresh(store)
    rows = [parse_entity(store, text) for text in entities]
    refs = feature_refs(store, features) if features else default_refs(store, rows[0] if rows else {})
    if not refs:
        raise FeatureNotFoundError(f"no registered feature view is keyed by {sorted(rows[0]) if rows else []}")
    columns = get_online(store, rows, refs, full_feature_names=True)
    return [{name: values[i] for name, values in columns.items()} for i in range(len(rows))]


def parse_entity(store: FeatureStore, text: str) -> dict[str, Any]:
    """``symbol=AAA,timeframe=1m`` -> typed join-key values (integers for integer entities)."""
    row: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise FeatureNotFoundError(f"entity {text!r}: {part!r} is not KEY=VALUE")
        name = key.strip()
        try:
            kind = store.get_entity(name).value_type.name
        except EntityNotFoundException:
            raise FeatureNotFoundError(f"entity {text!r}: no entity {name!r} in project {store.project}") from None
        row[name] = int(value) if kind in ("INT32", "INT64") else value
    return row


def _uri(config: Config, view: FeatureView) -> str:
    return tables.table_uri(config.offline_root, view.name, view.version)
