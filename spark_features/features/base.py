"""The feature-definition contract.

``FeatureView`` is what the store, the fetch repository and Feast need to know about a table:
name, version, entity keys, typed feature columns, TTL and the definition hash. ``BaseFeature`` is a
computed view: a ``FeatureView`` plus the pure Spark transform that produces it from its sources and
the lookback that transform needs. Views ingested from elsewhere are plain ``FeatureView`` objects.

Stored tables always use the canonical column names ``event_timestamp`` and (optionally)
``created_timestamp``; a definition's own timestamp column is renamed on the way in.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType, TimestampType

from spark_features.errors import DefinitionError

EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"
EVENT_DATE = "event_date"
NAME_RULE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
VERSION_RULE = re.compile(r"^\d+\.\d+\.\d+$")

Compute = Callable[..., DataFrame]


@dataclass(frozen=True)
class FeatureView:
    name: str
    version: str
    entity_keys: tuple[str, ...]
    features: StructType
    key_types: StructType
    ttl: timedelta | None = None
    has_created_timestamp: bool = False
    allow_nan: bool = False
    definition_hash: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        for name in (self.name, *self.entity_keys, *self.features.fieldNames()):
            if not NAME_RULE.match(name):
                raise DefinitionError(f"name {name!r} in view {self.name!r} must match {NAME_RULE.pattern}")
        if not VERSION_RULE.match(self.version):
            raise DefinitionError(f"view {self.name!r}: version {self.version!r} is not MAJOR.MINOR.PATCH")
        if not self.entity_keys:
            raise DefinitionError(f"view {self.name!r} declares no entity keys")
        reserved = {EVENT_TS, CREATED_TS, EVENT_DATE} & set(self.features.fieldNames() + list(self.entity_keys))
        if reserved:
            raise DefinitionError(f"view {self.name!r} uses reserved column name(s) {sorted(reserved)}")
        if self.key_types.fieldNames() != list(self.entity_keys):
            raise DefinitionError(f"view {self.name!r}: key_types {self.key_types.fieldNames()} != keys")
        if not self.definition_hash:
            object.__setattr__(self, "definition_hash", definition_hash(self, extra=""))

    @property
    def feast_name(self) -> str:
        """Collision-free, reversible Feast name: ``<view>_v<major>_<minor>_<patch>``."""
        return f"{self.name}_v{self.version.replace('.', '_')}"

    @property
    def stored_schema(self) -> StructType:
        """Columns of the stored table, in order (the ``event_date`` partition column last)."""
        time_fields = [StructField(EVENT_TS, TimestampType(), False)]
        if self.has_created_timestamp:
            time_fields.append(StructField(CREATED_TS, TimestampType(), True))
        return StructType(
            [StructField(f.name, f.dataType, False) for f in self.key_types.fields]
            + time_fields
            + [StructField(f.name, f.dataType, True) for f in self.features.fields]
        )


def parse_feast_name(feast_name: str) -> tuple[str, str]:
    """Inverse of ``FeatureView.feast_name``: ``returns_v1_0_0`` -> (``returns``, ``1.0.0``)."""
    match = re.fullmatch(r"(?P<view>[a-z][a-z0-9_]*)_v(?P<a>\d+)_(?P<b>\d+)_(?P<c>\d+)", feast_name)
    if not match:
        raise DefinitionError(f"{feast_name!r} is not a spark_features Feast view name")
    return match.group("view"), f"{match.group('a')}.{match.group('b')}.{match.group('c')}"


def definition_hash(view: FeatureView, extra: str) -> str:
    """Hash of everything that changes the stored values or their meaning."""
    payload = json.dumps(
        {
            "keys": list(view.entity_keys),
            "key_types": view.key_types.jsonValue(),
            "features": view.features.jsonValue(),
            "ttl": view.ttl.total_seconds() if view.ttl else None,
            "created": view.has_created_timestamp,
            "extra": extra,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _code_text(fn: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):  # defined in a REPL: fall back to the bytecode
        return fn.__code__.co_code.hex()


@dataclass(frozen=True)
class BaseFeature:
    """A computed feature view: ``compute(**sources, **params) -> DataFrame``.

    ``compute`` is pure: DataFrames in, one DataFrame out with the entity keys, ``timestamp_column``
    and the declared feature columns. ``lookback_bars`` is how many source bars before a range the
    transform needs so that computing a range alone equals computing everything at once.
    """

    view: FeatureView
    compute: Compute
    sources: tuple[str, ...] = ("bars",)
    timestamp_column: str = EVENT_TS
    lookback_bars: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        extra = _code_text(self.compute) + json.dumps(dict(self.params), sort_keys=True, default=str)
        hashed = definition_hash(self.view, extra)
        object.__setattr__(self, "view", _with_hash(self.view, hashed))

    @property
    def name(self) -> str:
        return self.view.name

    def lookback(self, bar: timedelta) -> timedelta:
        """Source history to read before a range, for bars of length ``bar`` (the coarsest in use):
        ``lookback_bars`` bars plus one more, since a bar is stamped at its close."""
        return bar * (self.lookback_bars + 1)

    def run(self, sources: Mapping[str, DataFrame]) -> DataFrame:
        """Apply ``compute`` and select the stored columns; types are checked by validation, not cast."""
        missing = [s for s in self.sources if s not in sources]
        if missing:
            raise DefinitionError(f"feature {self.name!r} needs source(s) {missing}")
        out = self.compute(**{s: sources[s] for s in self.sources}, **self.params)
        if self.timestamp_column != EVENT_TS:
            out = out.withColumnRenamed(self.timestamp_column, EVENT_TS)
        return out.select(*[F.col(name) for name in self.view.stored_schema.fieldNames()])


def _with_hash(view: FeatureView, hashed: str) -> FeatureView:
    fields_ = {k: getattr(view, k) for k in view.__dataclass_fields__}
    fields_["definition_hash"] = hashed
    return FeatureView(**fields_)
