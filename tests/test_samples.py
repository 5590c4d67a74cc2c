"""Tests for featclust.samples (synthetic labelled image sets)."""

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featclust.samples import (
    DOT_FAMILIES,
    SILHOUETTE_FAMILIES,
    draw_dots,
    draw_silhouette,
    make_image_set,
    write_truth_csv,
)


def _files(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _dark_coords(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    ys, xs = np.nonzero(a < 128)
    return np.column_stack([xs, ys]).astype(float)


def _anisotropy(img: Image.Image) -> float:
    """Smallest / largest eigenvalue of the dark-pixel covariance (0..1)."""
    ev = np.linalg.eigvalsh(np.cov(_dark_coords(img).T))
    return float(ev[0] / ev[1])


def _radial_cv(img: Image.Image) -> float:
    """Coefficient of variation of the dark pixels' distance to their centroid."""
    p = _dark_coords(img)
    d = np.hypot(*(p - p.mean(axis=0)).T)
    return float(d.std() / d.mean())


def test_family_tuples():
    for fam in ("ring", "line", "cross", "triangle", "grid", "clusters", "scatter", "spiral"):
        assert fam in DOT_FAMILIES
    assert len(SILHOUETTE_FAMILIES) == 6
    assert len(set(DOT_FAMILIES)) == len(DOT_FAMILIES)
    assert len(set(SILHOUETTE_FAMILIES)) == len(SILHOUETTE_FAMILIES)


def test_deterministic(tmp_path):
    a = make_image_set(tmp_path / "a", n_per_family=3, seed=7)
    b = make_image_set(tmp_path / "b", n_per_family=3, seed=7)
    assert a == b
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    make_image_set(tmp_path / "c", n_per_family=3, seed=8)
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_draw_functions_deterministic():
    for fam in DOT_FAMILIES:
        x = draw_dots(fam, np.random.default_rng(3))
        y = draw_dots(fam, np.random.default_rng(3))
        assert x.tobytes() == y.tobytes()
    for fam in SILHOUETTE_FAMILIES:
        x = draw_silhouette(fam, np.random.default_rng(3))
        y = draw_silhouette(fam, np.random.default_rng(3))
        assert x.tobytes() == y.tobytes()


def test_mapping_matches_files_and_counts(tmp_path):
    truth = make_image_set(tmp_path, n_per_family=4, seed=1)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert sorted(truth) == written  # nothing else is written
    assert len(truth) == 4 * len(DOT_FAMILIES)
    assert Counter(truth.values()) == {fam: 4 for fam in DOT_FAMILIES}
    assert list(truth) == [f"img_{i:05d}.png" for i in range(len(truth))]
    # Family not visible in file names, and the order is shuffled.
    assert not any(fam in name for name in truth for fam in DOT_FAMILIES)
    labels = list(truth.values())
    assert labels != sorted(labels, key=DOT_FAMILIES.index)


def test_subfolders_and_families_subset(tmp_path):
    truth = make_image_set(
        tmp_path / "out", n_per_family=2, families=["ring", "line"], subfolders=True, seed=2
    )
    assert Counter(truth.values()) == {"ring": 2, "line": 2}
    for rel, fam in truth.items():
        assert rel.split("/")[0] == fam
        assert (tmp_path / "out" / rel).is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["line", "ring"]


def test_silhouettes_kind(tmp_path):
    truth = make_image_set(tmp_path, n_per_family=2, kind="silhouettes", seed=0)
    assert Counter(truth.values()) == {fam: 2 for fam in SILHOUETTE_FAMILIES}
    for rel in truth:
        with Image.open(tmp_path / rel) as im:
            assert im.mode == "L" and im.size == (200, 200)


def test_unknown_family_raises():
    with pytest.raises(ValueError, match="family='foo'"):
        draw_dots("foo", np.random.default_rng(0))
    with pytest.raises(ValueError, match="family='disk'"):
        draw_dots("disk", np.random.default_rng(0))
    with pytest.raises(ValueError, match="family='ring'"):
        draw_silhouette("ring", np.random.default_rng(0))


def test_unknown_family_or_kind_in_set_raises(tmp_path):
    with pytest.raises(ValueError, match="family='foo'"):
        make_image_set(tmp_path / "x", families=["ring", "foo"])
    with pytest.raises(ValueError, match="kind='shapes'"):
        make_image_set(tmp_path / "y", kind="shapes")
    with pytest.raises(ValueError, match="n_per_family"):
        make_image_set(tmp_path / "z", n_per_family=0)
    # Nothing was created by the failed calls.
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites(tmp_path):
    truth = make_image_set(tmp_path, n_per_family=1, seed=0)
    before = _files(tmp_path)
    with pytest.raises(FileExistsError):
        make_image_set(tmp_path, n_per_family=1, seed=1)
    assert _files(tmp_path) == before

    # A single pre-existing target blocks the whole set; nothing is written.
    other = tmp_path / "other"
    other.mkdir()
    (other / "img_00003.png").write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        make_image_set(other, n_per_family=1, seed=0)
    assert _files(other) == {"img_00003.png": b"keep me"}
    assert len(truth) == len(DOT_FAMILIES)


@pytest.mark.parametrize("kind", ["dots", "silhouettes"])
def test_image_properties(tmp_path, kind):
    truth = make_image_set(tmp_path, n_per_family=3, kind=kind, seed=4)
    for rel in truth:
        with Image.open(tmp_path / rel) as im:
            assert im.format == "PNG"
            assert im.mode == "L"
            assert im.size == (200, 200)
            a = np.asarray(im)
        values = set(np.unique(a).tolist())
        assert values == {0, 255}  # pure black on white
        assert (a == 255).mean() > 0.15  # white background around the shape
        # Always within the canvas: the outermost border stays white.
        assert a[0].min() == a[-1].min() == a[:, 0].min() == a[:, -1].min() == 255


def test_size_parameter():
    img = draw_dots("ring", np.random.default_rng(0), size=64)
    assert img.size == (64, 64) and img.mode == "L"
    img = draw_silhouette("star", np.random.default_rng(0), size=300)
    assert img.size == (300, 300)


def test_families_separable_by_simple_features():
    rng = np.random.default_rng(123)
    ring = [draw_dots("ring", rng) for _ in range(15)]
    line = [draw_dots("line", rng) for _ in range(15)]
    scatter = [draw_dots("scatter", rng) for _ in range(15)]
    # Lines are elongated, rings are round.
    assert max(_anisotropy(im) for im in line) < 0.1
    assert min(_anisotropy(im) for im in ring) > 0.6
    # Ring dots all lie at about the same distance from the centre; scattered
    # dots do not.
    assert max(_radial_cv(im) for im in ring) < min(_radial_cv(im) for im in scatter)

    disk = [draw_silhouette("disk", rng) for _ in range(10)]
    bar = [draw_silhouette("ellipse_bar", rng) for _ in range(10)]
    assert max(_anisotropy(im) for im in bar) < 0.25
    assert min(_anisotropy(im) for im in disk) > 0.9


def test_write_truth_csv(tmp_path):
    truth = make_image_set(tmp_path / "imgs", n_per_family=2, families=("grid", "spiral"), seed=3)
    csv_path = tmp_path / "truth.csv"
    write_truth_csv(truth, csv_path)
    text = csv_path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "path,label"
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["path"]: r["label"] for r in rows} == truth


def test_no_tensorflow_import():
    import featclust.samples  # noqa: F401

    src = Path(featclust.samples.__file__).read_text(encoding="utf-8")
    for banned in ("import tensorflow", "from tensorflow", "import keras", "from keras"):
        assert banned not in src
