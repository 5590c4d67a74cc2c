"""Synthetic labelled image sets whose right clusters are known in advance.

Six kinds of images, each a module with its families, all 8-bit greyscale
(mode ``'L'``) with a white (255) background and black (0) marks:

``'dots'`` (:mod:`.dots`)
    Black dots arranged in an overall shape (a ring, a line, a spiral, ...):
    the motivating data set.
``'silhouettes'`` (:mod:`.silhouettes`)
    One filled black shape (a disk, a star, a heart, ...).
``'glyphs'`` (:mod:`.glyphs`)
    Blocky stroke letters whose class is the layout of their strokes.
``'textures'`` (:mod:`.textures`)
    Hatching, stipple, grain, checkers and waves over the whole canvas.
``'lines'`` (:mod:`.lines`)
    Thin line drawings of outlines and open curves.
``'symbols'`` (:mod:`.symbols`)
    Digits drawn on a coarse grid, upscaled and centred: the class is where
    the strokes sit in the frame.

Every image is randomly placed (the symbols only nudged), scaled and varied
within its family, so that a family can only be recognised by what it is
drawn to share. Generation is
deterministic for a given seed and uses only NumPy and Pillow.
"""

from ..checks import check_choice
from . import dots, glyphs, lines, silhouettes, symbols, textures
from .sets import KINDS, make_image_set, write_truth_csv

#: Families of each kind.
FAMILIES = {kind: module.FAMILIES for kind, module in KINDS.items()}
DOT_FAMILIES = dots.FAMILIES
SILHOUETTE_FAMILIES = silhouettes.FAMILIES
draw_dots = dots.draw
draw_silhouette = silhouettes.draw

# The kinds' modules (dots, glyphs, ...) are public too: each has FAMILIES and draw().
__all__ = [
    "DOT_FAMILIES",
    "FAMILIES",
    "KINDS",
    "SILHOUETTE_FAMILIES",
    "dots",
    "draw",
    "draw_dots",
    "draw_silhouette",
    "glyphs",
    "lines",
    "make_image_set",
    "silhouettes",
    "symbols",
    "textures",
    "write_truth_csv",
]


def draw(kind, family, rng, size=200):
    """Draw one image of ``family`` of ``kind`` (see :data:`KINDS`); a mode ``'L'`` PIL image."""
    check_choice("kind", kind, tuple(KINDS))
    return KINDS[kind].draw(family, rng, size)
