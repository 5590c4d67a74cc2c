"""The report's 2-D map: where every image goes on the plane, and the map cache.

* :func:`make_map`: the map the report shows, with the fall-backs for degenerate
  data (identical images, too few distinct ones, non-finite features) and the
  note saying why.
* :func:`embed_2d`: openTSNE (FFT-accelerated, after PCA to 50 dimensions) or
  PCA to 2 dimensions.
* :func:`cached_2d`: the same, with t-SNE maps cached in ``<store root>/maps/``
  by the content of the features, so sorting again with another k costs no
  new map. The cache deletes only files it can prove it wrote: names with
  a check of its own, in a folder it created and marked.
* :func:`map_thumbnail_picks` and :func:`to_canvas`: which points of the map
  get a thumbnail, and where they land on the picture.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from threadpoolctl import threadpool_limits

from ..checks import check_choice, check_random_state
from ..fileio import atomic_write

#: With ``map_method="auto"``, sets larger than this get the PCA map. openTSNE
#: maps 32,000 images in about 40 s on 2 cores (benchmarks/report_speed.py), so
#: 200,000 cost a few minutes, still a fraction of embedding them.
TSNE_MAX_IMAGES = 200_000
#: t-SNE needs at least this many distinct feature vectors; fewer get PCA.
TSNE_MIN_DISTINCT = 5
#: From this many distinct images on, openTSNE's FFT-accelerated gradients;
#: below, Barnes-Hut (FFT has a fixed cost of about 10 s, more than a small map).
FFT_MIN_IMAGES = 10_000
#: Maps of fewer images are made with one thread.
SMALL_MAP = 2000
#: The thumbnail map shows at most this many thumbnails.
MAP_THUMBS_MAX = 500
#: t-SNE maps are cached in ``<store root>/maps/``; bump when the map of the
#: same features changes (2: openTSNE instead of scikit-learn's t-SNE).
MAP_VERSION = 2
MAP_CACHE_KEEP = 32
#: The folder of the cache, below the store root.
MAP_CACHE = "maps"
#: The file that marks a cache folder featclust created; without it nothing
#: in the folder is read, written or deleted.
MAP_CACHE_MARKER = ".featclust-map-cache"
_MARKER_TEXT = (
    "featclust map cache: files named tsne-<key>-<check>.npy here are featclust's "
    "(the check is a hash of the key)\n"
)
_CACHE_NAME = re.compile(r"tsne-([0-9a-f]{32})-([0-9a-f]{8})\.npy")


def _cache_name(key):
    """The file name of the map with hex ``key``: the key and a check only featclust writes."""
    check = hashlib.blake2b(f"featclust-map:{key}".encode(), digest_size=4).hexdigest()
    return f"tsne-{key}-{check}.npy"


def _is_cache_name(name):
    m = _CACHE_NAME.fullmatch(name)
    return bool(m) and _cache_name(m.group(1)) == name


_LAYOUTS = ("tsne", "pca")


def resolve_map_method(map_method: str, n: int) -> str:
    """The layout ``map_method`` means for ``n`` images: ``"auto"`` becomes
    ``"tsne"`` up to :data:`TSNE_MAX_IMAGES` images and ``"pca"`` above."""
    if map_method == "auto":
        return "tsne" if n <= TSNE_MAX_IMAGES else "pca"
    return map_method


def _distinct(Z):
    """``(unique rows, inverse)`` of ``Z`` (``-0.0`` and ``0.0`` are the same)."""
    uniq, inverse = np.unique(np.asarray(Z) + 0.0, axis=0, return_inverse=True)
    return uniq, np.asarray(inverse).reshape(-1)


def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def map_plan(Z: np.ndarray, map_method: str = "auto") -> tuple[str | None, str | None]:
    """Which map ``Z`` gets, and why when it is not the one asked for.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
    map_method : {"auto", "tsne", "pca"}

    Returns
    -------
    method : {"tsne", "pca"} or None
        ``None``: no map (no images, identical features, non-finite values).
    note : str or None
        Said on the page when the map is not the t-SNE map, or left out.
    """
    Z = np.asarray(Z)
    n = len(Z)
    if n == 0:
        return None, None
    if not np.isfinite(Z).all():
        return None, "some features are not finite numbers: no 2-D map"
    n_distinct = len(_distinct(Z)[0]) if n > 1 else 1
    if n_distinct < 2:
        return None, (
            f"all {_plural(n, 'image')} have identical features: no 2-D map "
            "(it would be a single point)"
        )
    method = resolve_map_method(map_method, n)
    if method == "tsne" and n_distinct < TSNE_MIN_DISTINCT:
        return "pca", (
            f"only {_plural(n_distinct, 'distinct feature vector')} among "
            f"{_plural(n, 'image')}: the map is PCA, t-SNE needs at least "
            f"{TSNE_MIN_DISTINCT}"
        )
    if map_method == "auto" and method == "pca":
        return "pca", (
            f"{n} images are more than the {TSNE_MAX_IMAGES} the t-SNE map is made "
            "for by default: the map is PCA (map_method='tsne', on the command line "
            "featclust report --map tsne, makes the t-SNE map)"
        )
    return method, None


def _n_threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _tsne(Z50, random_state):
    """openTSNE on rows that are all distinct (at least :data:`TSNE_MIN_DISTINCT`)."""
    from openTSNE import TSNE  # heavy (numba), only when a t-SNE map is made

    n = len(Z50)
    # Small sets gain nothing from threads, and OpenMP's spinning threads cost
    # many times the work on a busy machine.
    threads = 1 if n < SMALL_MAP else _n_threads()
    tsne = TSNE(
        2,
        perplexity=min(30.0, (n - 1) / 3),
        initialization="pca",
        negative_gradient_method="bh" if n < FFT_MIN_IMAGES else "fft",
        n_jobs=threads,
        random_state=random_state,
        verbose=False,
    )
    with threadpool_limits(threads):
        return np.asarray(tsne.fit(np.asarray(Z50, np.float64)), np.float32)


def embed_2d(Z: np.ndarray, method: str = "tsne", random_state: int = 0) -> np.ndarray:
    """2-D coordinates of feature vectors, for the map.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
    method : {"tsne", "pca"}
        ``"tsne"``: PCA to at most 50 dimensions, then openTSNE (FFT-accelerated
        gradients from :data:`FFT_MIN_IMAGES` rows, Barnes-Hut below;
        perplexity 30, less for small sets) on the distinct rows;
        identical rows share one place. Fewer than :data:`TSNE_MIN_DISTINCT`
        distinct rows get PCA. ``"pca"``: the first two principal components.
        Identical rows (or non-finite ones) all get ``(0, 0)``.
    random_state : int

    Returns
    -------
    numpy.ndarray of shape (n_samples, 2)

    Raises
    ------
    UsageError
        If ``method`` or ``random_state`` is not valid.
    """
    check_choice("method", method, _LAYOUTS)
    random_state = check_random_state("random_state", random_state)
    Z = np.asarray(Z, np.float32)
    n = len(Z)
    xy = np.zeros((n, 2), np.float32)
    if n < 2 or Z.ndim != 2 or not np.isfinite(Z).all():
        return xy
    uniq, inverse = _distinct(Z)
    d = len(uniq)
    if d < 2:
        return xy
    if method == "tsne" and d >= TSNE_MIN_DISTINCT:
        dims = min(50, d, uniq.shape[1])
        U50 = (
            PCA(dims, random_state=random_state).fit_transform(uniq)
            if uniq.shape[1] > dims
            else uniq
        )
        mapped = _tsne(U50, random_state)[inverse]
        if np.isfinite(mapped).all():
            return mapped
        # rows that differ by rounding only: t-SNE's affinities are undefined
    dims = min(2, d, Z.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        xy[:, :dims] = PCA(dims, random_state=random_state).fit_transform(Z)
    return np.where(np.isfinite(xy), xy, 0.0).astype(np.float32)


def map_cache_dir(store_root: str | os.PathLike | None) -> Path | None:
    """Where the maps of the features in ``store_root`` are cached (``None``: no cache)."""
    return Path(store_root) / MAP_CACHE if store_root else None


def _own_cache(cache_dir):
    """``True`` if ``cache_dir`` is a map cache featclust created (making it if it is
    not there); a folder without featclust's marker is left alone."""
    cache_dir = Path(cache_dir)
    marker = cache_dir / MAP_CACHE_MARKER
    try:
        cache_dir.mkdir(parents=True)
    except FileExistsError:
        try:
            return marker.read_text(encoding="utf-8") == _MARKER_TEXT
        except (OSError, ValueError):
            return False
    atomic_write(marker, lambda fh: fh.write(_MARKER_TEXT), mode="w")
    return True


def _evict(cache_dir, keep):
    """Delete all but the ``keep`` most recently used maps; only featclust's own names."""
    mine = []
    for entry in os.scandir(cache_dir):
        if _is_cache_name(entry.name) and entry.is_file(follow_symlinks=False):
            mine.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
    mine.sort(reverse=True)
    for _, path in mine[keep:]:
        try:
            os.unlink(path)
        except OSError:
            pass


def cached_2d(
    Z: np.ndarray,
    method: str = "tsne",
    random_state: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """:func:`embed_2d`, with t-SNE results cached by the content of ``Z``.

    Sorting the same features again with another k gives the same ``Z``, so
    the slow t-SNE runs once. A cache that cannot be read or written is
    ignored, and so is a ``cache_dir`` featclust did not create (it has no
    :data:`MAP_CACHE_MARKER`): files there are never read, written or deleted.

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
    try:
        own = _own_cache(cache_dir)
    except OSError:
        own = False
    if not own:
        return embed_2d(Z, method, random_state)
    key = hashlib.blake2b(
        f"{MAP_VERSION}:{method}:{random_state}:{Z.shape}".encode(), digest_size=16
    )
    key.update(Z.tobytes())
    path = Path(cache_dir) / _cache_name(key.hexdigest())
    try:
        xy = np.load(path, allow_pickle=False)
        if xy.shape == (len(Z), 2) and np.isfinite(xy).all():
            os.utime(path)
            return xy.astype(np.float32)
    except (OSError, ValueError):
        pass
    xy = embed_2d(Z, method, random_state)
    try:
        atomic_write(path, lambda fh: np.save(fh, xy))
        _evict(cache_dir, MAP_CACHE_KEEP)
    except OSError:
        pass
    return xy


def make_map(
    Z: np.ndarray,
    map_method: str = "auto",
    random_state: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray | None, str | None, str | None]:
    """The report's map of ``Z``: :func:`map_plan`, then :func:`cached_2d`.

    Returns
    -------
    xy : numpy.ndarray of shape (n_samples, 2) or None
        ``None`` when there is no map.
    method : {"tsne", "pca"} or None
    note : str or None
        Why the map is not the one asked for (see :func:`map_plan`).
    """
    method, note = map_plan(Z, map_method)
    if method is None:
        return None, None, note
    return cached_2d(Z, method, random_state, cache_dir), method, note


def to_canvas(xy: np.ndarray, size: int, margin: int) -> np.ndarray:
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


def map_thumbnail_picks(
    xy: np.ndarray, cell: int, canvas: int, max_images: int = MAP_THUMBS_MAX, random_state: int = 0
) -> np.ndarray:
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


def place_new_points(
    Z_mapped: np.ndarray, xy_mapped: np.ndarray, Z_new: np.ndarray, n_neighbors: int = 5
) -> np.ndarray:
    """Positions on an existing map for images it does not have: the mean position of
    each one's ``n_neighbors`` nearest mapped images in feature space.

    Parameters
    ----------
    Z_mapped : array-like of shape (n_mapped, n_features)
    xy_mapped : array-like of shape (n_mapped, 2)
        Their places on the map.
    Z_new : array-like of shape (n_new, n_features)
    n_neighbors : int

    Returns
    -------
    numpy.ndarray of shape (n_new, 2)
    """
    Z_mapped = np.asarray(Z_mapped, np.float32)
    xy_mapped = np.asarray(xy_mapped, np.float32)
    Z_new = np.asarray(Z_new, np.float32)
    k = min(n_neighbors, len(Z_mapped))
    sq = np.sum(Z_mapped**2, axis=1)
    out = np.empty((len(Z_new), 2), np.float32)
    for start in range(0, len(Z_new), 256):  # bounded memory: 256 x n_mapped distances
        block = Z_new[start : start + 256]
        d2 = sq[None, :] - 2 * block @ Z_mapped.T
        near = np.argpartition(d2, k - 1, axis=1)[:, :k]
        out[start : start + len(block)] = xy_mapped[near].mean(axis=1)
    return out
