"""FeatureStoreSaveRepository: validate feature DataFrames, then write them offline idempotently."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from spark_features.config import Config, S3Config
from spark_features.errors import WriteConflictError
from spark_features.features.base import FeatureView
from spark_features.s3 import ensure_bucket, is_s3
from spark_features.session import job_description
from spark_features.store import tables
from spark_features.timeutil import as_utc
from spark_features.validation import check_rows, check_schema


@dataclass(frozen=True)
class WriteResult:
    view: str
    version: str
    uri: str
    rows: int
    start: datetime | None
    end: datetime | None
    run_id: str

    @property
    def skipped(self) -> bool:
        """True when nothing was written (an empty input without ``delete_range``)."""
        return self.start is None


class FeatureStoreSaveRepository:
    """Writes feature views as partitioned tables under one offline root (local path or s3a URI)."""

    def __init__(
        self, spark: SparkSession, offline_root: str, table_format: str = "delta", s3: S3Config | None = None
    ) -> None:
        self.spark = spark
        self.root = offline_root
        self.format = table_format
        self.s3 = s3 or S3Config()
        self._bucket_checked = False

    @classmethod
    def from_config(cls, spark: SparkSession, config: Config) -> FeatureStoreSaveRepository:
        return cls(spark, config.offline_root, config.offline.format, config.s3)

    def uri(self, view: FeatureView) -> str:
        return tables.table_uri(self.root, view.name, view.version)

    def write(
        self,
        view: FeatureView,
        df: DataFrame,
        start: datetime | None = None,
        end: datetime | None = None,
        allow_empty: bool = False,
        delete_range: bool = False,
        run_id: str | None = None,
    ) -> WriteResult:
        """Validate ``df`` and replace the range ``[start, end)`` of the view's table with it.

        Without a range the range is the data's own ``[min, max]`` event time. Other ranges are never
        touched. An empty ``df`` writes nothing unless ``delete_range`` is set (which needs a range).
        Raises ``ValidationError`` / ``VersionConflictError`` before anything is written, and
        ``WriteConflictError`` when a concurrent writer committed to the same range first.
        """
        run_id = run_id or uuid.uuid4().hex
        uri = self.uri(view)
        if is_s3(uri) and not self._bucket_checked:
            ensure_bucket(uri, self.s3)
            self._bucket_checked = True
        check_schema(view, df.schema)
        tables.check_version(view, tables.read_info(self.spark, uri), uri)
        bounds = (as_utc(start), as_utc(end)) if start is not None and end is not None else None
        # computed once, by the validation pass, and read again by the write; ``persist`` returns the
        # same object, so whether to unpersist is remembered here
        level = df.storageLevel
        ours = not (level.useMemory or level.useDisk)  # a caller's own cache is used and left alone
        if ours:
            df.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            stats = check_rows(view, df, allow_empty=allow_empty or delete_range, bounds=bounds)
            if stats.rows == 0 and not (delete_range and bounds):
                return WriteResult(view.name, view.version, uri, 0, None, None, run_id)
            if bounds is None:
                assert stats.min_ts is not None and stats.max_ts is not None
                bounds = (stats.min_ts, stats.max_ts + timedelta(microseconds=1))
            run = {
                "run_id": run_id,
                "start": bounds[0].isoformat(),
                "end": bounds[1].isoformat(),
                "rows": stats.rows,
                "definition_hash": view.definition_hash,
                "code_version": tables.code_version(),
                "written_at": datetime.now(UTC).isoformat(),
            }
            with job_description(self.spark, f"spark_features: write {view.name} v{view.version}"):
                self._write(view, uri, df, bounds, run)
        finally:
            if ours:
                df.unpersist()
        return WriteResult(view.name, view.version, uri, stats.rows, bounds[0], bounds[1], run_id)

    def _write(
        self, view: FeatureView, uri: str, df: DataFrame, bounds: tuple[datetime, datetime], run: dict[str, object]
    ) -> None:
        if self.format == "parquet":
            tables.write_parquet(self.spark, view, uri, df, bounds[0], bounds[1], run)
            return
        try:
            tables.write_delta(self.spark, view, uri, df, tables.range_predicate(*bounds), run)
        except tables.COMMIT_CONFLICTS as exc:
            raise WriteConflictError(
                f"view {view.name!r} v{view.version}: another writer committed to {uri} in "
                f"[{bounds[0].isoformat()}, {bounds[1].isoformat()}) first; nothing was written, retry: {exc}"
            ) from exc

    def read(self, view: FeatureView, version_as_of: int | None = None) -> DataFrame:
        """The stored table of ``view`` (with Delta time travel when ``version_as_of`` is given)."""
        return tables.read_table(self.spark, self.uri(view), version_as_of)
