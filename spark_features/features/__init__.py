"""Feature definitions and the explicit registry of the built-in ones."""

from __future__ import annotations

from spark_features.errors import DefinitionError
from spark_features.features.base import BaseFeature, FeatureView
from spark_features.features.technical import RANGE, RETURNS, TREND, VOLUME

ALL_FEATURES: tuple[BaseFeature, ...] = (RETURNS, TREND, RANGE, VOLUME)
DEFAULT_TIMEFRAMES: tuple[str, ...] = ("1m", "5m", "1h")


def get_features(names: list[str] | None = None) -> list[BaseFeature]:
    """The registered features called ``names`` (all of them when ``names`` is None)."""
    by_name = {f.name: f for f in ALL_FEATURES}
    if names is None:
        return list(ALL_FEATURES)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DefinitionError(f"unknown feature(s) {unknown}; registered: {sorted(by_name)}")
    return [by_name[n] for n in names]


__all__ = ["ALL_FEATURES", "DEFAULT_TIMEFRAMES", "BaseFeature", "FeatureView", "get_features"]
