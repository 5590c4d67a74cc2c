"""Similar images and near-duplicates: exact cosine search over feature rows, block by block.

The feature matrix may be a memory-mapped array from the store: it is read one
block of rows at a time, so memory grows with the block size (and the number of
queries times ``top``), not with the number of rows. The search is exact (plain
matrix products in float32). On 32,000 x 512 features one query takes a few
milliseconds and all 32,000 rows against each other (every near-duplicate) some
seconds on 2 cores (``benchmarks/similar_speed.py``), so no approximate index
is used.

The default near-duplicate threshold, :data:`NEAR_DUPLICATE`, was chosen on
generated sets with known near-duplicates (``benchmarks/near_duplicates.py``;
what it does and does not find is said there).
No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .checks import check_float, check_int
from .errors import UsageError

#: Cosine similarity at or above which two images count as near-duplicates.
#: Chosen by ``benchmarks/near_duplicates.py`` on generated shape images with
#: the default layer and pooling (block4, max) and random weights: copies
#: resaved as JPEG (quality 50-75) or with noise (sigma 8-16 grey levels) are
#: >= 0.9993 to their original, distinct images of the same families <= 0.998,
#: so every such copy is found and no false group forms. Copies shifted or
#: scaled by a few pixels are not told from distinct images by random-weight
#: features at any threshold. Pretrained weights spread distinct images
#: further apart (benchmarks/HED_WEIGHTS.md), so the default is likely conservative
#: there (not measured: no
#: pretrained file was available); pass a lower ``threshold`` to find more.
NEAR_DUPLICATE = 0.999
#: Feature rows per block: 2,048 x 2,048 similarities are 16 MB of float32.
BLOCK_ROWS = 2048


def _matrix(name, X, width=None):
    """``X`` as a 2-D array (a memory-mapped one is not copied); checked, not converted."""
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or not np.issubdtype(X.dtype, np.number):
        raise UsageError(
            f"{name} must be a 2-D numeric array, got shape {tuple(X.shape)} of {X.dtype}"
        )
    if width is not None and X.shape[1] != width:
        raise UsageError(f"{name} has {X.shape[1]} columns; the features have {width}")
    return X


def _unit(block, dtype=np.float32):
    """Rows of ``block`` as unit vectors (zero rows stay zero); NaN raises."""
    B = np.asarray(block, dtype=dtype)
    norms = np.linalg.norm(B, axis=1, keepdims=True)
    if not np.isfinite(norms).all():
        raise UsageError("features contain NaN or infinite values")
    return B / np.where(norms > 0, norms, 1.0)


def _blocks(n, rows):
    return [(start, min(n, start + rows)) for start in range(0, n, rows)]


def top_similar(
    features: Any,
    queries: Any,
    top: int = 10,
    block_rows: int = BLOCK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` rows of ``features`` most similar to each query (cosine, exact).

    Parameters
    ----------
    features : array-like of shape (n_rows, n_features)
        Read block by block; a memory-mapped array is never loaded whole.
    queries : array-like of shape (n_queries, n_features) or (n_features,)
        Feature vectors to search for (one vector: one query).
    top : int, default 10
        Neighbours per query; at most ``n_rows`` are returned.
    block_rows : int, default BLOCK_ROWS
        Rows of ``features`` (and queries) per block.

    Returns
    -------
    indices : ndarray of shape (n_queries, min(top, n_rows)), int64
        Rows of ``features``, most similar first (ties: lower row first).
    similarities : ndarray of shape (n_queries, min(top, n_rows)), float32
        Cosine similarities in ``[-1, 1]``; a zero vector is similar to
        nothing (0). A query that is a row of ``features`` finds that row
        first with similarity 1.0 (unless an identical row comes earlier).

    Raises
    ------
    UsageError
        For a non-positive ``top``, empty features, NaN values or a width
        that differs between features and queries.
    """
    top = check_int("top", top)
    block_rows = check_int("block_rows", block_rows)
    F = _matrix("features", features)
    n = len(F)
    if n == 0:
        raise UsageError("features has no rows: nothing to search")
    Q = np.asarray(queries, dtype=np.float32)
    Q = _matrix("queries", Q[None, :] if Q.ndim == 1 else Q, F.shape[1])
    k = min(top, n)
    out_i = np.empty((len(Q), k), np.int64)
    out_s = np.empty((len(Q), k), np.float32)
    for qa, qb in _blocks(len(Q), block_rows):
        q = _unit(Q[qa:qb])
        best_s = np.full((len(q), 0), -np.inf, np.float32)
        best_i = np.empty((len(q), 0), np.int64)
        for fa, fb in _blocks(n, block_rows):
            s = q @ _unit(F[fa:fb]).T
            if s.shape[1] > k:  # the block's own k best first: merging stays small
                cols = _topk_order(s, None, k)
                s, rows = np.take_along_axis(s, cols, axis=1), cols + fa
            else:
                rows = np.broadcast_to(np.arange(fa, fb), s.shape)
            cand_s = np.concatenate([best_s, s], axis=1)
            cand_i = np.concatenate([best_i, rows], axis=1)
            if cand_s.shape[1] > k:
                # Keep the k largest; among equal similarities the lower rows,
                # so the result does not depend on the block size.
                order = _topk_order(cand_s, cand_i, k)
                cand_s = np.take_along_axis(cand_s, order, axis=1)
                cand_i = np.take_along_axis(cand_i, order, axis=1)
            best_s, best_i = cand_s, cand_i
        best_s = _exact_similarities(F, Q[qa:qb], best_i)
        order = np.lexsort((best_i, -best_s), axis=1)
        out_i[qa:qb] = np.take_along_axis(best_i, order, axis=1)
        out_s[qa:qb] = np.take_along_axis(best_s, order, axis=1)
    return out_i, out_s


def _exact_similarities(F, Q, idx, pairs=8192):
    """Cosine of each query with its candidate rows ``idx``, computed in float64.

    The float32 products find the candidates; recomputing the few kept ones in
    float64 makes an image's similarity with itself exactly 1.0. ``pairs``
    (query, row) pairs at a time, so memory is bounded whatever ``top`` is.
    """
    q = _unit(Q, np.float64)
    flat_q = np.repeat(np.arange(len(Q)), idx.shape[1])
    flat_r = idx.ravel()
    out = np.empty(len(flat_r), np.float32)
    for a in range(0, len(flat_r), pairs):
        rows = flat_r[a : a + pairs]
        wanted, where = np.unique(rows, return_inverse=True)  # sorted reads of a memmap
        G = _unit(F[wanted], np.float64)[where]
        out[a : a + pairs] = np.clip(np.sum(G * q[flat_q[a : a + pairs]], axis=1), -1.0, 1.0)
    return out.reshape(idx.shape)


def _topk_order(s, idx, k):
    """Column order of the k largest ``s`` per row (ties to the lower ``idx``), unsorted.

    ``idx`` None: the columns are rows in increasing order.
    """
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    kth = np.min(np.take_along_axis(s, part, axis=1), axis=1, keepdims=True)
    # Rows where a value equal to the k-th is left out: resolve those ties exactly.
    tied = np.flatnonzero(np.sum(s >= kth, axis=1) > k)
    for r in tied:
        key = np.arange(s.shape[1]) if idx is None else idx[r]
        part[r] = np.lexsort((key, -s[r]))[:k]
    return part


def near_duplicate_groups(
    features: Any, threshold: float = NEAR_DUPLICATE, block_rows: int = BLOCK_ROWS
) -> list[list[tuple[int, float]]]:
    """Groups of rows whose features are near-identical (cosine similarity >= ``threshold``).

    Two rows are linked when their cosine similarity reaches ``threshold``;
    a group is a connected set of linked rows (so A and C share a group when
    each is near B). All pairs are compared, block against block: memory
    stays flat in the number of rows.

    Parameters
    ----------
    features : array-like of shape (n_rows, n_features)
        Read block by block; a memory-mapped array is never loaded whole.
    threshold : float, default NEAR_DUPLICATE
        In ``(0, 1]``.
    block_rows : int, default BLOCK_ROWS

    Returns
    -------
    list of list of (int, float)
        One list per group of at least 2 rows: ``(row, similarity_to_first)``.
        The first member is the group's representative, the row linked to
        most others of the group (ties: the lower row), with similarity 1.0;
        the others follow by decreasing similarity to it (ties: lower row).
        Groups are ordered by their lowest row.

    Raises
    ------
    UsageError
        For a threshold outside ``(0, 1]``, NaN values or a non-2-D array.
    """
    threshold = check_float("threshold", threshold, low=0, high=1)
    if threshold == 0:
        raise UsageError("threshold=0 must be above 0 (every pair of images would be linked)")
    block_rows = check_int("block_rows", block_rows)
    F = _matrix("features", features)
    n = len(F)
    component = np.arange(n)
    degree = np.zeros(n, np.int64)
    spans = _blocks(n, block_rows)
    for i, (a, b) in enumerate(spans):
        A = _unit(F[a:b])
        for c, d in spans[i:]:
            rows, cols = np.nonzero(A @ (A if c == a else _unit(F[c:d])).T >= np.float32(threshold))
            rows, cols = rows + a, cols + c
            keep = rows < cols
            rows, cols = rows[keep], cols[keep]
            if len(rows):
                degree += np.bincount(rows, minlength=n) + np.bincount(cols, minlength=n)
                component = _merge(component, rows, cols)
    linked = np.flatnonzero(degree)
    members: dict[int, list[int]] = {}
    for r, comp in zip(linked.tolist(), component[linked].tolist()):
        members.setdefault(comp, []).append(r)
    groups = []
    for listed in sorted(members.values(), key=min):
        rows = np.array(listed)  # increasing
        first = int(rows[np.argmax(degree[rows])])  # argmax: the lowest row among ties
        ref = _unit(F[first : first + 1], np.float64)[0]
        sims = np.concatenate(
            [
                np.clip(_unit(F[rows[a:b]], np.float64) @ ref, -1.0, 1.0)
                for a, b in _blocks(len(rows), block_rows)
            ]
        ).astype(np.float32)
        order = np.lexsort((rows, -sims))
        group = [(first, 1.0)]
        group += [(int(rows[j]), float(sims[j])) for j in order if rows[j] != first]
        groups.append(group)
    return groups


def _merge(component, rows, cols):
    """Component labels after linking ``rows[i]`` with ``cols[i]`` (labels are rows)."""
    n = len(component)
    graph = coo_matrix(
        (np.ones(len(rows), np.int8), (component[rows], component[cols])), shape=(n, n)
    )
    _, relabel = connected_components(graph, directed=False)
    merged = relabel[component]
    # Name each component by its lowest row, so labels stay rows.
    lowest = np.full(n, n, np.int64)
    np.minimum.at(lowest, merged, np.arange(n))
    return lowest[merged]


def exact_duplicate_groups(hashes: Sequence[str | None]) -> list[list[int]]:
    """Groups of rows with the same content hash (byte-identical files).

    Parameters
    ----------
    hashes : sequence of str
        One content hash per row (as ``FeatureStore.hashes`` gives them);
        empty strings and ``None`` (unknown) are never grouped.

    Returns
    -------
    list of list of int
        Each group's rows in increasing order, groups of at least 2 rows,
        ordered by their first row.
    """
    if isinstance(hashes, (str, bytes)):
        raise UsageError("hashes must be a sequence of hashes, one per row, not one string")
    by_hash: dict[str, list[int]] = {}
    for row, h in enumerate(hashes):
        if h:
            by_hash.setdefault(h, []).append(row)
    return sorted((rows for rows in by_hash.values() if len(rows) > 1), key=lambda g: g[0])
