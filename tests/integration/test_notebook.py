"""The quickstart notebook runs headless from top to bottom and is stored with its outputs
(built by scripts/make_quickstart_notebook.py, which executes it)."""

import json
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_notebook_is_stored_with_outputs_and_no_errors():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))
    for cell in code:
        assert all(out["output_type"] != "error" for out in cell["outputs"]), cell["source"]
    text = json.dumps(notebook)
    assert "from-folder: wrote" in text and "native resolution" in text  # "your own data" ran


def test_notebook_matches_its_generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_nb", ROOT / "scripts" / "make_quickstart_notebook.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stored = nbformat.read(NOTEBOOK, as_version=4)
    assert [c.source for c in stored.cells] == [c.source for c in module.build().cells]


@pytest.mark.slow
def test_notebook_executes_headless(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("DEPTH2IMG_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("DEPTH2IMG_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    text = "\n".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "global step 3" in text
    assert "from-folder: wrote" in text and "exit code 0" in text
    assert (tmp_path / "preview.png").is_file()
    assert (tmp_path / "my_generations" / "grid.png").is_file()
    assert (tmp_path / "quickstart.ckpt").is_file()
    assert (tmp_path / "eval" / "metrics.json").is_file()
    for group in ("generated", "floor", "chance"):
        assert group in text
    assert os.environ.get("DEPTH2IMG_NOTEBOOK_DIR") == str(tmp_path)
