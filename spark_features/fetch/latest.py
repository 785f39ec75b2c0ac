"""The latest row per entity: the source of online values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_features.features.base import CREATED_TS, EVENT_TS
from spark_features.timeutil import lit_ts


def latest_per_entity(
    df: DataFrame,
    keys: Sequence[str],
    start: datetime | None = None,
    end: datetime | None = None,
    has_created_timestamp: bool = False,
) -> DataFrame:
    """Per entity, the row with the greatest (event_timestamp, created_timestamp) among rows with
    ``start < event_timestamp <= end`` (either bound optional). One aggregation: ``max_by`` over a
    struct, so no window sort and no self-join; stored nulls are kept as they are."""
    if start is not None:
        df = df.filter(F.col(EVENT_TS) > lit_ts(start))
    if end is not None:
        df = df.filter(F.col(EVENT_TS) <= lit_ts(end))
    order = [EVENT_TS, CREATED_TS] if has_created_timestamp else [EVENT_TS]
    values = [c for c in df.columns if c not in keys]
    row = F.struct(*[F.col(c) for c in values])
    picked = df.groupBy(*keys).agg(F.max_by(row, F.struct(*order)).alias("latest"))
    return picked.select(*keys, *[F.col(f"latest.{c}").alias(c) for c in values])
