"""The notebooks run from top to bottom (a small image count keeps it fast), outputs not committed."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_is_a_walkthrough():
    assert "walkthrough.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: clear the outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATCLUST_NB_IMAGES", "8")
    monkeypatch.setenv("FEATCLUST_NB_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    if path.name == "walkthrough.ipynb":
        work = tmp_path / "work"
        assert len(list((work / "images").glob("*.png"))) == 8
        assert (work / "sorted" / "report" / "index.html").is_file()
        text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                       for o in c.outputs)
        assert "suggested k:" in text
        assert "images reused from the store: 8" in text
        assert "path,cluster,distance,outlier" in text and "new_ring.png" in text
        images = sum("image/png" in o.get("data", {}) for c in nb.cells
                     if c.cell_type == "code" for o in c.outputs)
        assert images >= 1 + 1 + 1 + 4 + 2  # sample, k-scan, overview, montages, maps
