"""The report's 2-D map: where every image goes on the plane, and the map cache.

* :func:`embed_2d`: t-SNE (after PCA to 50 dimensions) or PCA to 2 dimensions.
* :func:`cached_2d`: the same, with t-SNE maps cached in ``<store root>/maps/``
  by the content of the features, so sorting again with another k costs no
  new map.
* :func:`map_thumbnail_picks` and :func:`to_canvas`: which points of the map
  get a thumbnail, and where they land on the picture.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..checks import check_choice, check_random_state
from ..fileio import atomic_write

#: With ``map_method="auto"``, sets larger than this get the PCA map (see
#: benchmarks/report_speed.py for the timings behind the number).
TSNE_MAX_IMAGES = 10_000
#: Maps of fewer images are made with one thread.
SMALL_MAP = 2000
#: The thumbnail map shows at most this many thumbnails.
MAP_THUMBS_MAX = 500
#: t-SNE maps are cached in ``<store root>/maps/``; bump when the map of the
#: same features changes.
MAP_VERSION = 1
MAP_CACHE_KEEP = 32
#: The folder of the cache, below the store root.
MAP_CACHE = "maps"

_LAYOUTS = ("tsne", "pca")


def resolve_map_method(map_method, n):
    """The layout ``map_method`` means for ``n`` images: ``"auto"`` becomes
    ``"tsne"`` up to :data:`TSNE_MAX_IMAGES` images and ``"pca"`` above."""
    if map_method == "auto":
        return "tsne" if n <= TSNE_MAX_IMAGES else "pca"
    return map_method


def embed_2d(Z, method="tsne", random_state=0):
    """2-D coordinates of feature vectors, for the map.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
    method : {"tsne", "pca"}
        ``"tsne"``: PCA to at most 50 dimensions, then t-SNE (perplexity 30,
        less for small sets); ``"pca"``: the first two principal components.
        Fewer than 5 samples always get PCA.
    random_state : int

    Returns
    -------
    numpy.ndarray of shape (n_samples, 2)

    Raises
    ------
    UsageError
        If ``method`` or ``random_state`` is not valid.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    check_choice("method", method, _LAYOUTS)
    random_state = check_random_state("random_state", random_state)
    Z = np.asarray(Z, np.float32)
    n = len(Z)
    xy = np.zeros((n, 2), np.float32)
    if n < 2:
        return xy
    if method == "tsne" and n >= 5:
        from threadpoolctl import threadpool_limits

        dims = min(50, n, Z.shape[1])
        Z50 = PCA(dims, random_state=random_state).fit_transform(Z) if Z.shape[1] > dims else Z
        tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto",
                    random_state=random_state)
        # Small sets gain nothing from threads, and OpenMP's spinning threads
        # cost many times the work on a busy machine.
        with threadpool_limits(1 if n < SMALL_MAP else None):
            return tsne.fit_transform(Z50).astype(np.float32)
    dims = min(2, n, Z.shape[1])
    xy[:, :dims] = PCA(dims, random_state=random_state).fit_transform(Z)
    return xy


def map_cache_dir(store_root):
    """Where the maps of the features in ``store_root`` are cached (``None``: no cache)."""
    return Path(store_root) / MAP_CACHE if store_root else None


def cached_2d(Z, method="tsne", random_state=0, cache_dir=None):
    """:func:`embed_2d`, with t-SNE results cached by the content of ``Z``.

    Sorting the same features again with another k gives the same ``Z``, so
    the slow t-SNE runs once. A cache that cannot be read or written is
    ignored.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
    method : {"tsne", "pca"}
    random_state : int
    cache_dir : path-like, optional
        Where the maps are kept; the :data:`MAP_CACHE_KEEP` most recently
        used stay. ``None``: no cache.

    Returns
    -------
    numpy.ndarray of shape (n_samples, 2)
    """
    Z = np.ascontiguousarray(Z, np.float32)
    if cache_dir is None or method != "tsne":
        return embed_2d(Z, method, random_state)
    key = hashlib.blake2b(f"{MAP_VERSION}:{method}:{random_state}:{Z.shape}".encode(),
                          digest_size=16)
    key.update(Z.tobytes())
    path = Path(cache_dir) / f"{method}-{key.hexdigest()}.npy"
    try:
        xy = np.load(path, allow_pickle=False)
        if xy.shape == (len(Z), 2) and np.isfinite(xy).all():
            os.utime(path)
            return xy.astype(np.float32)
    except (OSError, ValueError):
        pass
    xy = embed_2d(Z, method, random_state)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.save(fh, xy))
        old = sorted(path.parent.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[MAP_CACHE_KEEP:]:
            stale.unlink()
    except OSError:
        pass
    return xy


def to_canvas(xy, size, margin):
    """Map coordinates as pixel positions on a ``size`` x ``size`` picture.

    The points fill the square inside ``margin`` pixels; y points up, as on
    the scatter plot.

    Parameters
    ----------
    xy : array-like of shape (n, 2)
    size, margin : int

    Returns
    -------
    numpy.ndarray of shape (n, 2)
        Float pixel positions ``(x, y)``.
    """
    xy = np.asarray(xy, np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    pos = margin + (xy - lo) / span * (size - 2 * margin)
    pos[:, 1] = size - pos[:, 1]
    return pos


def map_thumbnail_picks(xy, cell, canvas, max_images=MAP_THUMBS_MAX, random_state=0):
    """Which points get a thumbnail on the map: at most one per ``cell`` square.

    Parameters
    ----------
    xy : numpy.ndarray of shape (n, 2)
        Positions in canvas pixels.
    cell : int
        Thumbnail size in pixels.
    canvas : int
        The picture's size in pixels (the squares tile it).
    max_images : int
    random_state : int
        Which point of a crowded square wins.

    Returns
    -------
    numpy.ndarray
        Indices into ``xy``.
    """
    order = np.random.default_rng(random_state).permutation(len(xy))
    taken, picks = set(), []
    for i in order:
        key = (int(xy[i, 0] // cell), int(xy[i, 1] // cell))
        if key not in taken:
            taken.add(key)
            picks.append(i)
            if len(picks) >= max_images:
                break
    return np.asarray(picks, np.int64)
