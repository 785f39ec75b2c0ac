"""Config loading: defaults, env interpolation and overrides, path resolution, and every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_features.config import CONF_ENV, OFFLINE_ROOT_ENV, PROJECT_ROOT, load_config, resolve_path
from spark_features.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "conf/test.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_local_default_is_embedded_delta_and_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONF_ENV, raising=False)
    monkeypatch.delenv(OFFLINE_ROOT_ENV, raising=False)
    config = load_config()
    assert config.source == PROJECT_ROOT / "conf" / "local.yaml"
    assert config.offline.format == "delta"
    assert config.offline_root == str(PROJECT_ROOT / "data" / "offline")
    assert config.feast.online_store.type == "sqlite"


def test_relative_paths_resolve_against_project_root_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = write(tmp_path, "offline:\n  root: tables\n")
    monkeypatch.chdir("/")
    assert load_config(conf).offline_root == str(tmp_path / "tables")
    loose = write(tmp_path, "offline:\n  root: tables\n", name="elsewhere/x.yaml")
    assert load_config(loose).offline_root == str(tmp_path / "elsewhere" / "tables")


def test_path_forms() -> None:
    base = Path("/project")
    assert resolve_path("s3a://bucket/root", base) == "s3a://bucket/root"
    assert resolve_path("file:///abs/root", base) == "/abs/root"
    assert resolve_path("/abs/root", base) == "/abs/root"
    assert resolve_path("rel/root", base) == "/project/rel/root"
    assert resolve_path("~/root", base) == str(Path.home() / "root")


def test_env_var_expansion_in_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SF_TEST_DIR", str(tmp_path / "viaenv"))
    conf = write(tmp_path, "offline:\n  root: $SF_TEST_DIR/t\n")
    assert load_config(conf).offline_root == str(tmp_path / "viaenv" / "t")


def test_conf_chosen_by_env_and_root_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = write(tmp_path, "offline:\n  root: tables\n  format: parquet\n")
    monkeypatch.setenv(CONF_ENV, str(conf))
    monkeypatch.setenv(OFFLINE_ROOT_ENV, "s3a://bucket/override")
    config = load_config()
    assert config.source == conf
    assert config.offline_root == "s3a://bucket/override"
    assert config.offline.format == "parquet"


def test_s3_and_cluster_confs_read_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_FEATURES_S3_ROOT", "s3a://b/features")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    s3 = load_config(PROJECT_ROOT / "conf" / "s3.yaml")
    assert s3.offline_root == "s3a://b/features"
    assert s3.s3.endpoint == "http://127.0.0.1:9000"
    assert s3.s3.create_bucket is False
    monkeypatch.setenv("SPARK_MASTER", "spark://127.0.0.1:7077")
    monkeypatch.setenv("REDIS_CONNECTION_STRING", "127.0.0.1:6379")
    monkeypatch.delenv("S3_ENDPOINT_URL")
    cluster = load_config(PROJECT_ROOT / "conf" / "cluster.yaml")
    assert cluster.spark.master == "spark://127.0.0.1:7077"
    assert cluster.feast.online_store.type == "redis"
    assert cluster.s3.endpoint is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("offline:\n  rooot: x\n", "offline.rooot"),
        ("colour: blue\n", "colour"),
        ("spark:\n  shuffle_partitions: many\n", "spark.shuffle_partitions"),
        ("spark:\n  ui_enabled: maybe\n", "spark.ui_enabled"),
        ("offline:\n  format: orc\n", "offline.format"),
        ("offline: [1, 2]\n", "offline"),
        ("offline:\n  root: ${SF_SURELY_UNSET_VAR}\n", "SF_SURELY_UNSET_VAR"),
        ("spark: [\n", "not valid YAML"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("$", r"\$")):
        load_config(write(tmp_path, text))


def test_missing_required_env_in_shipped_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    with pytest.raises(ConfigError, match="SPARK_MASTER"):
        load_config(PROJECT_ROOT / "conf" / "cluster.yaml")


def test_missing_conf_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
