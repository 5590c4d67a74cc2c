"""The notebooks run from top to bottom (a small image count keeps it fast); the walkthrough is
saved with the outputs of a larger run on generated images, so a reader on a code host sees them."""

import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_is_a_walkthrough():
    assert "walkthrough.ipynb" in [p.name for p in NOTEBOOKS]


def _text_outputs(nb):
    return "".join(
        o.get("text", "") + o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


def _png_outputs(nb):
    return sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


def test_walkthrough_is_saved_with_the_outputs_of_a_run_on_generated_images():
    path = next(p for p in NOTEBOOKS if p.name == "walkthrough.ipynb")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # every cell ran, in order, without an error and without runtime log noise
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o for o in outputs if o.get("name") == "stderr"]
    # the saved run: 200 generated images, random weights, said so in the text
    source = "".join(c.source for c in code)
    markdown = " ".join(" ".join(c.source.split()) for c in nb.cells if c.cell_type == "markdown")
    assert 'WEIGHTS = "none"' in source
    assert "random weights" in markdown and "200 generated images" in markdown
    text = _text_outputs(nb)
    assert "200 images" in text and "suggested k:" in text and "adjusted Rand index" in text
    assert "/tmp/" not in text, "no machine paths in the saved outputs"
    assert _png_outputs(nb) >= 1 + 1 + 1 + 4 + 2  # sample, k-scan, overview, montages, maps
    # the text says what the code does, and promises nothing it did not measure
    assert "block4" in markdown and "max-pooled" in markdown
    assert "average-pooled" not in markdown
    assert "has not been measured" in markdown
    assert "expect a good one" not in markdown
    assert "featclust.ImageClusterer(" in source
    assert "new image goes to cluster" in text
    assert path.stat().st_size < 4_000_000
    json.loads(path.read_text())  # valid JSON as saved


def test_walkthrough_outputs_were_saved_with_the_current_defaults():
    """Issue 21, case 16: the saved run is of today's features (the text says 1,024 values;
    outputs saved with an older default showed 512)."""
    from featclust.embed import Embedder

    path = next(p for p in NOTEBOOKS if p.name == "walkthrough.ipynb")
    text = _text_outputs(nbformat.read(path, as_version=4))
    shapes = re.findall(r"features \((\d+), (\d+)\)", text)
    assert shapes == [("200", str(Embedder(weights="none").dim))]
    width = f"{Embedder(weights='none').dim:,}-number vector"
    markdown = " ".join(
        " ".join(c.source.split())
        for c in nbformat.read(path, as_version=4).cells
        if c.cell_type == "markdown"
    )
    assert width in markdown


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("FEATCLUST_NB_IMAGES", "8")
    monkeypatch.setenv("FEATCLUST_NB_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    if path.name == "walkthrough.ipynb":
        work = tmp_path / "work"
        assert len(list((work / "images").glob("*.png"))) == 8
        assert (work / "sorted" / "report" / "index.html").is_file()
        text = "".join(
            o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
        )
        assert "suggested k:" in text
        assert "images reused from the store: 8" in text
        assert "path,cluster,distance,outlier" in text and "new_ring.png" in text
        assert "new image goes to cluster" in text  # the ImageClusterer section ran
        images = sum(
            "image/png" in o.get("data", {})
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
        )
        assert images >= 1 + 1 + 1 + 4 + 2  # sample, k-scan, overview, montages, maps


def test_progress_bars_in_a_notebook_warn_nothing(tmp_path):
    """Issue 21, case 16: no "IProgress not found" (nor any other warning) in a notebook,
    whether ipywidgets is installed (a widget bar) or not (no bar, quietly)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import featclust\n"
            "from featclust.progress import bar_factory\n"
            "make = bar_factory(None)\n"
            "bar = make('embedding', 3)\n"
            "bar.update(3)\n"
            "bar.close()\n"
            "print('widget:', any(c.__module__ == 'tqdm.notebook' for c in type(bar).__mro__))"
        )
    ]
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = nb.cells[0].outputs
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert stderr == ""
    printed = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        assert "widget: False" in printed
    else:
        assert "widget: True" in printed
