"""Exceptions raised by spark_features. Each says what was wrong and with which data."""

from __future__ import annotations


class SparkFeaturesError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(SparkFeaturesError):
    """A conf file key, type or required environment variable is wrong or missing."""


class EnvironmentSetupError(SparkFeaturesError):
    """The machine lacks something the engine needs (a JDK, a jar, a server)."""


class DefinitionError(SparkFeaturesError):
    """A feature definition is malformed (bad name, version, schema or keys)."""


class ValidationError(SparkFeaturesError):
    """A feature DataFrame breaks a data rule; nothing was written.

    ``column``, ``rule``, ``count`` and ``samples`` (up to 5 offending keys) are kept as attributes
    so callers and tests can inspect them without parsing the message.
    """

    def __init__(self, view: str, column: str, rule: str, count: int, samples: list[str]) -> None:
        self.view, self.column, self.rule, self.count, self.samples = view, column, rule, count, samples
        shown = "; ".join(samples) if samples else "-"
        super().__init__(f"view {view!r}: column {column!r} breaks rule {rule!r} in {count} row(s); samples: {shown}")


class VersionConflictError(SparkFeaturesError):
    """Data from a changed definition was offered under an unchanged version."""


class WriteConflictError(SparkFeaturesError):
    """A concurrent writer changed the same range; the write was not applied and may be retried."""


class FeatureNotFoundError(SparkFeaturesError):
    """A requested view, version or feature does not exist in the store."""
