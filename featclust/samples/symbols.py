"""Small centred symbols drawn on a coarse grid and upscaled: where the strokes sit is the class.

Seven-segment style digits, as a scanner or an old display would give them:
each is drawn on a low-resolution grid of 8x8 to 16x16 cells with jittered
stroke ends and a random stroke thickness, nudged by up to half a cell, then
upscaled to the canvas with square (nearest-neighbour) pixels. Every symbol
fills most of the frame and stands near its centre, so the classes differ
only in which strokes sit where: ``'2'`` and ``'5'`` are mirror images and
``'6'`` and ``'9'`` turn into each other, which a position-free feature
cannot tell apart.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ._canvas import check_drawing

#: Strokes of each symbol as polylines on a unit box (x right, y down).
_STROKES = {
    "0": [[(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]],
    "1": [[(-0.5, -0.5), (0.2, -1), (0.2, 1)]],
    "2": [[(-1, -1), (1, -1), (1, 0), (-1, 0), (-1, 1), (1, 1)]],
    "3": [[(-1, -1), (1, -1), (1, 1), (-1, 1)], [(-0.6, 0), (1, 0)]],
    "4": [[(-1, -1), (-1, 0), (1, 0)], [(1, -1), (1, 1)]],
    "5": [[(1, -1), (-1, -1), (-1, 0), (1, 0), (1, 1), (-1, 1)]],
    "6": [[(1, -1), (-1, -1), (-1, 1), (1, 1), (1, 0), (-1, 0)]],
    "7": [[(-1, -1), (1, -1), (0, 1)]],
    "8": [[(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)], [(-1, 0), (1, 0)]],
    "9": [[(1, 0), (-1, 0), (-1, -1), (1, -1), (1, 1), (-1, 1)]],
}
FAMILIES = tuple(_STROKES)

_CELLS = (8, 16)  # side of the coarse grid, in cells (inclusive)
_HEIGHT = (0.75, 0.9)  # symbol height / frame
_ASPECT = (0.5, 0.75)  # width / height
_THICK = (1.0, 1.5)  # stroke width, in cells
_WOBBLE = 0.06  # gaussian jitter of every stroke point, in unit-box coordinates
_SHIFT = 0.5  # largest shift off the centre, in cells
_SUPER = 8  # the coarse grid is drawn this much finer, then box-averaged


def draw(family, rng, size=200):
    """Draw one centred symbol of a family on a white canvas.

    Parameters
    ----------
    family : str
        One of :data:`FAMILIES`: the digits ``'0'`` to ``'9'``.
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
        If ``family`` is not a symbol family or ``size`` is too small.
    """
    size, _ = check_drawing(family, FAMILIES, size)
    cells = int(rng.integers(_CELLS[0], _CELLS[1] + 1))
    side = cells * _SUPER
    height = rng.uniform(*_HEIGHT) * side
    half = np.array([rng.uniform(*_ASPECT) * height, height]) / 2
    stroke = rng.uniform(*_THICK) * _SUPER
    shift = rng.uniform(-_SHIFT, _SHIFT, 2) * _SUPER
    centre = np.array([side, side]) / 2 + shift

    r = stroke / 2
    lines = [
        np.clip(np.asarray(line, float) + rng.normal(0.0, _WOBBLE, (len(line), 2)), -1.15, 1.15)
        * half
        for line in _STROKES[family]
    ]
    # Shrink a symbol that would leave the frame: a cell stays white round it.
    room = side / 2 - _SUPER - r - np.abs(shift).max()
    shrink = min(1.0, room / float(np.abs(np.vstack(lines)).max()))

    fine = Image.new("L", (side, side), 255)
    canvas = ImageDraw.Draw(fine)
    for p in lines:
        xy = [(float(x), float(y)) for x, y in p * shrink + centre]
        canvas.line(xy, fill=0, width=int(round(stroke)))
        for x, y in xy:  # round joints and ends, so strokes meet without notches
            canvas.ellipse((x - r, y - r, x + r, y + r), fill=0)
    coarse = fine.resize((cells, cells), Image.Resampling.BOX).point(
        lambda v: 0 if v < 160 else 255
    )
    return coarse.resize((size, size), Image.Resampling.NEAREST)
