"""Feast definitions for Feast's own CLI, generated from spark_features' definitions.

``feast apply`` imports this module and registers every Feast object found among its globals: one
entity per join key, and a feature view plus a feature service per view version stored under the
offline root (built-in and ingested views), each with the definition stored with its table, exactly
what the engine's ``FeastProvider`` builds. The offline root comes from ``$SPARK_FEATURES_CONF``
(default ``conf/local.yaml``), resolved against the project root, never the current directory.
Spark starts only when some stored table is not a built-in view (its definition lives in the table).
"""

from __future__ import annotations

from typing import Any

from spark_features.config import Config, load_config
from spark_features.feast_provider import feast_objects, local_code_views, repo_views
from spark_features.features.base import FeatureView


def _views(config: Config) -> list[FeatureView]:
    views = local_code_views(config.offline_root)
    if views is not None:
        return views
    from spark_features.session import build_session  # the edge: only when stored definitions are needed

    return repo_views(build_session(config), config)


def _objects(config: Config) -> dict[str, Any]:
    objects = feast_objects(_views(config), config.offline_root, config.offline.format)
    return {f"{type(obj).__name__.lower()}_{obj.name}": obj for obj in objects}


globals().update(_objects(load_config()))
