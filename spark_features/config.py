"""Typed configuration loaded from ``conf/*.yaml``.

One frozen object per run. Values of the form ``${VAR}`` (required) or ``${VAR:-default}`` are read
from the environment; secrets are never stored here (S3 credentials are read by the s3a credential
provider from the environment, not passed through config).

Relative paths resolve against the project root: the parent of the ``conf/`` directory that holds
the conf file (or the conf file's own directory when it is not inside a ``conf/`` directory), never
against the process's current directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from spark_features.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF = PROJECT_ROOT / "conf" / "local.yaml"
CONF_ENV = "SPARK_FEATURES_CONF"
OFFLINE_ROOT_ENV = "SPARK_FEATURES_OFFLINE_ROOT"

_ENV_REF = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "spark_features"
    shuffle_partitions: int = 8
    ui_enabled: bool = False
    log_level: str = "WARN"
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OfflineConfig:
    root: str = "data/offline"
    format: Literal["delta", "parquet"] = "delta"


@dataclass(frozen=True)
class SourcesConfig:
    bars: str = "data/bars"


@dataclass(frozen=True)
class S3Config:
    endpoint: str | None = None
    region: str = "us-east-1"
    path_style_access: bool = True
    create_bucket: bool = False


@dataclass(frozen=True)
class OnlineStoreConfig:
    type: Literal["sqlite", "redis"] = "sqlite"
    path: str = "data/online.db"
    connection_string: str | None = None


@dataclass(frozen=True)
class FeastConfig:
    repo_path: str = "feature_repo"
    project: str = "spark_features"
    registry: str = "data/registry.db"
    online_store: OnlineStoreConfig = field(default_factory=OnlineStoreConfig)


@dataclass(frozen=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    s3: S3Config = field(default_factory=S3Config)
    feast: FeastConfig = field(default_factory=FeastConfig)
    project_root: Path = PROJECT_ROOT
    source: Path | None = None

    def resolve(self, path: str) -> str:
        """Resolve a configured path: URIs untouched, ``~``/env expanded, relative -> project root."""
        return resolve_path(path, self.project_root)

    @property
    def offline_root(self) -> str:
        return self.resolve(self.offline.root)


def resolve_path(path: str, base: Path) -> str:
    if "://" in path:
        if path.startswith("file://"):
            return str(Path(path[len("file://") :]).expanduser())
        return path
    expanded = Path(os.path.expandvars(os.path.expanduser(path)))
    if not expanded.is_absolute():
        expanded = base / expanded
    return str(expanded.resolve())


def _interpolate(value: Any, key: str) -> Any:
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"config key {key!r} needs environment variable {name}, which is not set")

    return _ENV_REF.sub(replace, value)


def _build(cls: type[Any], data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key {prefix or '<root>'!r} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls) if f.name not in ("project_root", "source")}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = prefix + name
        spec = known[name]
        default = spec.default_factory() if callable(spec.default_factory) else spec.default  # type: ignore[misc]
        if hasattr(default, "__dataclass_fields__"):
            kwargs[name] = _build(type(default), value or {}, key + ".")
        else:
            kwargs[name] = _check_type(key, _interpolate_all(value, key), default, known[name].type)
    return cls(**kwargs)


def _interpolate_all(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{key}.{k}") for k, v in value.items()}
    return _interpolate(value, key)


def _check_type(key: str, value: Any, default: Any, annotation: Any) -> Any:
    text = str(annotation)
    if value is None or value == "":
        if "None" in text:
            return None
        raise ConfigError(f"config key {key!r} must not be empty")
    if "Literal" in text:
        allowed = re.findall(r"'([^']*)'", text)
        if value not in allowed:
            raise ConfigError(f"config key {key!r} must be one of {allowed}, got {value!r}")
        return value
    if isinstance(default, bool) or text == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be a boolean, got {value!r}")
        return value
    if isinstance(default, int) or text == "int":
        if isinstance(value, str) and value.isdigit():
            return int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str):
        raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
    return value


def conf_path(explicit: str | None = None) -> Path:
    """The conf file to use: ``--conf`` beats ``SPARK_FEATURES_CONF`` beats ``conf/local.yaml``."""
    chosen = explicit or os.environ.get(CONF_ENV)
    if not chosen:
        return DEFAULT_CONF
    path = Path(os.path.expanduser(chosen))
    return path if path.is_absolute() else Path.cwd() / path


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a conf file; apply the ``SPARK_FEATURES_OFFLINE_ROOT`` override."""
    file = conf_path(str(path) if path else None).resolve()
    if not file.is_file():
        raise ConfigError(f"conf file {file} does not exist")
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"conf file {file} is not valid YAML: {exc}") from exc
    config: Config = _build(Config, raw, "")
    root = file.parent.parent if file.parent.name == "conf" else file.parent
    override = os.environ.get(OFFLINE_ROOT_ENV)
    offline = OfflineConfig(root=override, format=config.offline.format) if override else config.offline
    return Config(
        spark=config.spark,
        offline=offline,
        sources=config.sources,
        s3=config.s3,
        feast=config.feast,
        project_root=root,
        source=file,
    )
