"""Black-and-white textures filling the whole canvas: the class is the texture, not a shape.

Hatching, cross-hatching, checkers and waves are periodic patterns at a
random angle, period and line width; stipple is scattered small dots and
grain is smoothed noise cut at a random level. Nothing in them has a place,
so only how the marks look tells the families apart.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ._canvas import check_drawing

FAMILIES = ("hatch", "crosshatch", "stipple", "grain", "checker", "waves")

_PERIOD_PX = (7.0, 16.0)  # stripe period at the reference size
_INK = (0.2, 0.45)  # fraction of a period that is black


def _rotated(size, rng):
    """Pixel coordinates rotated by a random angle: (u, v) arrays."""
    a = rng.uniform(0.0, np.pi)
    y, x = np.mgrid[:size, :size].astype(float)
    return x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)


def _stripes(u, period, ink):
    return np.mod(u, period) < ink * period


def _hatch(size, px, rng):
    u, _ = _rotated(size, rng)
    return _stripes(u, rng.uniform(*_PERIOD_PX) * px, rng.uniform(*_INK))


def _crosshatch(size, px, rng):
    u, v = _rotated(size, rng)
    period = rng.uniform(*_PERIOD_PX) * px
    ink = rng.uniform(*_INK) * 0.7
    skew = np.radians(rng.uniform(-15.0, 15.0))
    return _stripes(u, period, ink) | _stripes(v * np.cos(skew) + u * np.sin(skew), period, ink)


def _checker(size, px, rng):
    u, v = _rotated(size, rng)
    cell = rng.uniform(8.0, 22.0) * px
    return (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0


def _waves(size, px, rng):
    u, v = _rotated(size, rng)
    period = rng.uniform(*_PERIOD_PX) * px
    wavelength = rng.uniform(25.0, 60.0) * px
    amplitude = rng.uniform(0.25, 0.6) * wavelength / 2
    return _stripes(v + amplitude * np.sin(2 * np.pi * u / wavelength), period, rng.uniform(*_INK))


def _grain(size, px, rng):
    noise = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))
    blurred = np.asarray(noise.filter(ImageFilter.GaussianBlur(rng.uniform(1.2, 3.0) * px)))
    return blurred < np.quantile(blurred, rng.uniform(0.35, 0.6))


def _stipple(size, px, rng):
    img = Image.new("L", (size, size), 0)
    canvas = ImageDraw.Draw(img)
    # As many dots as at the reference size, not more: the dots already grow
    # with the canvas. Fewer on a smaller canvas, where a dot cannot shrink
    # below a pixel, and never a radius under one pixel: smaller ones may
    # not be drawn at all, and a canvas without a dot would be blank.
    n = int(rng.integers(250, 900) * min(px, 1.0) ** 2)
    r = max(rng.uniform(1.0, 2.2) * px, 1.0)
    for x, y in rng.uniform(0, size - 1, (n, 2)):
        canvas.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return np.asarray(img) > 0


_PATTERNS = {
    "hatch": _hatch,
    "crosshatch": _crosshatch,
    "stipple": _stipple,
    "grain": _grain,
    "checker": _checker,
    "waves": _waves,
}


def draw(family, rng, size=200):
    """Draw one texture of a family over the whole canvas.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`: ``'hatch'`` (parallel stripes),
        ``'crosshatch'`` (two crossing sets), ``'stipple'`` (scattered small
        dots), ``'grain'`` (smoothed noise cut at a level), ``'checker'``
        (a rotated checkerboard) or ``'waves'`` (wavy stripes).
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
        If ``family`` is not a texture family or ``size`` is too small.
    """
    size, px = check_drawing(family, FAMILIES, size)
    black = _PATTERNS[family](size, px, rng)
    return Image.fromarray(np.where(black, 0, 255).astype(np.uint8), mode="L")
