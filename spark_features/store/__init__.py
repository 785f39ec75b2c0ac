"""Offline storage: the save repository, table layout and version info, source tables."""

from spark_features.store.save import FeatureStoreSaveRepository, WriteResult

__all__ = ["FeatureStoreSaveRepository", "WriteResult"]
