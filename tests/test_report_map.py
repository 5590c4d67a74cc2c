"""The report's 2-D map: openTSNE as the default up to 100,000+ images, degenerate folders
end to end (real CLI, real Keras model with random weights), and the map cache that
deletes only its own files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report_pages import make_sorted

from featclust import report
from featclust.report import layout


def test_tsne_map_is_the_default_up_to_100000_images_and_made_by_opentsne(monkeypatch):
    assert layout.resolve_map_method("auto", 100_000) == "tsne"
    calls = []
    import openTSNE

    real = openTSNE.TSNE.fit
    monkeypatch.setattr(
        openTSNE.TSNE,
        "fit",
        lambda self, X, **kw: calls.append(self.negative_gradient_method) or real(self, X, **kw),
    )
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (6, 64))
    truth = np.arange(600) % 6
    X = (centres[truth] + rng.normal(0, 1, (600, 64))).astype(np.float32)
    xy = report.embed_2d(X, "tsne")
    assert calls == ["bh"]  # small maps: Barnes-Hut; FFT from layout.FFT_MIN_IMAGES rows
    # the map keeps the groups apart: a point's 10 nearest map neighbours are its group
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=11).fit(xy).kneighbors(xy, return_distance=False)[:, 1:]
    assert np.mean(truth[nn] == truth[:, None]) > 0.98


def _picture(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (48, 48), np.uint8)).save(path)


def _featclust(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", "featclust", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def test_folder_of_few_distinct_images_gets_a_report_and_never_crashes(tmp_path):
    """Copies of two images (blank scans, one image copied many times): the sort and
    `featclust report` finish (no segfault: a crash would show as exit -11) and the
    page says why the map is PCA."""
    images = tmp_path / "images"
    images.mkdir()
    _picture(images / "a.png", 1)
    _picture(images / "b.png", 2)
    for i in range(5):
        (images / f"a_copy{i}.png").write_bytes((images / "a.png").read_bytes())
    (images / "b_copy.png").write_bytes((images / "b.png").read_bytes())
    store = tmp_path / "store"
    proc = _featclust(
        "sort",
        "images",
        "out",
        "-k",
        "2",
        "--weights",
        "none",
        "--batch-size",
        "4",
        "--store",
        str(store),
        "-q",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    page = (tmp_path / "out" / "report" / "index.html").read_text()
    assert "only 2 distinct feature vectors among 8 images" in page
    proc = _featclust("report", "out", "--map", "tsne", "-q", cwd=tmp_path)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert (
        "only 2 distinct feature vectors"
        in (tmp_path / "out" / "report" / "index.html").read_text()
    )
    xy = np.array(
        [
            [float(r.split(",")[-2]), float(r.split(",")[-1])]
            for r in (tmp_path / "out" / "report" / "map.csv").read_text().splitlines()[1:]
        ]
    )
    assert len(np.unique(xy.round(4), axis=0)) == 2


def _user_files(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"tsne-{i:032x}.npy" for i in range(n // 2)] + [
        f"mine_{i}.npy" for i in range(n - n // 2)
    ]
    for name in names:
        np.save(folder / name, np.arange(3.0))
    return sorted(names)


def test_map_cache_never_deletes_files_it_did_not_write(tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "MAP_CACHE_KEEP", 2)
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(12, 8)).astype(np.float32) for _ in range(4)]

    # --store pointing at a folder whose maps/ holds the user's files: left alone
    user_maps = tmp_path / "user_root" / "maps"
    names = _user_files(user_maps, 40)
    for Z in maps:
        report.cached_2d(Z, "tsne", 0, layout.map_cache_dir(user_maps.parent))
    assert sorted(os.listdir(user_maps)) == names

    # featclust's own cache folder: its old maps go, a user's file put there stays
    root = tmp_path / "root"
    cache = layout.map_cache_dir(root)
    report.cached_2d(maps[0], "tsne", 0, cache)
    assert (cache / layout.MAP_CACHE_MARKER).is_file()
    theirs = _user_files(cache, 6)
    for Z in maps[1:]:
        report.cached_2d(Z, "tsne", 0, cache)
    left = set(os.listdir(cache))
    assert set(theirs) <= left
    mine = left - set(theirs) - {layout.MAP_CACHE_MARKER}
    assert len(mine) == 2 and all(n.startswith("tsne-") for n in mine)
    # the cache still serves what it wrote
    again = report.cached_2d(maps[3], "tsne", 0, cache)
    assert np.array_equal(again, report.cached_2d(maps[3], "tsne", 0, None))


def test_report_uses_the_map_cache_only_in_a_folder_it_made(tmp_path):
    out, X, model, _ = make_sorted(tmp_path / "a")
    root = tmp_path / "store_root"
    (root / "maps").mkdir(parents=True)
    (root / "maps" / "notes.txt").write_text("mine")
    data = json.loads((out / "featclust.json").read_text())
    data["store_root"] = str(root)
    (out / "featclust.json").write_text(json.dumps(data))
    result = report.write_report(out, features=X, model=model, map_method="tsne")
    assert result.map_method == "tsne"
    assert os.listdir(root / "maps") == ["notes.txt"]


@pytest.mark.parametrize("n", [1, 2, 4, 5, 7])
def test_tiny_sets_get_a_finite_map(n):
    rng = np.random.default_rng(n)
    xy = report.embed_2d(rng.normal(size=(n, 8)), "tsne")
    assert xy.shape == (n, 2) and np.isfinite(xy).all()
