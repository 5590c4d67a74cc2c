"""Pooling a VGG16 block's feature map to a vector: blocks, grids, the pooling graph.

With a grid, the vector is the whole map's part, then the cells' part times
``grid_weight``; each part L2-normalised (and, with several blocks, each
block's share of it first), so the weight alone says how much layout counts.

The pooling is built as Keras operations on the module handed in by
:mod:`featclust.embed`, so this module imports no Keras or TensorFlow itself.
"""

from __future__ import annotations

from typing import Any

from .errors import UsageError

POOLINGS = ("avg", "max", "gem", "flatten")
#: VGG16 blocks whose pooled output can be the feature map: (side, channels).
LAYERS = {"block3": (28, 256), "block4": (14, 512), "block5": (7, 512)}
#: Spatial grids: 1 pools the whole map, 2 adds the 2x2 cells, 4 the 2x2 and 4x4 cells.
GRIDS = (1, 2, 4)
#: Exponent of generalised-mean pooling.
GEM_P = 3.0


def layer_blocks(layer: str) -> tuple[str, ...]:
    """The blocks named by ``layer`` (``"block4"``, ``"block4+block5"``), in network order.

    Raises
    ------
    UsageError
        If ``layer`` names no block, an unknown one or one twice.
    """
    names = str(layer).split("+") if isinstance(layer, str) else []
    if not names or any(n not in LAYERS for n in names) or len(set(names)) < len(names):
        raise UsageError(
            f"layer={layer!r} must be one of {', '.join(LAYERS)} or several of "
            f"them joined by '+' (e.g. 'block4+block5')"
        )
    return tuple(sorted(names))


def grid_cells(side: int, grid: int) -> list[list[tuple[int, int]]]:
    """The ``(start, stop)`` row (and column) ranges of each pooled cell along one side.

    Level ``g`` cuts the side into ``g`` ranges ``[floor(i*side/g), ceil((i+1)*side/g))``:
    equal parts, and on an odd side the middle row is in both halves.

    Parameters
    ----------
    side : int
        The map's height (it is square).
    grid : {1, 2, 4}

    Returns
    -------
    list of list of (int, int)
        One list of ranges per level: ``[[(0, side)], [(0, h), (h', side)], ...]``.
    """
    return [[(i * side // g, -(-(i + 1) * side // g)) for i in range(g)] for g in levels(grid)]


def levels(grid: int) -> list[int]:
    """The grid levels pooled: 1, then 2 and 4 up to ``grid``."""
    return [g for g in GRIDS if g <= grid]


def pool_grid(keras: Any, y: Any, pooling: str, grid: int) -> tuple[Any, Any]:
    """``(batch, h, w, c)`` block output to its whole-map and cell vectors (float32).

    Returns
    -------
    whole, cells
        ``(batch, c)`` and ``(batch, (cells - 1) * c)``: the cells of each level
        after the first, row by row; ``cells`` is ``None`` for ``grid=1``.
        With ``"flatten"``, ``whole`` is the flattened map.
    """
    if pooling == "flatten":
        return keras.layers.Flatten(dtype="float32")(y), None
    ops = keras.ops
    y = ops.cast(y, "float32")
    side = y.shape[1]
    parts = [
        _pool_region(ops, y[:, r0:r1, c0:c1, :], pooling)
        for ranges in grid_cells(side, grid)
        for r0, r1 in ranges
        for c0, c1 in ranges
    ]
    cells = None if len(parts) == 1 else ops.concatenate(parts[1:], axis=1)
    return parts[0], cells


def combine(ops: Any, wholes: list, cells: list, grid_weight: float) -> Any:
    """The feature vector of the blocks' whole-map and cell vectors (see the module)."""
    if len(wholes) > 1:
        wholes, cells = (
            [_l2(ops, v) for v in wholes],
            [c if c is None else _l2(ops, c) for c in cells],
        )
    whole = wholes[0] if len(wholes) == 1 else ops.concatenate(wholes, axis=1)
    if cells[0] is None:
        return whole
    cell = cells[0] if len(cells) == 1 else ops.concatenate(cells, axis=1)
    return ops.concatenate([_l2(ops, whole), grid_weight * _l2(ops, cell)], axis=1)


def _l2(ops, v):
    return v / ops.maximum(ops.norm(v, axis=1, keepdims=True), 1e-12)


def _pool_region(ops, y, pooling):
    if pooling == "max":
        return ops.max(y, axis=(1, 2))
    if pooling == "avg":
        return ops.mean(y, axis=(1, 2))
    y = ops.maximum(y, 1e-6)
    return ops.power(ops.mean(ops.power(y, GEM_P), axis=(1, 2)), 1.0 / GEM_P)
