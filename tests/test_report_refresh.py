"""The report after the folder changed: ``assign --place``, and ``report.refresh_report``.

Issue 22: after ``assign --place`` the report said "Cluster 0: 39 images" while
the folder held 41, and ``featclust report`` dropped the map and the silhouettes
with a false "the image folder changed". A stand-in embedder (pixel statistics,
through the real feature store) keeps these fast.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featclust import report, sort_folder
from featclust.assign import assign_images, place_images
from featclust.cli import main


class StandIn:
    """Features from the mean grey level, pointing another way for each shade."""

    batch_size = batch = 4
    dim = 4
    pooling = "avg"
    weights = "stand-in"
    precision = "float32"
    seed = 0

    def settings(self):
        return {"model": "stand-in", "dim": self.dim}

    def get_params(self):
        return {"weights": "stand-in", "pooling": "avg"}

    def embed(self, gray):
        m = gray.reshape(len(gray), -1).astype(np.float32).mean(1) / 255
        return np.stack([m, 1 - m, m**2, (1 - m) ** 2], axis=1)  # a direction per shade

    embed_batch = embed


def _draw(folder, names, shades, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, shade in zip(names, shades):
        px = np.clip(rng.normal(shade, 12, (24, 24)), 0, 255).astype(np.uint8)
        Image.fromarray(px).save(folder / name)


@pytest.fixture
def sorted_then_placed(tmp_path, monkeypatch):
    """A folder of 30 images (3 shades) sorted into 3 clusters, then 6 new images placed."""
    monkeypatch.chdir(tmp_path)
    images, new = tmp_path / "photos", tmp_path / "new"
    shades = [30, 128, 225]
    _draw(images, [f"img_{i:02d}.png" for i in range(30)], [shades[i % 3] for i in range(30)])
    _draw(new, [f"new_{i}.png" for i in range(6)], [shades[i % 3] for i in range(6)], seed=1)
    store = tmp_path / "store"
    result = sort_folder(
        images, "sorted out", n_clusters=3, embedder=StandIn(), store=store, report=True
    )
    assert result.report is not None and result.report.map_method is not None
    assigned = assign_images("sorted out", new, embedder=StandIn(), store=store)
    placed = place_images("sorted out", assigned)
    assert len(placed.placed) == 6
    return Path("sorted out")


def _heading_counts(index):
    text = index.read_text(encoding="utf-8")
    return {
        folder: int(n)
        for folder, n in re.findall(r'<h3 id="([^"]+)">Cluster \d+[^:]*: (\d+) images?</h3>', text)
    }


def _folder_counts(out):
    return {
        d.name: sum(1 for f in d.iterdir() if f.suffix == ".png")
        for d in out.iterdir()
        if d.is_dir() and d.name.startswith("cluster_")
    }


def test_report_after_a_placement_keeps_the_map_and_the_silhouettes(sorted_then_placed, capsys):
    out = sorted_then_placed
    code = main(["report", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "changed" not in err and "warning" not in err, err
    summary = (out / "report" / "summary.csv").read_text().splitlines()[1:]
    assert len(summary) == 3 and all(row.split(",")[6] for row in summary)  # silhouettes
    mapped = (out / "report" / "map.csv").read_text().splitlines()[1:]
    assert len(mapped) == 36
    assert _heading_counts(out / "report" / "index.html") == _folder_counts(out)
    assert sum(_folder_counts(out).values()) == 36


def _map(out):
    rows = (out / "report" / "map.csv").read_text().splitlines()[1:]
    return {r.rsplit(",", 3)[0]: tuple(map(float, r.rsplit(",", 2)[1:])) for r in rows}


def _no_new_map(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("refresh_report made a new map")

    monkeypatch.setattr(report.layout, "embed_2d", refuse)
    monkeypatch.setattr(report, "cached_2d", refuse)


def test_refresh_after_a_placement_counts_every_image_and_keeps_the_map(
    sorted_then_placed, monkeypatch
):
    out = sorted_then_placed
    before = _map(out)
    assert len(before) == 30
    stale = _heading_counts(out / "report" / "index.html")
    assert stale != _folder_counts(out)  # the sort's report, before the placement
    _no_new_map(monkeypatch)
    result = report.refresh_report(out)
    assert result.index == out / "report" / "index.html"
    assert _heading_counts(result.index) == _folder_counts(out)
    after = _map(out)
    assert len(after) == 36
    assert all(after[p] == pytest.approx(xy, abs=1e-4) for p, xy in before.items())
    new = [p for p in after if p.startswith("new_")]
    assert len(new) == 6
    # a new image lands among the mapped images of its own shade (cluster)
    labels = {
        r.rsplit(",", 3)[0]: int(r.rsplit(",", 3)[1])
        for r in (out / "report" / "map.csv").read_text().splitlines()[1:]
    }
    for p in new:
        same = np.array([xy for q, xy in before.items() if labels[q] == labels[p]])
        other = np.array([xy for q, xy in before.items() if labels[q] != labels[p]])
        d_same = np.linalg.norm(same - after[p], axis=1).min()
        d_other = np.linalg.norm(other - after[p], axis=1).min()
        assert d_same < d_other
    text = result.index.read_text()
    assert "6 images joined" in text and "nearest" in text
    assert all((out / f).is_file() for f in result.files)
    marker = json.loads((out / "featclust.json").read_text())
    assert set(result.files) <= set(marker["files"])


def test_refresh_after_an_image_moved_between_clusters(sorted_then_placed, monkeypatch):
    from featclust.output import LABELS_CSV, OutputFolder, open_sorted
    from featclust.tables import labels_csv

    out = sorted_then_placed
    report.refresh_report(out)
    folder = open_sorted(out)
    paths, labels, dists, outliers = folder.labels(outliers=True)
    moved = int(np.flatnonzero(labels == 0)[0])
    (out / "cluster_00" / paths[moved]).rename(out / "cluster_01" / paths[moved])
    labels[moved] = 1
    OutputFolder(out).write_text(LABELS_CSV, labels_csv(paths, labels, dists, outliers))
    _no_new_map(monkeypatch)
    result = report.refresh_report(out)
    assert _heading_counts(result.index) == _folder_counts(out)
    gallery = (out / "report" / "clusters" / "cluster_01.html").read_text()
    assert paths[moved].rsplit(".", 1)[0] in gallery
    moved_row = [
        r for r in (out / "report" / "map.csv").read_text().splitlines() if paths[moved] in r
    ]
    assert moved_row and moved_row[0].split(",")[1] == "1"


def test_refresh_without_features_leaves_new_images_off_the_map_and_says_so(
    sorted_then_placed, monkeypatch
):
    import shutil

    out = sorted_then_placed
    shutil.rmtree(out.parent / "store")
    _no_new_map(monkeypatch)
    result = report.refresh_report(out)
    assert _heading_counts(result.index) == _folder_counts(out)
    assert len(_map(out)) == 30
    text = result.index.read_text()
    assert "6 images joined" in text and "not on it" in text
    assert any("no longer exists" in w for w in result.warnings)


def test_refresh_of_a_folder_without_a_report_writes_the_whole_report(tmp_path):
    from test_report_pages import make_sorted

    out, X, model, paths = make_sorted(tmp_path)
    result = report.refresh_report(out, features=X)
    assert result.map_method is not None
    assert len(_map(out)) == len(paths)


def test_the_edit_commands_leave_a_report_of_the_folder_as_edited(
    sorted_then_placed, monkeypatch, capsys
):
    """Renamed, merged and set-aside clusters: names, folders and counts as they are now."""
    out = sorted_then_placed
    before = _map(out)
    _no_new_map(monkeypatch)
    assert main(["rename", str(out), "0", "dark rings"]) == 0
    first = sorted(p.name for p in (out / "cluster_01").iterdir())[0]
    assert main(["set-aside", str(out), f"cluster_01/{first}"]) == 0
    assert main(["merge", str(out), "1", "2"]) == 0
    capsys.readouterr()
    index = out / "report" / "index.html"
    text = index.read_text(encoding="utf-8")
    folders = {d.name for d in out.iterdir() if d.is_dir() and d.name not in ("report",)}
    assert "00-dark-rings" in folders
    headings = dict(re.findall(r'<h3 id="([^"]+)">(Cluster [^<]*)</h3>', text))
    assert headings["00-dark-rings"].startswith("Cluster 0 (dark rings): ")
    counts = {f: int(re.search(r": (\d+) images?$", h).group(1)) for f, h in headings.items()}
    on_disk = {f: sum(1 for x in (out / f).iterdir() if x.suffix == ".png") for f in headings}
    assert counts == on_disk and len(counts) == 2
    assert sum(counts.values()) == 35
    assert "1 image set aside" in text
    after = _map(out)
    assert len(after) == 35 and first not in after
    assert all(after[p] == pytest.approx(before[p], abs=1e-4) for p in after if p in before)
    assert (out / "report" / "clusters" / "00-dark-rings.html").is_file()
