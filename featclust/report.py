"""The report of a sorted folder: montages, an overview, a 2-D map and ``index.html``.

Everything goes into ``OUT_DIR/report/``, never into the cluster folders::

    report/index.html                  static page, relative links only
    report/overview.png                the most central images of every cluster
    report/map.png, map.csv            2-D map of all images, coloured by cluster
    report/map_thumbnails.png          the same map with small thumbnails
    report/kscan.png                   the k-scan plot, when scan-k has been run
    report/summary.csv                 size, distances and silhouette of every cluster
    report/montages/cluster_XX.png     up to 64 members, closest to the centre first
    report/montages/cluster_XX.csv     those members, in the montage's order

The montage order comes from ``labels.csv`` (distance to the cluster centre
in the clustering space). The map and the scores need the features: they are
passed in by :func:`featclust.pipeline.sort_folder`, or read back from the
feature store recorded in ``featclust.json``. matplotlib (Agg backend) is
imported only when the map is drawn.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from . import images
from .errors import StoreLockedError, UsageError
from .sort import OutputFolder, cluster_dir_name, read_labels_csv

REPORT_DIR = "report"
MAP_METHODS = ("auto", "tsne", "pca")
#: With ``map_method="auto"``, sets larger than this get the PCA map (see
#: benchmarks/report_speed.py for the timings behind the number).
TSNE_MAX_IMAGES = 10_000
#: Maps of fewer images are made with one thread.
SMALL_MAP = 2000
MONTAGE_MAX = 64
MONTAGE_COLUMNS = 8
MONTAGE_TILE = 96
OVERVIEW_PER_CLUSTER = 8
OVERVIEW_TILE = 64
MAP_THUMBS_MAX = 500
MAP_THUMB = 56
#: Silhouette scores are computed on a sample of at most this many images.
SILHOUETTE_SAMPLE = 4000
#: Files ``featclust scan-k`` may leave in an output folder; the first found is shown.
KSCAN_FILES = ("kscan.png", "kscan.csv")
#: t-SNE maps are cached in ``<store root>/maps/`` (a new k costs no new map);
#: bump when the map of the same features changes.
MAP_VERSION = 1
MAP_CACHE_KEEP = 32

_WHITE = (255, 255, 255)
_TEXT = (20, 20, 20)


@dataclass
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    index : pathlib.Path
        The ``index.html`` page.
    files : list of str
        Every file written, relative to the output folder.
    map_method : str or None
        ``"tsne"`` or ``"pca"``; ``None`` when the features were not available.
    members : dict of int to list of str
        The images shown in each cluster's montage, in montage order.
    warnings : list of str
        What was left out, and why (for example a feature store that is gone).
    """

    index: Path
    files: list
    map_method: str | None
    members: dict
    warnings: list = field(default_factory=list)


@dataclass
class _Cluster:
    label: int
    folder: str
    paths: list      # all members, closest to the centre first
    distances: np.ndarray
    ranks: np.ndarray  # which members the montage shows (indices into paths)
    silhouette: float | None = None


def write_report(out_dir, features=None, model=None, map_method="auto", seed=0,
                 progress=None):
    """Write (or re-write) ``OUT_DIR/report/`` for a folder made by ``sort``.

    Files of an earlier report are removed first; every new file is recorded
    in the folder's marker before it is written, so files put there by
    anyone else are never touched.

    Parameters
    ----------
    out_dir : path-like
        An output folder written by :func:`featclust.sort_folder`.
    features : numpy.ndarray, optional
        Features of the images in ``labels.csv`` order. Read from the feature
        store recorded in ``featclust.json`` when not given; without them
        the report has no map and no silhouette scores (see ``warnings``).
    model : featclust.FeatureKMeans, optional
        The fitted model; read from ``model.npz`` when not given. Its
        ``reduce`` maps the features into the clustering space.
    map_method : {"auto", "tsne", "pca"}
        ``"tsne"``: PCA to 50 dimensions, then t-SNE; ``"pca"``: PCA to 2
        dimensions, much faster for very large sets; ``"auto"``: t-SNE up to
        :data:`TSNE_MAX_IMAGES` images, PCA above.
    seed : int
        Random state of t-SNE and of the sampling.
    progress : callable, optional
        ``progress(description, total)`` returning an object with
        ``update(n)`` and ``close()`` (a ``tqdm`` does).

    Returns
    -------
    ReportResult

    Raises
    ------
    UsageError
        If ``out_dir`` is not a complete featclust output or ``map_method``
        is unknown.
    OutputError
        If a file cannot be written.
    """
    check_map_method(map_method)
    out_dir = Path(out_dir)
    info, paths, labels, dists = _read_output(out_dir)
    n_clusters = int(info.get("clustering", {}).get("n_clusters") or labels.max() + 1)
    warnings = []
    if features is None:
        features, problem = load_features(info, paths)
        if problem:
            warnings.append(problem + "; the report has no 2-D map and no silhouette scores")
    elif len(features) != len(paths):
        raise UsageError(f"features has {len(features)} rows but labels.csv lists "
                         f"{len(paths)} images")
    if features is not None and model is None and (out_dir / "model.npz").is_file():
        from .cluster import FeatureKMeans

        model, _ = FeatureKMeans.load(out_dir / "model.npz")
    if features is not None and model is not None and model.n_features_in_ != features.shape[1]:
        model = None

    clusters = _clusters(paths, labels, dists, n_clusters)
    kscan = _find_kscan(out_dir)
    has_map = features is not None and len(paths) > 0
    files = _planned_files(clusters, has_map, kscan)

    out = OutputFolder(out_dir)
    _remove_old_report(out)
    out.claim(files, status=out.previous.get("status", "complete"))

    steps = len(clusters) + 3 + (2 if has_map else 0)
    bar = progress("report", steps) if progress else None
    tick = bar.update if bar else (lambda n: None)
    try:
        image_dir = info.get("image_dir")
        sources = _Sources(out_dir, image_dir)
        sources.folder_of = {p: c.folder for c in clusters for p in c.paths}
        method = None
        if has_map:
            Z = model.reduce(features) if model is not None else np.asarray(features, np.float32)
            _silhouettes(Z, labels, clusters, seed)
            method = _resolve_map_method(map_method, len(Z))
            xy = cached_2d(Z, method, seed, _map_cache_dir(info))
            tick(1)
            _write_map(out, xy, labels, paths, n_clusters, method)
            _write_map_thumbnails(out, xy, labels, paths, n_clusters, sources, seed)
            tick(1)
        for c in clusters:
            _write_montage(out, c, n_clusters, sources)
            tick(1)
        _write_overview(out, clusters, n_clusters, sources)
        tick(1)
        if kscan:
            _write_kscan(out, kscan)
        out.write_text(f"{REPORT_DIR}/summary.csv", _clusters_csv(clusters, len(paths)))
        tick(1)
        page = _index_html(info, clusters, len(paths), method, kscan is not None, warnings)
        index = out.write_text(f"{REPORT_DIR}/index.html", page)
        tick(1)
    finally:
        if bar:
            bar.close()
    members = {c.label: [c.paths[i] for i in c.ranks] for c in clusters}
    return ReportResult(index, files, method, members, warnings)


def check_map_method(map_method):
    """Raise :class:`UsageError` unless ``map_method`` is one of :data:`MAP_METHODS`."""
    if map_method not in MAP_METHODS:
        raise UsageError(f"map_method={map_method!r} is not one of {', '.join(MAP_METHODS)}")


# -- reading the output folder ---------------------------------------------------

def _read_output(out_dir):
    from .images import OUTPUT_MARKER

    marker = out_dir / OUTPUT_MARKER
    labels_csv = out_dir / "labels.csv"
    if not marker.is_file():
        raise UsageError(f"{str(out_dir)!r} is not a featclust output folder (no "
                         f"{OUTPUT_MARKER}); run featclust sort first")
    try:
        info = json.loads(marker.read_text(encoding="ascii"))
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {str(marker)!r}: {e}") from None
    if info.get("status") != "complete" or not labels_csv.is_file():
        raise UsageError(f"{str(out_dir)!r} holds no complete sort (it was interrupted or "
                         "failed); run featclust sort again")
    try:
        paths, labels, dists = read_labels_csv(labels_csv)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"cannot read {str(labels_csv)!r}: {e}") from None
    return info, paths, np.asarray(labels, np.int64), np.asarray(dists, np.float64)


def load_features(info, paths):
    """Read the features of ``paths`` back from the store a sort recorded.

    Parameters
    ----------
    info : dict
        The content of ``featclust.json``.
    paths : list of str
        Relative image paths, as in ``labels.csv``.

    Returns
    -------
    features : numpy.ndarray or None
        ``(len(paths), dim)`` float32, or ``None`` when they are not available.
    problem : str or None
        Why not, in words for the user.
    """
    from .store import FeatureStore

    store = info.get("store")
    image_dir = info.get("image_dir")
    settings = info.get("feature_settings")
    if not store or not image_dir or not settings:
        return None, "featclust.json does not say where the features are stored"
    store = Path(store)
    st = FeatureStore(image_dir, settings, store.parent.parent)
    if st.path != store:
        return None, f"the feature store {str(store)!r} no longer belongs to {image_dir!r}"
    found = st.read_settings()
    if found is None:
        return None, (f"the feature store {str(store)!r} no longer exists (run featclust sort "
                      "again to rebuild it)")
    if isinstance(found, Exception):
        return None, f"the feature store {str(store)!r} cannot be read ({found})"
    # Opening a store whose settings differ would rebuild it: check first.
    if not st.settings_match(found):
        return None, (f"the feature store {str(store)!r} now holds features made with other "
                      "settings or for another folder")
    try:
        with st:
            missing = [p for p in paths if p not in st]
            if missing:
                return None, (f"the feature store no longer holds the features of "
                              f"{len(missing)} of the {len(paths)} images (the image folder "
                              "changed since the sort; run featclust sort again)")
            return st.load(paths), None
    except StoreLockedError:
        return None, (f"the feature store {str(store)!r} is in use by another featclust run; "
                      "run featclust report again when it has finished")


def _clusters(paths, labels, dists, n_clusters):
    clusters = []
    for label in range(n_clusters):
        idx = np.flatnonzero(labels == label)
        idx = idx[np.argsort(dists[idx], kind="stable")]
        clusters.append(_Cluster(label, cluster_dir_name(label, n_clusters),
                                 [paths[i] for i in idx], dists[idx], montage_ranks(len(idx))))
    return clusters


def montage_ranks(size, max_images=MONTAGE_MAX):
    """Which members a montage shows: all, or ``max_images`` spread evenly.

    Members are ranked by distance to the centre; a large cluster is shown by
    evenly spaced ranks from the closest to the farthest, so the typical and
    the borderline members are both visible.

    Parameters
    ----------
    size : int
        Number of members.
    max_images : int

    Returns
    -------
    numpy.ndarray
        Increasing ranks (0 is the closest member).
    """
    if size <= max_images:
        return np.arange(size)
    return np.unique(np.round(np.linspace(0, size - 1, max_images)).astype(np.int64))


def _find_kscan(out_dir):
    for name in KSCAN_FILES:
        path = out_dir / name
        if path.is_file():
            return path
    return None


def _planned_files(clusters, has_map, kscan):
    r = REPORT_DIR
    files = [f"{r}/index.html", f"{r}/overview.png", f"{r}/summary.csv"]
    if has_map:
        files += [f"{r}/map.png", f"{r}/map.csv", f"{r}/map_thumbnails.png"]
    if kscan:
        files.append(f"{r}/kscan.png")
    for c in clusters:
        files += [f"{r}/montages/{c.folder}.png", f"{r}/montages/{c.folder}.csv"]
    return files


def _remove_old_report(out):
    old = [rel for rel in out.files if rel.split("/", 1)[0] == REPORT_DIR]
    if old:
        out.release(old)


# -- scores and the 2-D map -------------------------------------------------------

def _silhouettes(Z, labels, clusters, seed):
    from sklearn.metrics import silhouette_samples

    n = len(Z)
    idx = np.arange(n)
    if n > SILHOUETTE_SAMPLE:
        idx = np.sort(np.random.default_rng(seed).choice(n, SILHOUETTE_SAMPLE, replace=False))
    sub = labels[idx]
    if not 2 <= len(np.unique(sub)) <= len(idx) - 1:
        return
    s = silhouette_samples(Z[idx], sub)
    for c in clusters:
        mine = s[sub == c.label]
        c.silhouette = float(mine.mean()) if len(mine) else None


def _resolve_map_method(map_method, n):
    if map_method == "auto":
        return "tsne" if n <= TSNE_MAX_IMAGES else "pca"
    return map_method


def embed_2d(Z, method="tsne", seed=0):
    """2-D coordinates of feature vectors, for the map.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
    method : {"tsne", "pca"}
        ``"tsne"``: PCA to at most 50 dimensions, then t-SNE (perplexity 30,
        less for small sets); ``"pca"``: the first two principal components.
        Fewer than 5 samples always get PCA.
    seed : int

    Returns
    -------
    numpy.ndarray of shape (n_samples, 2)
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method not in ("tsne", "pca"):
        raise UsageError(f"method={method!r} is not one of tsne, pca")
    Z = np.asarray(Z, np.float32)
    n = len(Z)
    xy = np.zeros((n, 2), np.float32)
    if n < 2:
        return xy
    if method == "tsne" and n >= 5:
        from threadpoolctl import threadpool_limits

        dims = min(50, n, Z.shape[1])
        Z50 = PCA(dims, random_state=seed).fit_transform(Z) if Z.shape[1] > dims else Z
        tsne = TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", learning_rate="auto",
                    random_state=seed)
        # Small sets gain nothing from threads, and OpenMP's spinning threads
        # cost many times the work on a busy machine.
        with threadpool_limits(1 if n < SMALL_MAP else None):
            return tsne.fit_transform(Z50).astype(np.float32)
    dims = min(2, n, Z.shape[1])
    xy[:, :dims] = PCA(dims, random_state=seed).fit_transform(Z)
    return xy


def _map_cache_dir(info):
    store = info.get("store")
    return Path(store).parent.parent / "maps" if store else None


def cached_2d(Z, method="tsne", seed=0, cache_dir=None):
    """:func:`embed_2d`, with t-SNE results cached by the content of ``Z``.

    Sorting the same features again with another k gives the same ``Z``, so
    the slow t-SNE runs once. A cache that cannot be read or written is
    ignored.

    Parameters
    ----------
    Z : array-like of shape (n_samples, n_features)
    method : {"tsne", "pca"}
    seed : int
    cache_dir : path-like, optional
        Where the maps are kept; the :data:`MAP_CACHE_KEEP` most recently
        used stay. ``None``: no cache.

    Returns
    -------
    numpy.ndarray of shape (n_samples, 2)
    """
    from .store import atomic_write

    Z = np.ascontiguousarray(Z, np.float32)
    if cache_dir is None or method != "tsne":
        return embed_2d(Z, method, seed)
    key = hashlib.blake2b(f"{MAP_VERSION}:{method}:{seed}:{Z.shape}".encode(), digest_size=16)
    key.update(Z.tobytes())
    path = Path(cache_dir) / f"{method}-{key.hexdigest()}.npy"
    try:
        xy = np.load(path, allow_pickle=False)
        if xy.shape == (len(Z), 2) and np.isfinite(xy).all():
            os.utime(path)
            return xy.astype(np.float32)
    except (OSError, ValueError):
        pass
    xy = embed_2d(Z, method, seed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.save(fh, xy))
        old = sorted(path.parent.glob("*.npy"), key=lambda p: p.stat().st_mtime, reverse=True)
        for stale in old[MAP_CACHE_KEEP:]:
            stale.unlink()
    except OSError:
        pass
    return xy


def cluster_colors(n_clusters):
    """One RGB colour (0-255 ints) per cluster, the same on the map and the montages."""
    from matplotlib import colormaps

    if n_clusters <= 10:
        table = colormaps["tab10"].colors
    elif n_clusters <= 20:
        table = colormaps["tab20"].colors
    else:
        cmap = colormaps["turbo"]
        table = [cmap(0.05 + 0.9 * i / (n_clusters - 1))[:3] for i in range(n_clusters)]
    return [tuple(int(round(255 * v)) for v in table[i][:3]) for i in range(n_clusters)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure


def _write_map(out, xy, labels, paths, n_clusters, method):
    Figure = _pyplot()
    colors = np.array(cluster_colors(n_clusters)) / 255.0
    n = len(xy)
    fig = Figure(figsize=(9, 8), dpi=100)
    ax = fig.add_subplot()
    size = float(np.clip(30000 / max(n, 1), 1.0, 40.0))
    order = np.random.default_rng(0).permutation(n)  # no cluster drawn all on top
    ax.scatter(xy[order, 0], xy[order, 1], s=size, c=colors[labels[order]], linewidths=0,
               rasterized=True)
    for label in range(n_clusters):
        pts = xy[labels == label]
        if len(pts):
            cx, cy = np.median(pts, axis=0)
            ax.text(cx, cy, str(label), ha="center", va="center", fontsize=11, weight="bold",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colors[label],
                          "alpha": 0.85})
    title = "t-SNE (after PCA to 50 dimensions)" if method == "tsne" else "PCA, first 2 components"
    ax.set_title(f"{n} images, {n_clusters} clusters: {title}")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _write_bytes(out, f"{REPORT_DIR}/map.png", buf.getvalue())

    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["path", "cluster", "x", "y"])
    for p, c, (x, y) in zip(paths, labels, xy):
        w.writerow([p, int(c), f"{float(x):.5g}", f"{float(y):.5g}"])
    out.write_text(f"{REPORT_DIR}/map.csv", text.getvalue())


def map_thumbnail_picks(xy, cell, canvas, max_images=MAP_THUMBS_MAX, seed=0):
    """Which points get a thumbnail on the map: at most one per ``cell`` square.

    Parameters
    ----------
    xy : numpy.ndarray of shape (n, 2)
        Positions in canvas pixels.
    cell : int
        Thumbnail size in pixels.
    canvas : int
    max_images : int
    seed : int

    Returns
    -------
    numpy.ndarray
        Indices into ``xy``.
    """
    order = np.random.default_rng(seed).permutation(len(xy))
    taken, picks = set(), []
    for i in order:
        key = (int(xy[i, 0] // cell), int(xy[i, 1] // cell))
        if key not in taken:
            taken.add(key)
            picks.append(i)
            if len(picks) >= max_images:
                break
    return np.asarray(picks, np.int64)


def _write_map_thumbnails(out, xy, labels, paths, n_clusters, sources, seed):
    size, margin, t = 1600, 40, MAP_THUMB
    pos = _to_canvas(xy, size, margin)
    colors = cluster_colors(n_clusters)
    img = Image.new("RGB", (size, size), _WHITE)
    draw = ImageDraw.Draw(img)
    for (x, y), c in zip(pos, labels):
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colors[c])
    for i in map_thumbnail_picks(pos, t + 4, size, seed=seed):
        thumb = sources.thumbnail(paths[i], t)
        x, y = int(pos[i, 0]) - t // 2, int(pos[i, 1]) - t // 2
        draw.rectangle((x - 2, y - 2, x + t + 1, y + t + 1), fill=colors[labels[i]])
        img.paste(thumb, (x, y))
    _save_png(out, f"{REPORT_DIR}/map_thumbnails.png", img)


def _to_canvas(xy, size, margin):
    xy = np.asarray(xy, np.float64)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    pos = margin + (xy - lo) / span * (size - 2 * margin)
    pos[:, 1] = size - pos[:, 1]  # y up, as on the scatter plot
    return pos


# -- thumbnails, montages, the overview --------------------------------------------

class _Sources:
    """Thumbnails of the sorted images, read from the output copy or the image folder."""

    def __init__(self, out_dir, image_dir):
        self.out_dir = Path(out_dir)
        self.image_dir = Path(image_dir) if image_dir else None
        self.folder_of = {}

    def candidates(self, rel):
        found = []
        folder = self.folder_of.get(rel)
        if folder:
            found.append(self.out_dir / folder / rel)
        if self.image_dir is not None:
            found.append(self.image_dir / rel)
        return found

    def thumbnail(self, rel, size):
        for path in self.candidates(rel):
            try:
                return _thumbnail(path, size)
            except (OSError, ValueError, SyntaxError, EOFError, images.BadImageError,
                    Image.DecompressionBombError, MemoryError):
                continue
        return _placeholder(size)


def _thumbnail(path, size):
    with open(path, "rb") as fh:
        data = fh.read(images.MAX_FILE_BYTES + 1)
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            im = Image.fromarray(images.decode(data, size), "L")
        else:
            im.draft("RGB", (size, size))
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, _WHITE + (255,))
                im = Image.alpha_composite(white, im)
            im = im.convert("RGB")
        im.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        tile = Image.new("RGB", (size, size), _WHITE)
        tile.paste(im.convert("RGB"), ((size - im.width) // 2, (size - im.height) // 2))
    return tile


def _placeholder(size):
    tile = Image.new("RGB", (size, size), (235, 235, 235))
    d = ImageDraw.Draw(tile)
    d.line((0, 0, size, size), fill=(200, 80, 80), width=2)
    d.line((0, size, size, 0), fill=(200, 80, 80), width=2)
    return tile


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        return ImageFont.load_default()


_MONTAGE_PAD, _MONTAGE_HEADER = 4, 44


def montage_tile_box(slot):
    """The ``(left, top, right, bottom)`` pixels of thumbnail ``slot`` in a montage PNG."""
    pad, t = _MONTAGE_PAD, MONTAGE_TILE
    row, col = divmod(slot, MONTAGE_COLUMNS)
    left, top = pad + col * (t + pad), _MONTAGE_HEADER + row * (t + pad)
    return left, top, left + t, top + t


def _write_montage(out, c, n_clusters, sources):
    color = cluster_colors(n_clusters)[c.label]
    shown = len(c.ranks)
    cols = MONTAGE_COLUMNS
    rows = max(1, -(-shown // cols))
    pad, t = _MONTAGE_PAD, MONTAGE_TILE
    width = pad + cols * (t + pad)
    img = Image.new("RGB", (width, _MONTAGE_HEADER + rows * (t + pad) + pad), _WHITE)
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, width, 6), fill=color)
    size = len(c.paths)
    what = (f"{size} image{'s' if size != 1 else ''}" if shown == size
            else f"{size} images, {shown} shown, evenly spread")
    d.text((pad, 10), f"cluster {c.label}: {what}", fill=_TEXT, font=_font(18))
    d.text((pad, 30), "closest to the centre first, farthest last", fill=(110, 110, 110),
           font=_font(11))
    for slot, rank in enumerate(c.ranks):
        img.paste(sources.thumbnail(c.paths[rank], t), montage_tile_box(slot)[:2])
    _save_png(out, f"{REPORT_DIR}/montages/{c.folder}.png", img)

    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["position", "rank", "path", "distance"])
    for slot, rank in enumerate(c.ranks):
        w.writerow([slot, int(rank), c.paths[rank], f"{float(c.distances[rank]):.6g}"])
    out.write_text(f"{REPORT_DIR}/montages/{c.folder}.csv", text.getvalue())


def _write_overview(out, clusters, n_clusters, sources):
    colors = cluster_colors(n_clusters)
    pad, t, label_w = 4, OVERVIEW_TILE, 150
    width = label_w + OVERVIEW_PER_CLUSTER * (t + pad) + pad
    img = Image.new("RGB", (width, pad + len(clusters) * (t + pad)), _WHITE)
    d = ImageDraw.Draw(img)
    big, small = _font(16), _font(12)
    for row, c in enumerate(clusters):
        y = pad + row * (t + pad)
        d.rectangle((pad, y, pad + 8, y + t), fill=colors[c.label])
        d.text((pad + 16, y + t // 2 - 18), f"cluster {c.label}", fill=_TEXT, font=big)
        d.text((pad + 16, y + t // 2 + 2), f"{len(c.paths)} images", fill=(90, 90, 90),
               font=small)
        for j, rel in enumerate(c.paths[:OVERVIEW_PER_CLUSTER]):
            img.paste(sources.thumbnail(rel, t), (label_w + j * (t + pad), y))
    _save_png(out, f"{REPORT_DIR}/overview.png", img)


def _write_kscan(out, source):
    if source.suffix == ".png":
        _write_bytes(out, f"{REPORT_DIR}/kscan.png", source.read_bytes())
        return
    with open(source, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    ks = [int(r["k"]) for r in rows]
    scores = [name for name in (rows[0] if rows else {}) if name != "k"]
    Figure = _pyplot()
    fig = Figure(figsize=(4 * max(1, len(scores)), 3.2), dpi=100)
    for i, name in enumerate(scores):
        ax = fig.add_subplot(1, max(1, len(scores)), i + 1)
        vals = [float(r[name]) if r[name] not in ("", None) else np.nan for r in rows]
        ax.plot(ks, vals, "o-")
        ax.set_xlabel("k")
        ax.set_title(name)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    _write_bytes(out, f"{REPORT_DIR}/kscan.png", buf.getvalue())


def _save_png(out, rel, img):
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    _write_bytes(out, rel, buf.getvalue())


def _write_bytes(out, rel, data):
    out.write_bytes(rel, data)


# -- the tables and the page ---------------------------------------------------------

def _clusters_csv(clusters, n_images):
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(["cluster", "folder", "size", "share", "mean_distance", "max_distance",
                "silhouette"])
    for c in clusters:
        w.writerow(_cluster_row(c, n_images))
    return text.getvalue()


def _cluster_row(c, n_images):
    size = len(c.paths)
    return [c.label, c.folder, size, f"{size / max(n_images, 1):.4f}",
            f"{c.distances.mean():.4g}" if size else "",
            f"{c.distances.max():.4g}" if size else "",
            "" if c.silhouette is None else f"{c.silhouette:.3f}"]


def _href(*parts):
    return "/".join(quote(p) for p in parts)


def _num(value, digits=3):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


_SCORE_NAMES = (("silhouette", "silhouette (-1 to 1, higher is better)"),
                ("davies_bouldin", "Davies-Bouldin (lower is better)"),
                ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
                ("stability", "stability, mean ARI of repeated runs (higher is better)"),
                ("inertia", "inertia"))

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1500px;padding:0 1em;"
    "color:#222}img{max-width:100%;height:auto;border:1px solid #ddd}"
    "table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
    "th{background:#f3f3f3}td.l,th.l{text-align:left}"
    ".warn{background:#fff3cd;border:1px solid #e0c36c;padding:.5em 1em}"
    ".maps{display:flex;flex-wrap:wrap;gap:1em}.maps figure{flex:1 1 600px;margin:0}"
    ".swatch{display:inline-block;width:.9em;height:.9em;vertical-align:middle}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dt{color:#666}"
    ".flag{color:#a33;font-weight:bold}")


def _index_html(info, clusters, n_images, method, has_kscan, warnings):
    e = html.escape
    counts, emb = info.get("counts", {}), info.get("embedder", {})
    params, scores = info.get("clustering", {}), info.get("scores") or {}
    flags = info.get("flags") or {}
    tiny, loose = set(flags.get("tiny", [])), set(flags.get("loose", []))
    name = os.path.basename(str(info.get("image_dir", "")).rstrip("/"))
    skipped = f", {counts['bad_files']} skipped" if counts.get("bad_files") else ""
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>featclust report: {e(name)}</title>", f"<style>{_STYLE}</style>",
         "</head><body>", f"<h1>featclust report: {e(name)}</h1>", "<dl>",
         f"<dt>images</dt><dd>{e(str(info.get('image_dir', '')))} ({n_images} images"
         f"{skipped})</dd>",
         f"<dt>clusters</dt><dd>{len(clusters)} ({e(str(params.get('method', 'kmeans')))}; "
         f"pca={e(str(params.get('pca')))}, "
         f"normalize={e(str(params.get('normalize')))}, seed={e(str(params.get('seed')))})</dd>",
         f"<dt>features</dt><dd>VGG16 {e(str(emb.get('layer') or ''))}, weights "
         f"{e(str(emb.get('weights')))}, pooling {e(str(emb.get('pooling')))}</dd>"]
    for key, label in _SCORE_NAMES:
        if key in scores:
            h.append(f"<dt>{e(label)}</dt><dd>{_num(scores[key])}</dd>")
    truth = info.get("truth")
    if truth:
        h.append(f"<dt>agreement with known classes</dt><dd>adjusted Rand index "
                 f"{_num(truth.get('ari'))}, NMI {_num(truth.get('nmi'))} "
                 f'(<a href="../truth.csv">table</a>)</dd>')
    kscan = info.get("kscan")
    if kscan and kscan.get("suggested_k") is not None:
        h.append(f"<dt>k-scan suggestion</dt><dd>k = {e(str(kscan['suggested_k']))}: "
                 f"{e(str(kscan.get('reason', '')))}</dd>")
    h += [f"<dt>sorted</dt><dd>{e(str(info.get('created', '')))}</dd>", "</dl>"]
    if counts.get("bad_files"):
        h.append('<p><a href="../bad_files.csv">skipped files and why</a></p>')
    for w in warnings:
        h.append(f'<p class="warn">{e(w)}</p>')
    h += ["<h2>Overview</h2>",
          "<p>The most central images of each cluster, one row per cluster.</p>",
          '<img src="overview.png" alt="overview of the clusters">']
    if method:
        how = ("t-SNE after PCA to 50 dimensions" if method == "tsne"
               else "PCA to 2 dimensions (the fast map for large sets)")
        h += ["<h2>Map</h2>", f"<p>Every image as a point: {how}, coloured by cluster "
              '(<a href="map.csv">coordinates</a>).</p>', '<div class="maps">',
              '<figure><img src="map.png" alt="2-D map coloured by cluster"></figure>',
              '<figure><img src="map_thumbnails.png" alt="2-D map with thumbnails"></figure>',
              "</div>"]
    if has_kscan:
        h += ["<h2>Choosing k</h2>", '<img src="kscan.png" alt="k-scan scores">']
    colors = cluster_colors(len(clusters))
    h += ["<h2>Clusters</h2>",
          "<p>Distances are to the cluster centre, in the space k-means ran in; the "
          "silhouette of a cluster is the mean over its members (-1 to 1, higher is better). "
          "<em>tiny</em>: far fewer members than the average cluster; <em>loose</em>: members "
          "far from the centre compared with the other clusters "
          '(<a href="summary.csv">this table as CSV</a>, <a href="../labels.csv">every '
          "image</a>).</p>",
          '<table><tr><th class="l">cluster</th><th>size</th><th>share</th>'
          "<th>mean distance</th><th>max distance</th><th>silhouette</th>"
          '<th class="l">flags</th><th class="l">folder</th></tr>']
    for c in clusters:
        row = _cluster_row(c, n_images)
        r, g, b = colors[c.label]
        flag = " ".join(f for f, on in (("tiny", c.label in tiny), ("loose", c.label in loose))
                        if on)
        h.append(f'<tr><td class="l"><span class="swatch" style="background:rgb({r},{g},{b})">'
                 f'</span> <a href="#{c.folder}">{c.label}</a></td><td>{row[2]}</td>'
                 f"<td>{float(row[3]):.1%}</td><td>{row[4]}</td><td>{row[5]}</td>"
                 f'<td>{row[6] or "n/a"}</td><td class="l flag">{flag}</td>'
                 f'<td class="l"><a href="{_href("..", c.folder)}/">{e(c.folder)}/</a></td></tr>')
    h.append("</table>")
    for c in clusters:
        png, members = _href("montages", c.folder + ".png"), _href("montages", c.folder + ".csv")
        h += [f'<h3 id="{c.folder}">Cluster {c.label}: {len(c.paths)} images</h3>',
              f'<p><a href="{_href("..", c.folder)}/">open the folder</a> · '
              f'<a href="{members}">the images shown, in order</a></p>',
              f'<img src="{png}" alt="montage of cluster {c.label}">']
    h += ["</body></html>", ""]
    return "\n".join(h)


__all__ = ["ReportResult", "write_report", "check_map_method", "load_features", "embed_2d",
           "cached_2d",
           "montage_ranks", "montage_tile_box", "map_thumbnail_picks", "cluster_colors",
           "MAP_METHODS", "TSNE_MAX_IMAGES"]
