"""The default near-duplicate threshold on real features (issue 13).

Generated images (featclust.samples, dots and silhouettes), each base with
copies resaved as JPEG (quality 75 and 50) and with noise, against distinct
images of the same shape families, decoded by featclust's decoder and
embedded by the real VGG16 at the default layer and pooling (random weights,
as every test). At :data:`NEAR_DUPLICATE` every planted copy is grouped with
its original and no group mixes two bases. (Shifted or scaled copies are not
separable from distinct images with random weights: benchmarks/near_duplicates.py.)
"""

import io

import numpy as np
import pytest
from PIL import Image

from featclust import samples
from featclust.images import decode
from featclust.search import NEAR_DUPLICATE, near_duplicate_groups, top_similar

FAMILIES = [
    ("dots", "ring"),
    ("dots", "grid"),
    ("dots", "clusters"),
    ("dots", "scatter"),
    ("silhouettes", "disk"),
    ("silhouettes", "square"),
]


def _bytes(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noisy(im, sigma, rng):
    a = np.asarray(im, np.float32) + rng.normal(0, sigma, (im.height, im.width))
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def planted_set(embedder):
    rng = np.random.default_rng(7)
    files, base = [], []
    for b, (kind, family) in enumerate(FAMILIES * 2):
        draw = samples.draw_dots if kind == "dots" else samples.draw_silhouette
        im = draw(family, rng, 200)
        files.append(_bytes(im, "PNG"))
        base.append(b)
        if b < len(FAMILIES):  # the first image of each family gets copies
            for data in (
                _bytes(im, "JPEG", quality=75),
                _bytes(im, "JPEG", quality=50),
                _bytes(_noisy(im, 8, rng), "PNG"),
            ):
                files.append(data)
                base.append(b)
    gray = np.stack([decode(data) for data in files])
    return embedder.embed(gray), np.array(base)


def test_default_threshold_finds_every_planted_copy_and_no_false_group(planted_set):
    F, base = planted_set
    groups = near_duplicate_groups(F)
    found = sorted(sorted(r for r, _ in g) for g in groups)
    planted = sorted(np.flatnonzero(base == b).tolist() for b in range(len(FAMILIES)))
    assert found == planted
    assert all(s >= NEAR_DUPLICATE for g in groups for _, s in g)


def test_a_copy_finds_its_original_first(planted_set):
    F, base = planted_set
    copies = [i for i in range(len(F)) if i > 0 and base[i] == base[i - 1]]
    idx, sims = top_similar(F, F[copies], top=2)
    for c, row in zip(copies, idx):
        assert row[0] == c and base[row[1]] == base[c]
