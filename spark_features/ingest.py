"""Store features computed elsewhere: any DataFrame with keys, a timestamp and feature columns."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from pyspark.sql import DataFrame
from pyspark.sql.types import StructField, StructType

from spark_features.errors import FeatureNotFoundError, ValidationError
from spark_features.features.base import CREATED_TS, EVENT_TS, FeatureView
from spark_features.store import FeatureStoreSaveRepository, WriteResult
from spark_features.store.tables import load_view
from spark_features.validation import check_schema


def view_from_frame(
    df: DataFrame,
    name: str,
    keys: list[str],
    version: str = "1.0.0",
    ttl: timedelta | None = None,
    allow_nan: bool = False,
) -> FeatureView:
    """A view whose keys and typed features are taken from ``df`` (already in canonical names)."""
    schema = {f.name: f for f in df.schema.fields}
    missing = [k for k in keys if k not in schema]
    if missing:
        raise ValidationError(name, ",".join(missing), "missing join key column", 0, [])
    features = [f for f in df.schema.fields if f.name not in (*keys, EVENT_TS, CREATED_TS)]
    return FeatureView(
        name=name,
        version=version,
        entity_keys=tuple(keys),
        key_types=StructType([StructField(k, schema[k].dataType, False) for k in keys]),
        features=StructType([StructField(f.name, f.dataType, True) for f in features]),
        ttl=ttl,
        has_created_timestamp=CREATED_TS in schema,
        allow_nan=allow_nan,
    )


def canonical(df: DataFrame, timestamp_column: str, created_column: str | None) -> DataFrame:
    """Rename the user's timestamp columns to ``event_timestamp`` / ``created_timestamp``."""
    for source, target in ((timestamp_column, EVENT_TS), (created_column, CREATED_TS)):
        if source is None:
            continue
        if source not in df.columns:
            raise ValidationError("<input>", source, "missing timestamp column", 0, [])
        df = df.withColumnRenamed(source, target)
    return df


def ingest(
    repo: FeatureStoreSaveRepository,
    df: DataFrame,
    name: str,
    keys: list[str],
    timestamp_column: str,
    created_column: str | None = None,
    ttl: timedelta | None = None,
    version: str = "1.0.0",
    allow_nan: bool = False,
) -> WriteResult:
    """Validate ``df`` against the stored definition of ``name``/``version`` (or define it from
    ``df`` on first ingest) and replace the data's time range in its table."""
    frame = canonical(df, timestamp_column, created_column)
    proposed = view_from_frame(frame, name, keys, version, ttl, allow_nan)
    with contextlib.suppress(FeatureNotFoundError):
        # name the exact column and type change against what is stored, before the hash check
        check_schema(load_view(repo.spark, repo.root, name, version), frame.schema)
    return repo.write(proposed, frame)
