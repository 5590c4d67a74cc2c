"""What every drawing shares: the reference canvas, the size check and placement."""

from __future__ import annotations

import numpy as np

from ..checks import check_choice, check_int

#: Canvas size the pixel constants of the drawings refer to; they scale with size.
REF_SIZE = 200
MIN_SIZE = 32


def check_drawing(family, families, size):
    """Validate a family name and a canvas size; return ``(size, pixels per reference pixel)``."""
    check_choice("family", family, families)
    size = check_int("size", size, low=MIN_SIZE)
    return size, size / REF_SIZE


def place(pts, rng, size, margin, scale_range):
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
