"""Synthetic labelled image sets whose right clusters are known in advance.

Two kinds of images are generated, both as 8-bit greyscale (mode ``'L'``)
PIL images with a white (255) background and pure black (0) foreground:

``'dots'``
    Black dots on a white canvas arranged in an overall shape (a ring, a
    line, a spiral, ...).  This mirrors the motivating data set: 200x200
    black-and-white PNGs of black dots, where users want groups of similar
    overall shape.
``'silhouettes'``
    One filled black shape (a disk, a star, a heart, ...).

Every image is randomly rotated, scaled and shifted (and, for dots, the dot
count, dot size and per-dot position jitter vary), so that a family can only
be recognised by its overall shape.  Generation is deterministic for a given
seed and uses only NumPy and Pillow.

It is long because it draws 14 shape families; each drawing function is short.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .checks import check_choice, check_int
from .errors import UsageError
from .fileio import atomic_write, csv_text

__all__ = [
    "DOT_FAMILIES",
    "SILHOUETTE_FAMILIES",
    "draw_dots",
    "draw_silhouette",
    "make_image_set",
    "write_truth_csv",
]

DOT_FAMILIES = (
    "ring",
    "line",
    "cross",
    "triangle",
    "grid",
    "clusters",
    "scatter",
    "spiral",
)

SILHOUETTE_FAMILIES = (
    "disk",
    "square",
    "star",
    "crescent",
    "ellipse_bar",
    "heart",
)

KINDS = ("dots", "silhouettes")

# Reference canvas size for the pixel constants below; they scale with size.
_REF_SIZE = 200
_MIN_SIZE = 32

# Dot radius range in pixels at the reference size, per family.
_DOT_RADIUS = {
    "ring": (2.0, 5.0),
    "line": (2.0, 5.0),
    "cross": (2.0, 5.0),
    "triangle": (2.0, 5.0),
    "grid": (2.0, 4.5),
    "clusters": (2.0, 4.0),
    "scatter": (2.0, 5.0),
    "spiral": (2.0, 4.5),
}
_DOT_COUNT = (20, 80)  # inclusive range of the number of dots
_DOT_JITTER = 0.015  # per-dot gaussian jitter, in unit-shape coordinates
_DOT_SCALE = (0.6, 1.0)  # largest extent of the shape / usable canvas
_SIL_SCALE = (0.45, 0.9)


# --------------------------------------------------------------------------
# shape point generators (unit coordinates, roughly within [-1, 1]^2)
# --------------------------------------------------------------------------


def _pts_ring(rng, n):
    # Evenly spaced angles with a random phase and a little angular noise.
    theta = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, n, endpoint=False)
    theta = theta + rng.normal(0.0, 0.3 * np.pi / n, n)
    return np.column_stack([np.cos(theta), np.sin(theta)])


def _pts_line(rng, n):
    t = np.sort(rng.uniform(-1.0, 1.0, n))
    return np.column_stack([t, np.zeros(n)])


def _pts_cross(rng, n):
    n1 = n // 2
    n2 = n - n1
    # The second arm crosses the first at a random angle between 60 and 90
    # degrees, near (not exactly at) the middle.
    angle = rng.uniform(np.pi / 3, np.pi / 2)
    c = rng.uniform(-0.2, 0.2, 2)
    t1 = rng.uniform(-1.0, 1.0, n1)
    t2 = rng.uniform(-1.0, 1.0, n2)
    a = np.column_stack([t1, np.zeros(n1)])
    b = np.column_stack([c[0] + t2 * np.cos(angle), c[1] + t2 * np.sin(angle)])
    return np.vstack([a, b])


def _pts_triangle(rng, n):
    # Roughly equilateral triangle: vertex angles perturbed a little.
    base = np.array([np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3])
    ang = base + rng.uniform(-0.15, 0.15, 3)
    v = np.column_stack([np.cos(ang), np.sin(ang)])
    # Points evenly spread along the perimeter, random phase.
    edges = np.roll(v, -1, axis=0) - v
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    s = (rng.uniform(0, cum[-1]) + np.linspace(0, cum[-1], n, endpoint=False)) % cum[-1]
    s = (s + rng.normal(0.0, 0.2 * cum[-1] / n, n)) % cum[-1]
    k = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, 2)
    frac = (s - cum[k]) / lengths[k]
    return v[k] + frac[:, None] * edges[k]


def _pts_grid(rng, n):
    # Regular lattice; the dot count is set by the lattice (not by n).
    rows = int(rng.integers(4, 9))
    cols = int(rng.integers(4, 9))
    spacing = 2.0 / max(rows, cols)
    xs = (np.arange(cols) - (cols - 1) / 2) * spacing
    ys = (np.arange(rows) - (rows - 1) / 2) * spacing
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel()])


def _pts_clusters(rng, n):
    k = int(rng.integers(2, 5))
    # Cluster centres: well separated points (rejection sampling, bounded).
    centres = []
    min_dist = 0.9 if k <= 3 else 0.75
    for _ in range(200):
        c = rng.uniform(-1.0, 1.0, 2)
        if all(np.hypot(*(c - d)) >= min_dist for d in centres):
            centres.append(c)
            if len(centres) == k:
                break
    while len(centres) < k:  # pragma: no cover - practically unreachable
        centres.append(rng.uniform(-1.0, 1.0, 2))
    centres = np.asarray(centres)
    sigma = rng.uniform(0.06, 0.11)
    labels = rng.integers(0, k, n)
    labels[:k] = np.arange(k)  # every clump gets at least one dot
    return centres[labels] + rng.normal(0.0, sigma, (n, 2))


def _pts_scatter(rng, n):
    return rng.uniform(-1.0, 1.0, (n, 2))


def _pts_spiral(rng, n):
    turns = rng.uniform(2.0, 3.0)
    tmax = turns * 2 * np.pi
    # Arc length of r = a*theta grows ~ theta^2, so sqrt spacing gives
    # roughly uniform dots along the curve.  Skip the very centre.
    u = np.linspace(0.04, 1.0, n) + rng.normal(0.0, 0.15 / n, n)
    theta = tmax * np.sqrt(np.clip(u, 0.0, 1.0))
    r = theta / tmax
    sign = 1.0 if rng.random() < 0.5 else -1.0  # clockwise or anticlockwise
    return np.column_stack([r * np.cos(theta), sign * r * np.sin(theta)])


_DOT_GENERATORS = {
    "ring": _pts_ring,
    "line": _pts_line,
    "cross": _pts_cross,
    "triangle": _pts_triangle,
    "grid": _pts_grid,
    "clusters": _pts_clusters,
    "scatter": _pts_scatter,
    "spiral": _pts_spiral,
}


# --------------------------------------------------------------------------
# silhouette outlines (closed polygons in unit coordinates)
# --------------------------------------------------------------------------


def _circle(n=96):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([np.cos(t), np.sin(t)])


def _sil_disk(rng):
    return _circle()


def _sil_square(rng):
    return np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def _sil_star(rng):
    inner = rng.uniform(0.38, 0.5)
    t = np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
    return np.column_stack([r * np.cos(t), r * np.sin(t)])


def _sil_crescent(rng):
    # Outer unit circle minus an inner circle of radius r2 centred at (d, 0).
    r2 = rng.uniform(0.8, 0.9)
    d = rng.uniform(0.35, 0.5)
    x = (1.0 - r2 * r2 + d * d) / (2.0 * d)
    y = np.sqrt(max(1.0 - x * x, 1e-9))
    a0 = np.arctan2(y, x)  # upper intersection on the outer circle
    outer = np.linspace(a0, 2 * np.pi - a0, 64)  # through the far side
    b0 = np.arctan2(y, x - d)  # upper intersection seen from inner centre
    inner = np.linspace(2 * np.pi - b0, b0, 64)  # back through the far side
    p_out = np.column_stack([np.cos(outer), np.sin(outer)])
    p_in = np.column_stack([d + r2 * np.cos(inner), r2 * np.sin(inner)])
    return np.vstack([p_out, p_in])


def _sil_ellipse_bar(rng):
    aspect = rng.uniform(0.22, 0.4)
    c = _circle()
    return c * np.array([1.0, aspect])


def _sil_heart(rng):
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    # Image y axis points down: flip so the unrotated heart is upright.
    return np.column_stack([x, -y]) / 16.0


_SIL_GENERATORS = {
    "disk": _sil_disk,
    "square": _sil_square,
    "star": _sil_star,
    "crescent": _sil_crescent,
    "ellipse_bar": _sil_ellipse_bar,
    "heart": _sil_heart,
}


# --------------------------------------------------------------------------
# placement
# --------------------------------------------------------------------------


def _place(pts, rng, size, margin, scale_range):
    """Randomly rotate, scale and shift unit points into the canvas.

    The largest side of the rotated bounding box becomes a random fraction
    (``scale_range``) of the usable canvas ``size - 1 - 2 * margin``; the
    shape is then shifted uniformly so that it stays inside the margins.
    """
    angle = rng.uniform(0.0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    p = pts @ rot.T
    lo = p.min(axis=0)
    hi = p.max(axis=0)
    extent = float(max((hi - lo).max(), 1e-9))
    usable = size - 1 - 2.0 * margin
    scale = rng.uniform(*scale_range) * usable / extent
    p = (p - lo) * scale
    span = (hi - lo) * scale
    slack = np.maximum(usable - span, 0.0)
    offset = margin + rng.uniform(0.0, 1.0, 2) * slack
    return p + offset


# --------------------------------------------------------------------------
# public drawing functions
# --------------------------------------------------------------------------


def draw_dots(family, rng, size=200):
    """Draw one image of black dots arranged in the shape of a family.

    The dots are filled black (0) ellipses on a white (255) canvas.  The
    shape is randomly rotated, scaled to 60-100 % of the usable canvas and
    shifted; the dot count (20-80, or set by the lattice for ``'grid'``),
    the dot radius (about 2-5 px at ``size=200``, scaled with ``size``) and a
    small per-dot positional jitter are random too.  Every dot lies fully
    inside the canvas.

    Parameters
    ----------
    family : str
        One of :data:`DOT_FAMILIES`: ``'ring'`` (dots on a circle),
        ``'line'`` (along a segment), ``'cross'`` (two crossing segments),
        ``'triangle'`` (on a triangle outline), ``'grid'`` (regular
        lattice), ``'clusters'`` (2-4 tight gaussian clumps), ``'scatter'``
        (uniform random) or ``'spiral'`` (archimedean spiral).
    rng : numpy.random.Generator
        Source of randomness; the image is a deterministic function of its
        state.
    size : int, default=200
        Width and height of the square image in pixels (at least 32).

    Returns
    -------
    PIL.Image.Image
        A ``size`` x ``size`` image in mode ``'L'`` containing only the
        values 0 and 255.

    Raises
    ------
    UsageError
        If ``family`` is not a dot family or ``size`` is too small.
    """
    check_choice("family", family, DOT_FAMILIES)
    size = check_int("size", size, low=_MIN_SIZE)
    px = size / _REF_SIZE

    r_lo, r_hi = _DOT_RADIUS[family]
    radius = max(rng.uniform(r_lo, r_hi) * px, 1.0)
    n = int(rng.integers(_DOT_COUNT[0], _DOT_COUNT[1] + 1))

    pts = _DOT_GENERATORS[family](rng, n)
    pts = pts + rng.normal(0.0, _DOT_JITTER, pts.shape)
    # Slight per-dot size variation around the image's typical radius.
    radii = np.clip(radius * rng.uniform(0.85, 1.15, len(pts)), 1.0, None)

    margin = float(radii.max()) + 1.0
    xy = _place(pts, rng, size, margin, _DOT_SCALE)

    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    for (x, y), r in zip(xy, radii):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
    return img


def draw_silhouette(family, rng, size=200):
    """Draw one filled black shape of a family on a white canvas.

    The shape is randomly rotated, scaled to 45-90 % of the usable canvas
    and shifted, and some families vary in proportions (star depth,
    crescent thickness, bar aspect ratio).

    Parameters
    ----------
    family : str
        One of :data:`SILHOUETTE_FAMILIES`: ``'disk'``, ``'square'``,
        ``'star'`` (five-pointed), ``'crescent'``, ``'ellipse_bar'`` (a long
        thin ellipse) or ``'heart'``.
    rng : numpy.random.Generator
        Source of randomness; the image is a deterministic function of its
        state.
    size : int, default=200
        Width and height of the square image in pixels (at least 32).

    Returns
    -------
    PIL.Image.Image
        A ``size`` x ``size`` image in mode ``'L'`` containing only the
        values 0 and 255.

    Raises
    ------
    UsageError
        If ``family`` is not a silhouette family or ``size`` is too small.
    """
    check_choice("family", family, SILHOUETTE_FAMILIES)
    size = check_int("size", size, low=_MIN_SIZE)
    outline = _SIL_GENERATORS[family](rng)
    xy = _place(outline, rng, size, 2.0, _SIL_SCALE)
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in xy], fill=0)
    return img


# --------------------------------------------------------------------------
# image sets
# --------------------------------------------------------------------------


def make_image_set(out_dir, n_per_family=10, families=None, kind="dots", size=200, seed=0,
                   subfolders=False):
    """Write a labelled synthetic image set as PNG files.

    ``n_per_family`` images are drawn for every family and written in a
    seeded, shuffled order as ``img_00000.png``, ``img_00001.png``, ... so
    that the family cannot be read from the file name.  With
    ``subfolders=True`` each image goes to ``<family>/img_XXXXX.png``
    instead (the index is still the global shuffled index, so the same seed
    gives the same image for the same index either way).  Nothing else is
    written.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Destination directory; created (with parents) if missing.
    n_per_family : int, default=10
        Number of images per family (at least 1).
    families : iterable of str or str, optional
        Families to draw, each one of :data:`DOT_FAMILIES` (``kind='dots'``)
        or :data:`SILHOUETTE_FAMILIES` (``kind='silhouettes'``).  A single
        string means one family.  Defaults to all families of ``kind``.
    kind : {'dots', 'silhouettes'}, default='dots'
        Type of images.
    size : int, default=200
        Width and height of every image in pixels (at least 32).
    seed : int, default=0
        Seed of the random generator; identical arguments give
        byte-identical files.
    subfolders : bool, default=False
        Put each family's images into a sub-directory named after it.

    Returns
    -------
    dict of str to str
        Mapping from each written file's path relative to ``out_dir``
        (POSIX separators) to its family, in index order.

    Raises
    ------
    UsageError
        If ``kind`` or a family is unknown, a family is repeated, or
        ``n_per_family`` or ``size`` is invalid.
    FileExistsError
        If any target file already exists.  The check happens before
        anything is written, and files are opened in exclusive-create mode,
        so existing files are never overwritten.
    """
    check_choice("kind", kind, KINDS)
    all_families = DOT_FAMILIES if kind == "dots" else SILHOUETTE_FAMILIES
    draw = draw_dots if kind == "dots" else draw_silhouette

    if families is None:
        fams = list(all_families)
    else:
        fams = [families] if isinstance(families, str) else list(families)
        if not fams:
            raise UsageError("families=[] must name at least one family")
        for fam in fams:
            check_choice("family", fam, all_families)
        dupes = sorted({f for f in fams if fams.count(f) > 1})
        if dupes:
            raise UsageError(f"families={fams!r} names {', '.join(dupes)} more than once")
    n_per_family = check_int("n_per_family", n_per_family)
    size = check_int("size", size, low=_MIN_SIZE)

    out = Path(out_dir)
    labels = [fam for fam in fams for _ in range(n_per_family)]
    ss = np.random.SeedSequence(seed)
    order_ss, images_ss = ss.spawn(2)
    order = np.random.default_rng(order_ss).permutation(len(labels))
    labels = [labels[i] for i in order]
    image_seeds = images_ss.spawn(len(labels))

    width = max(5, len(str(len(labels) - 1)))
    rel_paths = []
    for i, fam in enumerate(labels):
        name = f"img_{i:0{width}d}.png"
        rel_paths.append(f"{fam}/{name}" if subfolders else name)

    existing = [p for p in rel_paths if (out / p).exists()]
    if existing:
        raise FileExistsError(
            f"{len(existing)} target file(s) already exist in {str(out)!r}, "
            f"e.g. {existing[0]!r}; refusing to overwrite."
        )

    out.mkdir(parents=True, exist_ok=True)
    if subfolders:
        for fam in fams:
            (out / fam).mkdir(exist_ok=True)

    truth = {}
    for rel, fam, child in zip(rel_paths, labels, image_seeds):
        img = draw(fam, np.random.default_rng(child), size)
        with open(out / rel, "xb") as fh:
            img.save(fh, format="PNG")
        truth[rel] = fam
    return truth


def write_truth_csv(truth, path):
    """Write a ground-truth mapping as a CSV file with header ``path,label``.

    Parameters
    ----------
    truth : dict of str to str
        Mapping from image path (as returned by :func:`make_image_set`) to
        its family label.  Rows are written in the mapping's order.
    path : str or os.PathLike
        Destination CSV file; overwritten if it exists.

    Returns
    -------
    None
    """
    text = csv_text(["path", "label"], truth.items())
    atomic_write(path, lambda fh: fh.write(text), "w")
