"""Both notebooks run top to bottom, at small sizes set through their parameters cell."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "ellipse_das.ipynb": 'RESULTS = "ellipse"\nN_IMAGES = 2000\nCNN_EPOCHS = 1\nN_PAIRS = 512\nSEED = 0',
    "gpt2_das.ipynb": 'MODEL = "gpt2/model"\nWIDTH, N_LAYERS, N_HEADS, EPOCHS = 16, 3, 2, 3\nLAYER, K = 0, 8\n'
                      'N_TRAINING, N_TESTING, DAS_EPOCHS = 512, 256, 1\nSEED = 0',
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed without outputs
    [parameters] = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    parameters.source = SMALL[name]
    monkeypatch.setenv("TQDM_DISABLE", "1")
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    images = sum("image/png" in o.get("data", {}) for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert images >= (2 if name == "ellipse_das.ipynb" else 1), text
    assert ("IIA" in text or "DAS" in text) and "held-out accuracy" in text, text
