"""Tests for featclust.samples (synthetic labelled image sets)."""

import csv
import functools
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from featclust import samples
from featclust.errors import UsageError
from featclust.samples import (
    DOT_FAMILIES,
    SILHOUETTE_FAMILIES,
    draw_dots,
    draw_silhouette,
    make_image_set,
    write_truth_csv,
)

ALL_KINDS = ("dots", "silhouettes", "glyphs", "textures", "lines", "symbols")
NEW_KINDS = ("glyphs", "textures", "lines", "symbols")
#: Kinds that draw marks on a white background (textures fill the whole canvas).
FRAMED_KINDS = ("dots", "silhouettes", "glyphs", "lines", "symbols")


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
    assert Counter(truth.values()) == dict.fromkeys(DOT_FAMILIES, 4)
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
    assert Counter(truth.values()) == dict.fromkeys(SILHOUETTE_FAMILIES, 2)
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


@pytest.mark.parametrize("kind", FRAMED_KINDS)
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
    import featclust.samples

    src = Path(featclust.samples.__file__).read_text(encoding="utf-8")
    for banned in ("import tensorflow", "from tensorflow", "import keras", "from keras"):
        assert banned not in src


# ---------------------------------------------------------------- every kind, the new ones too


def _pixels(img: Image.Image) -> np.ndarray:
    """Return the pixels of a drawing after checking its mode.

    Parameters
    ----------
    img : PIL.Image.Image
        A drawing from :mod:`featclust.samples`.

    Returns
    -------
    numpy.ndarray
        The ``(height, width)`` uint8 array of the image.
    """
    assert img.mode == "L"
    return np.asarray(img)


def _foreign_family(kind: str) -> str:
    """Return a family of another kind that ``kind`` does not have.

    Parameters
    ----------
    kind : str
        One of :data:`ALL_KINDS`.

    Returns
    -------
    str
        The first family name of the other kinds missing from ``kind``'s.
    """
    return next(
        f for k in ALL_KINDS for f in samples.FAMILIES[k] if f not in samples.FAMILIES[kind]
    )


def test_every_kind_is_listed_and_importable():
    from featclust.samples import glyphs, lines, sets, symbols, textures

    assert set(samples.FAMILIES) == set(ALL_KINDS) == set(sets.KINDS)
    assert samples.KINDS is sets.KINDS
    for kind in ALL_KINDS:
        module = sets.KINDS[kind]
        assert getattr(samples, kind) is module  # the kind's module is an attribute
        assert kind in samples.__all__
        fams = samples.FAMILIES[kind]
        assert fams is module.FAMILIES
        assert isinstance(fams, tuple) and len(fams) >= 6
        assert len(set(fams)) == len(fams)
        assert all(isinstance(f, str) and f for f in fams)
    assert (glyphs, textures, lines, symbols) == tuple(sets.KINDS[k] for k in NEW_KINDS)
    assert samples.FAMILIES["dots"] == DOT_FAMILIES
    assert samples.FAMILIES["silhouettes"] == SILHOUETTE_FAMILIES
    for name in samples.__all__:
        assert hasattr(samples, name), name


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_draw_dispatches_to_the_kind(kind):
    module = samples.KINDS[kind]
    for fam in samples.FAMILIES[kind]:
        a = samples.draw(kind, fam, np.random.default_rng(5), 48)
        b = module.draw(fam, np.random.default_rng(5), size=48)
        assert a.size == (48, 48)
        assert a.tobytes() == b.tobytes()
    # The default size is the reference size.
    fam = samples.FAMILIES[kind][0]
    assert samples.draw(kind, fam, np.random.default_rng(0)).size == (200, 200)


def test_draw_unknown_kind_raises():
    with pytest.raises(UsageError, match="kind='shapes'"):
        samples.draw("shapes", "ring", np.random.default_rng(0))


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_draw_deterministic_for_a_seed(kind):
    for fam in samples.FAMILIES[kind]:
        x = samples.draw(kind, fam, np.random.default_rng(11), 64).tobytes()
        y = samples.draw(kind, fam, np.random.default_rng(11), 64).tobytes()
        z = samples.draw(kind, fam, np.random.default_rng(12), 64).tobytes()
        assert x == y
        assert x != z, f"{kind}/{fam}: another seed drew the same image"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_image_set_deterministic_for_a_seed(tmp_path, kind):
    a = make_image_set(tmp_path / "a", n_per_family=1, kind=kind, size=64, seed=7)
    b = make_image_set(tmp_path / "b", n_per_family=1, kind=kind, size=64, seed=7)
    c = make_image_set(tmp_path / "c", n_per_family=1, kind=kind, size=64, seed=8)
    assert a == b
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    fa, fc = _files(tmp_path / "a"), _files(tmp_path / "c")
    assert sorted(fa) == sorted(fc) == sorted(c)
    assert all(fa[name] != fc[name] for name in fa)  # every image differs
    assert len(fa) == len(samples.FAMILIES[kind])


@pytest.mark.parametrize("size", [32, 61, 200])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_black_and_white_at_every_size(kind, size):
    rng = np.random.default_rng(size)
    for fam in samples.FAMILIES[kind]:
        for _ in range(3):
            img = samples.draw(kind, fam, rng, size)
            assert img.size == (size, size)
            a = _pixels(img)
            assert a.shape == (size, size) and a.dtype == np.uint8
            assert set(np.unique(a).tolist()) == {0, 255}, f"{kind}/{fam} at {size}"


@pytest.mark.parametrize("kind", FRAMED_KINDS)
def test_marks_never_touch_the_border(kind):
    # Many draws, at the reference size and at the smallest one: the outermost
    # rows and columns stay white, and every drawing has black and white.
    for size, n in ((200, 200), (32, 100)):
        rng = np.random.default_rng([size, 1])
        for fam in samples.FAMILIES[kind]:
            for i in range(n):
                a = _pixels(samples.draw(kind, fam, rng, size))
                border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
                assert border.min() == 255, f"{kind}/{fam} #{i} at {size} touches the border"
                assert a.min() == 0 and (a == 255).mean() > 0.1, f"{kind}/{fam} #{i} at {size}"


def test_textures_fill_the_whole_canvas():
    rng = np.random.default_rng(4)
    for fam in samples.FAMILIES["textures"]:
        for _ in range(20):
            a = _pixels(samples.draw("textures", fam, rng, 200))
            # Both colours in each of the 16 50x50 tiles: nothing is a shape on a background.
            tiles = a.reshape(4, 50, 4, 50).transpose(0, 2, 1, 3).reshape(16, -1)
            assert (tiles.min(axis=1) == 0).all() and (tiles.max(axis=1) == 255).all(), fam


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_ink_does_not_depend_on_the_size(kind):
    # A bigger canvas draws the same picture larger: about the same share of black.
    for fam in samples.FAMILIES[kind]:
        ink = {}
        for size in (200, 400):
            rng = np.random.default_rng(21)
            ink[size] = np.median(
                [(_pixels(samples.draw(kind, fam, rng, size)) == 0).mean() for _ in range(8)]
            )
        assert 2 / 3 < ink[400] / ink[200] < 3 / 2, f"{kind}/{fam}: {ink}"


def test_stipple_on_a_small_canvas_is_never_blank():
    # These seeds drew no dot at all at size 32 when dot radii could fall
    # under a pixel.
    for seed in (800, 2211, 5945):
        a = _pixels(samples.draw("textures", "stipple", np.random.default_rng(seed), 32))
        assert (a == 0).sum() >= 4, seed
    rng = np.random.default_rng(0)
    assert (
        min((_pixels(samples.draw("textures", "stipple", rng, 32)) == 0).sum() for _ in range(300))
        >= 4
    )


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_unknown_family_raises_usage_error(tmp_path, kind):
    module = samples.KINDS[kind]
    foreign = _foreign_family(kind)
    for bad in ("nope", foreign):
        with pytest.raises(UsageError, match=f"family='{bad}'"):
            samples.draw(kind, bad, np.random.default_rng(0))
        with pytest.raises(UsageError, match=f"family='{bad}'"):
            module.draw(bad, np.random.default_rng(0), 64)
        with pytest.raises(UsageError, match=f"family='{bad}'"):
            make_image_set(tmp_path / "x", n_per_family=1, families=[bad], kind=kind)
    with pytest.raises(UsageError, match="size=31"):
        samples.draw(kind, samples.FAMILIES[kind][0], np.random.default_rng(0), 31)
    assert list(tmp_path.iterdir()) == []  # nothing written by the failed calls


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_image_set_of_a_new_kind(tmp_path, kind):
    fams = samples.FAMILIES[kind]
    truth = make_image_set(tmp_path / "flat", n_per_family=3, kind=kind, seed=5)
    written = sorted(
        p.relative_to(tmp_path / "flat").as_posix()
        for p in (tmp_path / "flat").rglob("*")
        if p.is_file()
    )
    assert sorted(truth) == written
    assert len(truth) == 3 * len(fams)
    assert Counter(truth.values()) == dict.fromkeys(fams, 3)
    assert list(truth) == [f"img_{i:05d}.png" for i in range(len(truth))]
    labels = list(truth.values())
    assert labels != sorted(labels, key=fams.index)  # shuffled
    for rel in truth:
        with Image.open(tmp_path / "flat" / rel) as im:
            assert im.format == "PNG" and im.mode == "L" and im.size == (200, 200)
            assert set(np.unique(np.asarray(im)).tolist()) == {0, 255}

    # The labels are the families drawn: a classifier trained on separate
    # drawings agrees with them (shuffled labels would agree 1 time in 6-8).
    model = _family_model(kind)
    hits = []
    for rel, fam in truth.items():
        with Image.open(tmp_path / "flat" / rel) as im:
            hits.append(model.predict(_FEATURES[kind](im)) == fam)
    assert np.mean(hits) >= 0.6, np.mean(hits)

    # Subfolders: same images under the same indices, in the folder of their label.
    sub = make_image_set(tmp_path / "sub", n_per_family=3, kind=kind, seed=5, subfolders=True)
    assert list(sub.values()) == labels
    flat = _files(tmp_path / "flat")
    for (rel_sub, fam), rel_flat in zip(sub.items(), truth):
        assert rel_sub == f"{fam}/{rel_flat}"
        assert (tmp_path / "sub" / rel_sub).read_bytes() == flat[rel_flat]


# ---------------------------------------------------------------- the families really differ


def _ink_box_8x8(img: Image.Image) -> np.ndarray:
    """Box-downsample the ink's bounding box to 8x8 ink fractions.

    Parameters
    ----------
    img : PIL.Image.Image
        A drawing with some black.

    Returns
    -------
    numpy.ndarray
        The 64 fractions of black in the 8x8 cells of the smallest box
        around the black pixels, row by row (top left first).
    """
    ink = _pixels(img) < 128
    ys, xs = np.nonzero(ink)
    box = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    crop = Image.fromarray(np.where(box, 255, 0).astype(np.uint8))
    return np.asarray(crop.resize((8, 8), Image.Resampling.BOX), float).ravel() / 255.0


def _orientation_stats(img: Image.Image) -> np.ndarray:
    """Rotation-invariant texture statistics from gradient orientations.

    Parameters
    ----------
    img : PIL.Image.Image
        A 200x200 drawing.

    Returns
    -------
    numpy.ndarray
        Five numbers: how much the gradients share one orientation over the
        whole image (1 for parallel stripes, 0 without a preferred one), the
        same for orientations modulo 90 degrees (high for checkers), the mean
        one-orientation score over 20x20 tiles (high for waves as well),
        the fraction of black and the number of black/white transitions per
        black pixel (high for small dots).
    """
    f = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), float)
    gy, gx = np.gradient(f)
    z = (gx + 1j * gy) ** 2  # doubled angle: opposite gradients agree
    m = np.abs(z)
    two_fold = abs(z.sum()) / m.sum()
    four_fold = abs((z**2 / np.maximum(m, 1e-12)).sum()) / m.sum()
    tiles_z = z.reshape(10, 20, 10, 20).sum(axis=(1, 3))
    tiles_m = m.reshape(10, 20, 10, 20).sum(axis=(1, 3))
    local = (np.abs(tiles_z) / np.maximum(tiles_m, 1e-12)).mean()
    a = _pixels(img) == 0
    ink = a.mean()
    edges = (a[:, 1:] != a[:, :-1]).mean() + (a[1:] != a[:-1]).mean()
    return np.array([two_fold, four_fold, local, ink, edges / max(ink, 1e-3)])


def _radial_profile(img: Image.Image) -> np.ndarray:
    """Rotation-invariant shape statistics of the black pixels.

    Parameters
    ----------
    img : PIL.Image.Image
        A drawing with some black.

    Returns
    -------
    numpy.ndarray
        Nine numbers: the histogram (8 bins, as fractions) of the black
        pixels' distances to their centroid over the largest such distance,
        and the anisotropy of their spread (smallest / largest eigenvalue of
        their covariance).
    """
    p = _dark_coords(img)
    p = p - p.mean(axis=0)
    d = np.hypot(*p.T)
    hist = np.histogram(d / d.max(), bins=8, range=(0.0, 1.0))[0] / len(d)
    ev = np.linalg.eigvalsh(np.cov(p.T))
    return np.append(hist, ev[0] / ev[1])


#: A cheap feature of each new kind, invariant to what varies within a family.
_FEATURES = {
    "symbols": _ink_box_8x8,  # centred symbols: where the strokes are in the frame
    "glyphs": _ink_box_8x8,  # upright glyphs: where the strokes are in the glyph's box
    "textures": _orientation_stats,  # random angle: orientation statistics
    "lines": _radial_profile,  # random rotation: radial profile and elongation
}


class _NearestCentroid:
    """Nearest family centroid of standardised features.

    Parameters
    ----------
    features : dict of str to numpy.ndarray
        Training features of each family, one row per drawing.
    """

    def __init__(self, features):
        stacked = np.vstack(list(features.values()))
        self.mean = stacked.mean(axis=0)
        self.scale = stacked.std(axis=0) + 1e-9
        self.families = list(features)
        self.centroids = np.array([self._z(x).mean(axis=0) for x in features.values()])

    def _z(self, x):
        return (np.asarray(x, float) - self.mean) / self.scale

    def distances(self, x):
        """Squared distances of the rows of ``x`` to every centroid, ``(n, families)``."""
        z = np.atleast_2d(self._z(x))
        return ((z[:, None, :] - self.centroids[None]) ** 2).sum(axis=-1)

    def predict(self, x):
        """The nearest family of one feature vector."""
        return self.families[int(np.argmin(self.distances(x)[0]))]


@functools.cache
def _family_features(kind, n=25, seed=2024):
    """Features of ``2 * n`` fresh drawings of every family of ``kind``.

    Parameters
    ----------
    kind : str
        One of :data:`NEW_KINDS`.
    n : int
        Drawings per family in each half (training, held out).
    seed : int
        Seed of the drawings.

    Returns
    -------
    dict of str to tuple of numpy.ndarray
        Per family, the training and the held-out feature rows.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for fam in samples.FAMILIES[kind]:
        x = np.array([_FEATURES[kind](samples.draw(kind, fam, rng)) for _ in range(2 * n)])
        out[fam] = (x[:n], x[n:])
    return out


def _family_model(kind):
    """A :class:`_NearestCentroid` trained on the first half of :func:`_family_features`."""
    return _NearestCentroid({f: train for f, (train, _) in _family_features(kind).items()})


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_every_pair_of_families_is_told_apart(kind):
    # A family drawn like another one (a generator ignoring its family)
    # would be told apart from it only half of the time, and the held-out
    # accuracy over all families would drop towards chance (1/6 to 1/8).
    feats = _family_features(kind)
    model = _family_model(kind)
    fams = model.families
    dist = {f: model.distances(held) for f, (_, held) in feats.items()}
    correct = sum(int((np.argmin(dist[f], axis=1) == i).sum()) for i, f in enumerate(fams))
    total = sum(len(held) for _, held in feats.values())
    # Ten seven-segment digits share most strokes (an 8 is a 0 with one more):
    # a nearest centroid tells them 0.75 of the time, against 0.1 by chance.
    least = 0.7 if kind == "symbols" else 0.8
    assert correct / total >= least, f"{kind}: held-out accuracy {correct / total:.2f}"
    for (i, f), (j, g) in itertools.combinations(enumerate(fams), 2):
        right = (dist[f][:, i] < dist[f][:, j]).sum() + (dist[g][:, j] < dist[g][:, i]).sum()
        accuracy = right / (len(dist[f]) + len(dist[g]))
        assert accuracy >= 0.7, f"{kind}: {f} vs {g} told apart {accuracy:.2f} of the time"


def test_new_families_separable_by_simple_features():
    def held_out(kind, fam, column=None):
        x = np.vstack(_family_features(kind)[fam])
        return x if column is None else x[:, column]

    # Glyphs: the middle of the box is empty for an L or a U, inked where
    # strokes cross; a T is heavy at the top, an L or a U at the bottom.
    def cells(fam):
        return held_out("glyphs", fam).reshape(-1, 8, 8)

    def centre(fam):
        return cells(fam)[:, 3:5, 3:5].mean(axis=(1, 2))

    def top_minus_bottom(fam):
        return cells(fam)[:, 0].mean(axis=1) - cells(fam)[:, -1].mean(axis=1)

    assert max(centre("L").max(), centre("U").max()) < 0.05
    assert min(centre(f).min() for f in ("N", "Z", "plus")) > 0.1
    assert max(top_minus_bottom("L").max(), top_minus_bottom("U").max()) < -0.05
    assert top_minus_bottom("T").min() > 0.05

    # Textures: hatching has one orientation, checkers two at right angles.
    hatch = held_out("textures", "hatch", 0)
    others = [held_out("textures", f, 0) for f in samples.FAMILIES["textures"] if f != "hatch"]
    assert hatch.min() > 0.9
    assert max(o.max() for o in others) < 0.75
    checker_ink = held_out("textures", "checker", 3)
    assert np.abs(checker_ink - 0.5).max() < 0.05
    checker_4 = held_out("textures", "checker", 1)
    assert checker_4.min() > 0.5
    assert max(held_out("textures", f, 1).max() for f in ("grain", "stipple")) < 0.2

    # Lines: open curves are long and thin, closed outlines are not.
    elongation = {f: held_out("lines", f, 8) for f in samples.FAMILIES["lines"]}
    assert max(elongation[f].max() for f in ("zigzag", "wave", "arrow")) < 0.3
    assert min(elongation[f].min() for f in ("circle", "triangle", "square", "star")) > 0.45
    # All of a circle's ink is far from its centre (over 3/4 of the largest
    # distance); much less of any other drawing's is.
    outer = {f: held_out("lines", f)[:, 6:8].sum(axis=1) for f in samples.FAMILIES["lines"]}
    assert outer["circle"].min() > 0.95
    assert max(v.max() for f, v in outer.items() if f != "circle") < 0.8


def test_symbols_are_told_apart_by_where_their_strokes_sit_in_the_frame():
    # A '2' mirrored left to right is a '5' (and a '6' turned half round a
    # '9'): what tells them apart is where the strokes are, not their shapes.
    rng = np.random.default_rng(11)
    model = _family_model("symbols")

    def flipped(fam, how):
        return [_ink_box_8x8(samples.draw("symbols", fam, rng).transpose(how)) for _ in range(20)]

    mirrored_2 = flipped("2", Image.Transpose.FLIP_LEFT_RIGHT)
    turned_6 = flipped("6", Image.Transpose.ROTATE_180)
    for moved, was, becomes in ((mirrored_2, "2", "5"), (turned_6, "6", "9")):
        named = [model.predict(x) for x in moved]
        assert named.count(becomes) >= 10 and named.count(was) <= 2, (was, named)
    # Centred: the ink's centre is near the frame's in every drawing.
    for fam in samples.FAMILIES["symbols"]:
        for _ in range(10):
            ys, xs = np.nonzero(_pixels(samples.draw("symbols", fam, rng)) < 128)
            assert abs(xs.mean() - 99.5) < 40 and abs(ys.mean() - 99.5) < 40, fam
