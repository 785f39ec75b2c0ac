"""notebooks/quickstart.ipynb is executed end to end so it cannot rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from spark_features.config import PROJECT_ROOT


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf" / "notebook.yaml"
    conf.parent.mkdir()
    conf.write_text("spark:\n  master: 'local[2]'\n  shuffle_partitions: 2\noffline:\n  root: data/offline\n")
    monkeypatch.setenv("SPARK_FEATURES_CONF", str(conf))
    monkeypatch.delenv("SPARK_FEATURES_OFFLINE_ROOT", raising=False)
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    assert (tmp_path / "rsi.png").stat().st_size > 1000
    assert (tmp_path / "data" / "offline" / "trend" / "v1.0.0" / "_delta_log").is_dir()
    assert (tmp_path / "data" / "online.db").is_file()
