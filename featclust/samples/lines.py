"""Thin line drawings: one open or closed curve, 1-3 pixels wide, drawn by a slightly shaky hand.

Almost all of the canvas stays white, so these test whether features keep
the shape of a thin curve rather than its ink.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ._canvas import check_drawing, place

FAMILIES = ("circle", "triangle", "square", "star", "spiral", "zigzag", "wave", "arrow")

_SCALE = (0.5, 0.95)
_WIDTH_PX = (1.0, 3.0)
_SHAKE = 0.025  # typical drift of the hand tremor, in unit coordinates


def _polygon(corners):
    """A closed polyline through the corners, sampled densely enough to shake."""
    c = np.vstack([corners, corners[:1]])
    return np.vstack(
        [np.linspace(a, b, 24, endpoint=False) for a, b in zip(c[:-1], c[1:])] + [c[-1:]]
    )


def _circle(rng):
    t = np.linspace(0, 2 * np.pi, 120)
    return np.column_stack([np.cos(t), rng.uniform(0.8, 1.0) * np.sin(t)])


def _triangle(rng):
    a = np.pi / 2 + np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.15, 0.15, 3)
    return _polygon(np.column_stack([np.cos(a), np.sin(a)]))


def _square(rng):
    h = rng.uniform(0.7, 1.0)
    return _polygon(np.array([[-1, -h], [1, -h], [1, h], [-1, h]], dtype=float))


def _star(rng):
    t = np.pi / 2 + np.arange(10) * np.pi / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.35, 0.5))
    return _polygon(np.column_stack([r * np.cos(t), r * np.sin(t)]))


def _spiral(rng):
    tmax = rng.uniform(2.0, 3.0) * 2 * np.pi
    theta = tmax * np.sqrt(np.linspace(0.02, 1.0, 300))
    r = theta / tmax
    return np.column_stack([r * np.cos(theta), r * np.sin(theta)])


def _zigzag(rng):
    n = int(rng.integers(4, 8))
    x = np.linspace(-1, 1, n + 1)
    y = np.where(np.arange(n + 1) % 2 == 0, -1.0, 1.0) * rng.uniform(0.25, 0.5)
    return _polygon(np.column_stack([x, y]))[:-1][: 24 * n + 1]


def _wave(rng):
    x = np.linspace(-1, 1, 200)
    cycles = rng.uniform(1.5, 3.0)
    return np.column_stack([x, rng.uniform(0.15, 0.35) * np.sin(2 * np.pi * cycles * x / 2)])


def _arrow(rng):
    head = rng.uniform(0.3, 0.5)
    spread = rng.uniform(0.5, 0.9)
    shaft = np.column_stack([np.linspace(-1, 1, 60), np.zeros(60)])
    tip = np.array([1.0, 0.0])
    barbs = [np.linspace(tip, tip + head * np.array([-1.0, s * spread]), 20) for s in (1, -1)]
    # one stroke: along the shaft, out and back along each barb
    return np.vstack([shaft, barbs[0], barbs[0][::-1], barbs[1]])


_CURVES = {
    "circle": _circle,
    "triangle": _triangle,
    "square": _square,
    "star": _star,
    "spiral": _spiral,
    "zigzag": _zigzag,
    "wave": _wave,
    "arrow": _arrow,
}


def draw(family, rng, size=200):
    """Draw one thin line drawing of a family, rotated, scaled and shifted at random.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`: closed outlines (``'circle'``,
        ``'triangle'``, ``'square'``, ``'star'``) and open curves
        (``'spiral'``, ``'zigzag'``, ``'wave'``, ``'arrow'``).
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
        If ``family`` is not a line family or ``size`` is too small.
    """
    size, px = check_drawing(family, FAMILIES, size)
    pts = _CURVES[family](rng)
    walk = np.cumsum(rng.normal(0.0, _SHAKE / np.sqrt(len(pts)), pts.shape), axis=0)
    pts = pts + walk - np.linspace(0, 1, len(pts))[:, None] * walk[-1]  # ends stay put
    width = max(1, int(round(rng.uniform(*_WIDTH_PX) * px)))
    xy = place(pts, rng, size, width + 1.0, _SCALE)
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).line(
        [(float(x), float(y)) for x, y in xy], fill=0, width=width, joint="curve"
    )
    return img
