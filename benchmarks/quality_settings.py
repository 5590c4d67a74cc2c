"""The settings benchmarks/quality.py compares, and how each is computed.

Representations (:class:`FeatureSpec`: blocks, pooling, spatial grid) are
derived from cached VGG16 block maps exactly as
:class:`featclust.embed.Embedder` computes them; post-processing chains
(:class:`PostSpec`) are featclust's own :class:`featclust.reduce.Reducer`
after an optional signed square root; the pixel baselines work on the raw
200x200 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featclust.pooling import GEM_P, grid_cells, layer_blocks

EPS = 1e-6


@dataclass(frozen=True)
class FeatureSpec:
    """Blocks, pooling and spatial grid: one :class:`~featclust.embed.Embedder` setting."""

    blocks: tuple = (4,)
    pooling: str = "max"
    grid: int = 1
    #: the Embedder's ``grid_weight``: the cells' part against the whole map's
    grid_weight: float = 1.0
    #: the blocks the cells are pooled from; (): ``blocks`` (not an Embedder setting)
    cell_blocks: tuple = ()
    #: weight of a pixel view (28x28 ink thumbnail, PCA 32, L2) joined to the
    #: L2-normalised CNN vector; 0: none (not an Embedder setting)
    pixels: float = 0.0

    @property
    def name(self):
        return (
            f"b{''.join(map(str, self.blocks))} {self.pooling}"
            + (f" g{self.grid}" if self.grid > 1 else "")
            + (f"x{self.grid_weight:g}" if self.grid > 1 and self.grid_weight != 1 else "")
            + (f"(b{''.join(map(str, self.cell_blocks))})" if self.cell_blocks else "")
            + (f" +px{self.pixels:g}" if self.pixels else "")
        )

    @property
    def offered(self):
        """Whether featclust's Embedder can compute it."""
        return not (self.cell_blocks or self.pixels)

    def embedder_params(self):
        return {
            "layer": "+".join(f"block{b}" for b in self.blocks),
            "pooling": self.pooling,
            "grid": self.grid,
            "grid_weight": self.grid_weight,
        }


@dataclass(frozen=True)
class PostSpec:
    """What happens to the vectors between the store and k-means."""

    sqrt: bool = False
    normalize: bool = False
    pca: int | None = None
    whiten: bool = False
    #: components = max(8, rows // pca_per) instead of ``pca``; 0: off
    pca_per: int = 0
    #: spectral embedding (k dimensions) of the ``graph``-nearest-neighbour graph; 0: off
    graph: int = 0

    @property
    def name(self):
        parts = (["sqrt"] if self.sqrt else []) + (["L2"] if self.normalize else [])
        if self.pca or self.pca_per:
            n = self.pca if self.pca else f"N/{self.pca_per}"
            parts.append(f"pca{n}{'w' if self.whiten else ''}")
            if self.normalize:
                parts.append("L2")
        if self.graph:
            parts.append(f"knn{self.graph} spectral")
        return " ".join(parts) or "raw"

    @property
    def offered(self):
        """Whether featclust's FeatureKMeans can be set to it."""
        return not (self.pca_per or self.graph)


OLD_DEFAULT = (FeatureSpec((5,), "avg"), PostSpec())
#: featclust's default before this benchmark chose (k-means with 4 restarts then).
PREVIOUS_DEFAULT = (FeatureSpec((4,), "max"), PostSpec())
#: featclust's default before the centred symbols joined the benchmark (n_init 16).
DEFAULT_BEFORE_SYMBOLS = (FeatureSpec((4, 5), "max"), PostSpec(normalize=True, pca=32))


def shipped_default():
    """The (FeatureSpec, PostSpec, n_init) featclust's Embedder and FeatureKMeans default to."""
    import inspect

    from featclust.cluster import FeatureKMeans
    from featclust.embed import Embedder

    e = {k: p.default for k, p in inspect.signature(Embedder).parameters.items()}
    c = {k: p.default for k, p in inspect.signature(FeatureKMeans).parameters.items()}
    blocks = tuple(int(b[-1]) for b in layer_blocks(e["layer"]))
    return (
        FeatureSpec(blocks, e["pooling"], e["grid"], e["grid_weight"]),
        PostSpec(c.get("sqrt", False), c["normalize"], c["pca"], c["whiten"]),
        c["n_init"],
    )


def feature_grid():
    """Every representation the harness derives from the cached maps."""
    specs = [FeatureSpec((b,), p) for b in (3, 4, 5) for p in ("avg", "max", "gem")]
    specs += [FeatureSpec((5,), "flatten")]
    specs += [FeatureSpec((4, 5), p) for p in ("avg", "max", "gem")]
    specs += [FeatureSpec((3, 4, 5), p) for p in ("max", "gem")]
    specs += [
        FeatureSpec(b, p, 2)
        for b, p in (((4,), "max"), ((4,), "gem"), ((5,), "max"), ((4, 5), "max"), ((4, 5), "gem"))
    ]
    specs += [
        FeatureSpec(b, p, 4)
        for b, p in (((4,), "max"), ((4,), "gem"), ((3,), "max"), ((4, 5), "max"))
    ]
    return specs


def post_grid(pca_dims=(32, 64, 128)):
    """Every post-processing chain."""
    posts = [
        PostSpec(),
        PostSpec(normalize=True),
        PostSpec(sqrt=True, normalize=True),
        PostSpec(pca=64),
    ]
    posts += [PostSpec(normalize=True, pca=n, whiten=w) for n in pca_dims for w in (False, True)]
    posts += [PostSpec(sqrt=True, normalize=True, pca=64, whiten=w) for w in (False, True)]
    return posts


# ---------------------------------------------------------------- representations (numpy)


def _pool(m, pooling):
    if pooling == "avg":
        return m.mean(axis=(1, 2))
    if pooling == "max":
        return m.max(axis=(1, 2))
    if pooling == "gem":
        return np.mean(np.maximum(m, EPS) ** GEM_P, axis=(1, 2)) ** (1.0 / GEM_P)
    return m.reshape(len(m), -1)


def _l2(x):
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _pooled(maps, blocks, pooling, grid, cells_only=False):
    parts = []
    for b in blocks:
        m = np.asarray(maps[b], dtype=np.float32)
        levels = grid_cells(m.shape[1], grid)[1 if cells_only else 0 :]
        cells = [(r0, r1, c0, c1) for ranges in levels for r0, r1 in ranges for c0, c1 in ranges]
        v = np.concatenate([_pool(m[:, r0:r1, c0:c1], pooling) for r0, r1, c0, c1 in cells], axis=1)
        parts.append(_l2(v) if len(blocks) > 1 else v)
    return np.concatenate(parts, axis=1).astype(np.float32)


def pixel_view(thumbs, dims=32):
    """The pixel view: 28x28 ink thumbnails (``(n, 28, 28)`` uint8), PCA ``dims``, L2."""
    from sklearn.decomposition import PCA

    T = 1.0 - np.asarray(thumbs, dtype=np.float32).reshape(len(thumbs), -1) / 255.0
    n = min(dims, len(T), T.shape[1])
    return _l2(PCA(n, random_state=0).fit_transform(T)).astype(np.float32)


def derive(maps, spec):
    """Feature vectors of one :class:`FeatureSpec` from cached block maps, as the Embedder's.

    Parameters
    ----------
    maps : dict
        ``{block: (n, h, w, c) float32}``, and ``"thumb"``: ``(n, 28, 28)`` uint8
        thumbnails when ``spec.pixels`` is set.
    spec : FeatureSpec

    Returns
    -------
    numpy.ndarray
        ``(n, dim)`` float32.
    """
    X = _pooled(maps, spec.blocks, spec.pooling, 1)
    if spec.grid == 1 and not spec.pixels:
        return X
    parts = [_l2(X)]
    if spec.grid > 1:
        cells = _pooled(maps, spec.cell_blocks or spec.blocks, spec.pooling, spec.grid, True)
        parts.append(spec.grid_weight * _l2(cells))
    if spec.pixels:
        parts.append(spec.pixels * pixel_view(maps["thumb"]))
    return np.concatenate(parts, axis=1).astype(np.float32)


def reduce(X, post, k=None):
    """Signed square root, then featclust's Reducer (L2, PCA at most the rows, L2).

    With ``post.graph``, the result is then replaced by the ``k``-dimensional
    spectral embedding of its ``post.graph``-nearest-neighbour graph.
    """
    from featclust.reduce import Reducer

    if post.sqrt:
        X = np.sign(X) * np.sqrt(np.abs(X))
    pca = max(8, len(X) // post.pca_per) if post.pca_per else post.pca
    Z = Reducer(pca, post.whiten, post.normalize, random_state=0).fit_transform(X)
    if post.graph:
        import warnings

        from sklearn.manifold import SpectralEmbedding

        # A graph in pieces is what a well-separated folder gives: not worth a warning.
        warnings.filterwarnings("ignore", "Graph is not fully connected", UserWarning)
        Z = SpectralEmbedding(
            n_components=k,
            affinity="nearest_neighbors",
            n_neighbors=min(post.graph, len(Z) - 1),
            random_state=0,
        ).fit_transform(Z)
    return Z


def position_grid():
    """The representations that keep where things are (issue: centred symbols)."""
    specs = [FeatureSpec((4, 5), "max", 2, w) for w in (0.4, 0.45, 0.5, 0.55, 0.6, 0.7)]
    specs += [FeatureSpec((4, 5), "max", 2, w, cell_blocks=(5,)) for w in (0.6, 0.7, 0.8, 0.9)]
    specs += [FeatureSpec((4, 5), "max", 2, 0.5, cell_blocks=(4,))]
    specs += [FeatureSpec((4,), "max", 2, w) for w in (0.5, 0.7)]
    specs += [FeatureSpec((4, 5), "max", 4, w) for w in (0.3, 0.4, 0.5, 0.6, 0.7)]
    specs += [FeatureSpec((4, 5), "max", 2, w) for w in (0.8, 0.9)]
    specs += [FeatureSpec((4,), "max", 4, w) for w in (0.35, 0.4, 0.45, 0.5)]
    specs += [FeatureSpec((4, 5), p, 4, 0.5) for p in ("gem", "avg")]
    specs += [FeatureSpec((4, 5), "max", 1, pixels=w) for w in (0.25, 0.35)]
    specs += [FeatureSpec((4, 5), "max", 2, 0.5, pixels=0.25)]
    return specs


def position_posts():
    """The post-processing chains the position representations are scored with."""
    return [
        PostSpec(normalize=True, pca=32),
        PostSpec(normalize=True, pca=64),
        PostSpec(normalize=True, pca=128),
        PostSpec(normalize=True, pca_per=16, whiten=True),
        PostSpec(normalize=True, pca=32, graph=10),
    ]


def hu_moments(img):
    """log10 |Hu moments| of the dark pixels: invariant to shift, scale, rotation, mirror."""
    f = (np.asarray(img) < 128).astype(np.float64)
    m00 = f.sum()
    if m00 == 0:
        return np.zeros(7)
    y, x = np.mgrid[: f.shape[0], : f.shape[1]]
    x = x - (x * f).sum() / m00
    y = y - (y * f).sum() / m00

    def eta(p, q):
        return (x**p * y**q * f).sum() / m00 ** (1 + (p + q) / 2)

    n20, n02, n11 = eta(2, 0), eta(0, 2), eta(1, 1)
    n30, n03, n21, n12 = eta(3, 0), eta(0, 3), eta(2, 1), eta(1, 2)
    a, b = n30 + n12, n21 + n03
    h = [
        n20 + n02,
        (n20 - n02) ** 2 + 4 * n11**2,
        (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2,
        a**2 + b**2,
        (n30 - 3 * n12) * a * (a**2 - 3 * b**2) + (3 * n21 - n03) * b * (3 * a**2 - b**2),
        (n20 - n02) * (a**2 - b**2) + 4 * n11 * a * b,
        (3 * n21 - n03) * a * (a**2 - 3 * b**2) - (n30 - 3 * n12) * b * (3 * a**2 - b**2),
    ]
    return np.log10(np.abs(np.array(h)) + 1e-30)


PIXEL_BASELINES = ("pixels SVD100", "thumb32 SVD50 L2", "Hu moments")


def pixel_features(raw):
    """``{baseline name: features}`` of the raw 200x200 pixels."""
    from PIL import Image
    from sklearn.decomposition import TruncatedSVD

    n = len(raw)
    X = raw.reshape(n, -1).astype(np.float32) / 255.0
    thumbs = np.stack(
        [
            np.asarray(Image.fromarray(r).resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
            / 255.0
            for r in raw
        ]
    ).reshape(n, -1)
    H = np.stack([hu_moments(r) for r in raw])
    H = (H - H.mean(axis=0)) / np.where(H.std(axis=0) > 0, H.std(axis=0), 1.0)
    return {
        "pixels SVD100": TruncatedSVD(min(100, n - 1), random_state=0).fit_transform(X),
        "thumb32 SVD50 L2": _l2(TruncatedSVD(min(50, n - 1), random_state=0).fit_transform(thumbs)),
        "Hu moments": H,
    }
