"""One filled black shape on a white canvas (a disk, a star, a heart, ...)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ._canvas import check_drawing, place

FAMILIES = (
    "disk",
    "square",
    "star",
    "crescent",
    "ellipse_bar",
    "heart",
)

_SIL_SCALE = (0.45, 0.9)


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


def draw(family, rng, size=200):
    """Draw one filled black shape of a family on a white canvas.

    The shape is randomly rotated, scaled to 45-90 % of the usable canvas
    and shifted, and some families vary in proportions (star depth,
    crescent thickness, bar aspect ratio).

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`: ``'disk'``, ``'square'``,
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
    size, _ = check_drawing(family, FAMILIES, size)
    outline = _SIL_GENERATORS[family](rng)
    xy = place(outline, rng, size, 2.0, _SIL_SCALE)
    img = Image.new("L", (size, size), 255)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in xy], fill=0)
    return img
