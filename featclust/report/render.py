"""The report's pictures, drawn as PNG bytes: montages, the overview, the maps, the k-scan.

Nothing here writes a file: each function returns (or, for
:func:`plot_kscan`, writes into the file object it is given) the PNG, and the
caller writes it through the output folder. Thumbnails come from
:func:`featclust.images.thumbnail`; an image that cannot be read is shown as a
crossed-out tile. matplotlib (Agg backend) is imported only for the plots.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .. import images
from ..kscan import MIN_STABILITY
from .layout import map_thumbnail_picks, to_canvas

MONTAGE_MAX = 64
MONTAGE_COLUMNS = 8
MONTAGE_TILE = 96
OVERVIEW_PER_CLUSTER = 8
OVERVIEW_TILE = 64
MAP_THUMB = 56
#: Width and height of ``map_thumbnails.png`` in pixels.
MAP_CANVAS = 1600

_WHITE = (255, 255, 255)
_TEXT = (20, 20, 20)
_MONTAGE_PAD, _MONTAGE_HEADER = 4, 44
_KSCAN_TITLES = {
    "inertia": "inertia (lower: tighter)",
    "silhouette": "silhouette (higher better)",
    "davies_bouldin": "Davies-Bouldin (lower better)",
    "calinski_harabasz": "Calinski-Harabasz (higher better)",
    "stability": "stability, ARI (higher better)",
}


def montage_ranks(size: int, max_images: int = MONTAGE_MAX) -> np.ndarray:
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


def montage_tile_box(slot: int) -> tuple[int, int, int, int]:
    """The ``(left, top, right, bottom)`` pixels of thumbnail ``slot`` in a montage PNG."""
    pad, t = _MONTAGE_PAD, MONTAGE_TILE
    row, col = divmod(slot, MONTAGE_COLUMNS)
    left, top = pad + col * (t + pad), _MONTAGE_HEADER + row * (t + pad)
    return left, top, left + t, top + t


def cluster_colors(n_clusters: int) -> list[tuple[int, ...]]:
    """One RGB colour (0-255 ints) per cluster, the same on the map and the montages."""
    from matplotlib import colormaps

    if n_clusters <= 10:
        table = colormaps["tab10"](np.arange(10))
    elif n_clusters <= 20:
        table = colormaps["tab20"](np.arange(20))
    else:
        cmap = colormaps["turbo"]
        table = cmap(0.05 + 0.9 * np.arange(n_clusters) / (n_clusters - 1))
    return [tuple(int(round(255 * v)) for v in table[i][:3]) for i in range(n_clusters)]


class Thumbnails:
    """Square thumbnails of sorted images, read from the output copy or the image folder.

    Parameters
    ----------
    out_dir : path-like
        The sorted folder; an image is looked for in its cluster folder first.
    image_dir : path-like or None
        The sorted image folder, tried next.
    folder_of : dict of str to str
        Relative image path -> its cluster folder's name.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        image_dir: str | os.PathLike | None,
        folder_of: dict[str, str],
    ):
        self.out_dir = Path(out_dir)
        self.image_dir = Path(image_dir) if image_dir else None
        self.folder_of = folder_of

    def tile(self, rel: str, size: int) -> Image.Image:
        """The image ``rel`` shrunk onto a white ``size`` x ``size`` RGB tile.

        A crossed-out placeholder when no copy of it can be read.
        """
        candidates = []
        if rel in self.folder_of:
            candidates.append(self.out_dir / self.folder_of[rel] / rel)
        if self.image_dir is not None:
            candidates.append(self.image_dir / rel)
        for path in candidates:
            try:
                im = images.thumbnail(path, size)
            except (images.BadImageError, OSError):
                continue
            tile = Image.new("RGB", (size, size), _WHITE)
            tile.paste(im.convert("RGB"), ((size - im.width) // 2, (size - im.height) // 2))
            return tile
        return _placeholder(size)


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


def _png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def montage_png(
    label: int, size: int, shown: list[str], n_clusters: int, thumbnails: Thumbnails
) -> bytes:
    """The montage of one cluster: a header, then its shown members in rows of 8.

    Parameters
    ----------
    label : int
    size : int
        Number of members of the cluster.
    shown : list of str
        The members shown, in order (slot ``i`` is at :func:`montage_tile_box` ``(i)``).
    n_clusters : int
    thumbnails : Thumbnails

    Returns
    -------
    bytes
        The PNG.
    """
    color = cluster_colors(n_clusters)[label]
    cols, pad, t = MONTAGE_COLUMNS, _MONTAGE_PAD, MONTAGE_TILE
    rows = max(1, -(-len(shown) // cols))
    width = pad + cols * (t + pad)
    img = Image.new("RGB", (width, _MONTAGE_HEADER + rows * (t + pad) + pad), _WHITE)
    d = ImageDraw.Draw(img)
    d.rectangle((0, 0, width, 6), fill=color)
    what = (
        f"{size} image{'s' if size != 1 else ''}"
        if len(shown) == size
        else f"{size} images, {len(shown)} shown, evenly spread"
    )
    d.text((pad, 10), f"cluster {label}: {what}", fill=_TEXT, font=_font(18))
    d.text(
        (pad, 30),
        "closest to the centre first, farthest last",
        fill=(110, 110, 110),
        font=_font(11),
    )
    for slot, rel in enumerate(shown):
        img.paste(thumbnails.tile(rel, t), montage_tile_box(slot)[:2])
    return _png(img)


def overview_png(rows: list, n_clusters: int, thumbnails: Thumbnails) -> bytes:
    """One row per cluster: its colour, label, size and its most central images.

    Parameters
    ----------
    rows : list of (int, int, list of str)
        ``(label, size, members closest to the centre first)`` per cluster;
        the first :data:`OVERVIEW_PER_CLUSTER` members are shown.
    n_clusters : int
    thumbnails : Thumbnails

    Returns
    -------
    bytes
        The PNG.
    """
    colors = cluster_colors(n_clusters)
    pad, t, label_w = 4, OVERVIEW_TILE, 150
    width = label_w + OVERVIEW_PER_CLUSTER * (t + pad) + pad
    img = Image.new("RGB", (width, pad + len(rows) * (t + pad)), _WHITE)
    d = ImageDraw.Draw(img)
    big, small = _font(16), _font(12)
    for row, (label, size, members) in enumerate(rows):
        y = pad + row * (t + pad)
        d.rectangle((pad, y, pad + 8, y + t), fill=colors[label])
        d.text((pad + 16, y + t // 2 - 18), f"cluster {label}", fill=_TEXT, font=big)
        d.text((pad + 16, y + t // 2 + 2), f"{size} images", fill=(90, 90, 90), font=small)
        for j, rel in enumerate(members[:OVERVIEW_PER_CLUSTER]):
            img.paste(thumbnails.tile(rel, t), (label_w + j * (t + pad), y))
    return _png(img)


def _figure(**kwargs):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _savefig(fig, fh=None):
    fig.tight_layout()
    buf = fh if fh is not None else io.BytesIO()
    fig.savefig(buf, format="png")
    return None if fh is not None else buf.getvalue()


def map_png(xy: np.ndarray, labels: np.ndarray, n_clusters: int, method: str | None) -> bytes:
    """``map.png``: every image as a point coloured by cluster, each label at its median.

    Parameters
    ----------
    xy : numpy.ndarray of shape (n, 2)
        From :func:`featclust.report.layout.embed_2d`.
    labels : numpy.ndarray of int
    n_clusters : int
    method : {"tsne", "pca"}
        Named in the title.

    Returns
    -------
    bytes
        The PNG.
    """
    colors = np.array(cluster_colors(n_clusters)) / 255.0
    n = len(xy)
    fig = _figure(figsize=(9, 8), dpi=100)
    ax = fig.add_subplot()
    size = float(np.clip(30000 / max(n, 1), 1.0, 40.0))
    order = np.random.default_rng(0).permutation(n)  # no cluster drawn all on top
    ax.scatter(
        xy[order, 0], xy[order, 1], s=size, c=colors[labels[order]], linewidths=0, rasterized=True
    )
    for label in range(n_clusters):
        pts = xy[labels == label]
        if len(pts):
            cx, cy = np.median(pts, axis=0)
            ax.text(
                cx,
                cy,
                str(label),
                ha="center",
                va="center",
                fontsize=11,
                weight="bold",
                bbox={
                    "boxstyle": "round,pad=0.2",
                    "fc": "white",
                    "ec": colors[label],
                    "alpha": 0.85,
                },
            )
    title = "t-SNE (after PCA to 50 dimensions)" if method == "tsne" else "PCA, first 2 components"
    ax.set_title(f"{n} images, {n_clusters} clusters: {title}")
    ax.set_xticks([])
    ax.set_yticks([])
    return _savefig(fig)


_MAP_TITLE = 36


def map_thumbnails_png(
    xy: np.ndarray,
    labels: np.ndarray,
    paths: list[str],
    n_clusters: int,
    thumbnails: Thumbnails,
    random_state: int = 0,
    method: str | None = None,
) -> bytes:
    """``map_thumbnails.png``: the map's points, with thumbnails where there is room.

    Parameters
    ----------
    xy : numpy.ndarray of shape (n, 2)
    labels : numpy.ndarray of int
    paths : list of str
        Relative image paths, in the order of ``xy``.
    n_clusters : int
    thumbnails : Thumbnails
    random_state : int
        Which image of a crowded spot is shown (see
        :func:`featclust.report.layout.map_thumbnail_picks`).
    method : {"tsne", "pca"}, optional
        Named in the title.

    Returns
    -------
    bytes
        The PNG.
    """
    size, t = MAP_CANVAS, MAP_THUMB
    pos = to_canvas(xy, size, margin=40)
    colors = cluster_colors(n_clusters)
    img = Image.new("RGB", (size, size + _MAP_TITLE), _WHITE)
    draw = ImageDraw.Draw(img)
    how = {"tsne": "t-SNE map", "pca": "PCA map"}.get(method or "", "2-D map")
    n = len(xy)
    draw.text(
        (10, 6),
        f"{how} of {n} image{'s' if n != 1 else ''} in {n_clusters} clusters, "
        "with a thumbnail wherever there is room (frame: cluster colour)",
        fill=_TEXT,
        font=_font(22),
    )
    pos = pos + [0.0, _MAP_TITLE]
    for (x, y), c in zip(pos, labels):
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colors[c])
    for i in map_thumbnail_picks(pos, t + 4, size, random_state=random_state):
        x, y = int(pos[i, 0]) - t // 2, int(pos[i, 1]) - t // 2
        draw.rectangle((x - 2, y - 2, x + t + 1, y + t + 1), fill=colors[labels[i]])
        img.paste(thumbnails.tile(paths[i], t), (x, y))
    return _png(img)


def plot_kscan(
    scores: dict, suggested_k: int | None, fh: BinaryIO, min_stability: float | None = None
) -> None:
    """Draw every k-scan score against k, the suggestion marked, as PNG into ``fh``.

    Parameters
    ----------
    scores, suggested_k, min_stability
        As for :func:`kscan_figure`.
    fh : binary file object
    """
    _savefig(kscan_figure(scores, suggested_k, min_stability), fh)


def kscan_png(scores: dict, suggested_k: int | None, min_stability: float | None = None) -> bytes:
    """The k-scan plot as PNG bytes (what ``kscan.png`` holds); see :func:`plot_kscan`."""
    buf = io.BytesIO()
    plot_kscan(scores, suggested_k, buf, min_stability)
    return buf.getvalue()


def kscan_figure(scores: dict, suggested_k: int | None, min_stability: float | None = None) -> Any:
    """The k-scan plot as a matplotlib figure: one panel per score, against k.

    Parameters
    ----------
    scores : dict of str to 1-D array
        Keyed ``"k"``, ``"inertia"``, ``"silhouette"``, ``"davies_bouldin"``,
        ``"calinski_harabasz"``, ``"stability"`` (``KScan.scores_``); NaN
        where a score is undefined. A missing score gets an empty panel.
    suggested_k : int or None
        Marked with a dashed line; ``None``: no mark.
    min_stability : float, optional
        The stability the suggestion rule asks for, drawn as a dotted line on
        the stability panel; default :data:`featclust.kscan.MIN_STABILITY`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if min_stability is None:
        min_stability = MIN_STABILITY
    ks = np.asarray(scores["k"])
    fig = _figure(figsize=(15, 3.2), dpi=100)
    for i, (name, title) in enumerate(_KSCAN_TITLES.items()):
        ax = fig.add_subplot(1, len(_KSCAN_TITLES), i + 1)
        if name in scores:
            ax.plot(ks, np.asarray(scores[name], np.float64), "o-", markersize=3)
        if suggested_k is not None:
            ax.axvline(suggested_k, color="tab:red", linestyle="--", linewidth=1)
        if name == "stability":
            ax.axhline(
                min_stability,
                color="tab:green",
                linestyle=":",
                linewidth=1.2,
                label=f"{min_stability:g}: stable enough to suggest",
            )
            ax.legend(fontsize=7, loc="lower left")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("k")
        ax.tick_params(labelsize=8)
    fig.suptitle("k scan" if suggested_k is None else f"suggested k = {suggested_k}", fontsize=10)
    return fig
