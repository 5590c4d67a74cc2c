"""Blocky stroke characters whose class is where their strokes are, not how they look.

Every family is drawn with the same thick straight strokes; only their layout
differs (an ``'L'`` and a ``'U'`` share two of their three strokes). Glyphs
stand upright, as handwriting does: a little tilt, random proportions,
position, size and stroke width, and every stroke end wobbles.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ._canvas import check_drawing

#: Strokes of each glyph as polylines on a unit box (x right, y down).
_STROKES = {
    "L": [[(-1, -1), (-1, 1), (1, 1)]],
    "T": [[(-1, -1), (1, -1)], [(0, -1), (0, 1)]],
    "H": [[(-1, -1), (-1, 1)], [(1, -1), (1, 1)], [(-1, 0), (1, 0)]],
    "E": [[(1, -1), (-1, -1), (-1, 1), (1, 1)], [(-1, 0), (0.7, 0)]],
    "U": [[(-1, -1), (-1, 1), (1, 1), (1, -1)]],
    "Z": [[(-1, -1), (1, -1), (-1, 1), (1, 1)]],
    "N": [[(-1, 1), (-1, -1), (1, 1), (1, -1)]],
    "plus": [[(-1, 0), (1, 0)], [(0, -1), (0, 1)]],
}
FAMILIES = tuple(_STROKES)

_HEIGHT = (0.35, 0.75)  # glyph height / canvas
_ASPECT = (0.55, 1.0)  # width / height
_WIDTH_PX = (5.0, 16.0)  # stroke width at the reference size
_WOBBLE = 0.1  # gaussian jitter of every stroke point, in unit-box coordinates
_TILT = np.radians(12.0)


def draw(family, rng, size=200):
    """Draw one stroke glyph of a family on a white canvas.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`: the letters ``'L'``, ``'T'``, ``'H'``,
        ``'E'``, ``'U'``, ``'Z'``, ``'N'``, or ``'plus'``.
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
        If ``family`` is not a glyph family or ``size`` is too small.
    """
    size, px = check_drawing(family, FAMILIES, size)
    height = rng.uniform(*_HEIGHT) * size
    width = rng.uniform(*_ASPECT) * height
    stroke = max(rng.uniform(*_WIDTH_PX) * px, 2.0)
    tilt = rng.uniform(-_TILT, _TILT)
    c, s = np.cos(tilt), np.sin(tilt)
    half = np.array([width, height]) / 2
    lines = []
    for line in _STROKES[family]:
        p = np.asarray(line, dtype=float) + rng.normal(0.0, _WOBBLE, (len(line), 2))
        lines.append((np.clip(p, -1.2, 1.2) * half) @ np.array([[c, s], [-s, c]]))
    margin = stroke / 2 + 2
    room = size - 1 - 2 * margin
    pts = np.vstack(lines)
    shrink = min(1.0, room / float((pts.max(axis=0) - pts.min(axis=0)).max()))
    lines = [p * shrink for p in lines]
    lo, hi = pts.min(axis=0) * shrink, pts.max(axis=0) * shrink
    slack = np.maximum(room - (hi - lo), 0.0)
    offset = margin - lo + rng.uniform(0.0, 1.0, 2) * slack

    img = Image.new("L", (size, size), 255)
    canvas = ImageDraw.Draw(img)
    r = stroke / 2
    for p in lines:
        xy = [(float(x), float(y)) for x, y in p + offset]
        canvas.line(xy, fill=0, width=int(round(stroke)))
        for x, y in xy:  # round joints and ends, so strokes meet without notches
            canvas.ellipse((x - r, y - r, x + r, y + r), fill=0)
    return img
