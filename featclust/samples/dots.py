"""Black dots on a white canvas arranged in an overall shape (a ring, a line, a spiral, ...).

This mirrors the motivating data set: 200x200 black-and-white PNGs of black
dots, where users want groups of similar overall shape.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ._canvas import check_drawing, place

FAMILIES = (
    "ring",
    "line",
    "cross",
    "triangle",
    "grid",
    "clusters",
    "scatter",
    "spiral",
)

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


def draw(family, rng, size=200):
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
        One of :data:`FAMILIES`: ``'ring'`` (dots on a circle),
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
    size, px = check_drawing(family, FAMILIES, size)

    r_lo, r_hi = _DOT_RADIUS[family]
    radius = max(rng.uniform(r_lo, r_hi) * px, 1.0)
    n = int(rng.integers(_DOT_COUNT[0], _DOT_COUNT[1] + 1))

    pts = _DOT_GENERATORS[family](rng, n)
    pts = pts + rng.normal(0.0, _DOT_JITTER, pts.shape)
    # Slight per-dot size variation around the image's typical radius.
    radii = np.clip(radius * rng.uniform(0.85, 1.15, len(pts)), 1.0, None)

    margin = float(radii.max()) + 1.0
    xy = place(pts, rng, size, margin, _DOT_SCALE)

    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    for (x, y), r in zip(xy, radii):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
    return img
