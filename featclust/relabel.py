"""Learning from a person's corrections: re-sort the rest, and say which images are doubtful.

:func:`resort_labels` re-assigns every image a person has not fixed, with the
fixed ones (images they moved, clusters they confirmed) as constraints;
:func:`doubt` scores how doubtful each image's cluster is, so the review page
can show the most doubtful first. Both work on the features as the model sees
them (:class:`~featclust.cluster.FeatureKMeans`' reduced space). No TensorFlow
here: this module works on arrays only.

The method was chosen by measurement (``benchmarks/curation.py``: a simulated
person corrects labelled folders of five kinds, 20 images a round).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from sklearn.neighbors import NearestNeighbors

from .checks import check_random_state
from .errors import UsageError

#: Neighbours of each image in the graph the labels spread on.
N_NEIGHBORS = 7
#: How much of each step comes from the neighbours (the rest from the image's own start).
ALPHA = 0.95
#: Weight of a fixed image's cluster in its start, against 1 for an unfixed image's.
FIXED_WEIGHT = 2.0
#: An unfixed image moves only if its new cluster scores this much more than its own
#: (0.5: 50% more), so that a re-sort changes what the corrections point to, not the rest.
MARGIN = 0.5
#: Spreading steps.
ITERATIONS = 40


def resort_labels(X: Any, labels: Any, fixed: Any, *, random_state: Any = None) -> np.ndarray:
    """Re-sort the images a person has not fixed, learning from those they have.

    The labels spread on the graph of each image's nearest neighbours
    (label spreading, Zhou et al. 2004): every image starts from its current
    cluster, a fixed image's weighing twice as much and held at every step;
    an unfixed image then moves to the cluster its neighbourhood points to
    if that scores at least 50% more than its own cluster (:data:`MARGIN`).

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        The features as the model sees them (the reduced space).
    labels : array-like of int, shape (n_images,)
        The current clusters, 0 to k - 1, after the person's edits; -1 for an
        image set aside (in no cluster: it stays so and takes no part).
    fixed : array-like of bool, shape (n_images,)
        Images whose cluster the person decided (moved there, or in a
        cluster they confirmed).
    random_state : int, None or numpy.random.RandomState, default None
        Checked as scikit-learn does; the method is deterministic.

    Returns
    -------
    ndarray of int64, shape (n_images,)
        New clusters: the fixed images' unchanged, set-aside images still -1,
        and every cluster with a fixed member kept (a cluster without one may
        empty). With no fixed image, the labels unchanged.

    Raises
    ------
    UsageError
        If the arrays' shapes, types or values do not fit together.
    """
    check_random_state("random_state", random_state, seed=False)
    Z, y, fixed = _check_inputs(X, labels, fixed)
    out = y.copy()
    active = np.flatnonzero(y >= 0)
    if not fixed.any() or len(active) < 2:
        return out
    out[active] = spread_labels(Z[active], y[active], fixed[active])
    return out


def doubt(X: Any, labels: Any, centres: Any) -> np.ndarray:
    """How doubtful each image's cluster is: higher is more doubtful.

    The distance to the image's own centre over the distance to the nearest
    other centre: below 1 the image is nearer its own cluster, 1 is the
    border, above 1 it lies nearer another cluster.

    Parameters
    ----------
    X : array-like of shape (n_images, n_features)
        The features as the model sees them (the reduced space).
    labels : array-like of int, shape (n_images,)
        Clusters 0 to k - 1; -1 for an image set aside (its doubt is 0).
    centres : array-like of shape (k, n_features)
        The clusters' centres in the same space; a row that is not finite (an
        empty cluster) counts as no centre.

    Returns
    -------
    ndarray of float64, shape (n_images,)

    Raises
    ------
    UsageError
        If the arrays' shapes, types or values do not fit together.
    """
    Z, y, _ = _check_inputs(X, labels, None)
    C = np.asarray(centres, dtype=np.float64) if _numeric(centres) else None
    if C is None or C.ndim != 2 or C.shape[1] != Z.shape[1]:
        raise UsageError(
            f"centres of shape {np.shape(centres)} must be (k, {Z.shape[1]}), one centre a row "
            "in the space of X"
        )
    if len(y) and y.max() >= len(C):
        raise UsageError(f"labels has cluster {int(y.max())} but centres has {len(C)} rows")
    out = np.zeros(len(y))
    rows = np.flatnonzero(y >= 0)
    if not len(rows) or len(C) < 2:
        return out
    valid = np.all(np.isfinite(C), axis=1)
    d2 = (
        np.sum(Z[rows] ** 2, axis=1)[:, None]
        - 2 * Z[rows] @ np.where(valid[:, None], C, 0).T
        + np.sum(np.where(valid[:, None], C, 0) ** 2, axis=1)[None, :]
    )
    d = np.sqrt(np.maximum(d2, 0.0))
    d[:, ~valid] = np.inf
    own = d[np.arange(len(rows)), y[rows]]
    d[np.arange(len(rows)), y[rows]] = np.inf
    other = d.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isfinite(other), own / np.maximum(other, 1e-12), 0.0)
    out[rows] = np.where(np.isfinite(ratio), ratio, 0.0)
    return out


# ---------------------------------------------------------------- helpers


def spread_labels(
    Z: np.ndarray,
    labels: np.ndarray,
    fixed: np.ndarray,
    n_neighbors: int = N_NEIGHBORS,
    alpha: float = ALPHA,
    fixed_weight: float = FIXED_WEIGHT,
    margin: float = MARGIN,
    iterations: int = ITERATIONS,
) -> np.ndarray:
    """:func:`resort_labels`' method on checked rows, every one in a cluster.

    Its settings are parameters so that ``benchmarks/curation.py`` can
    measure the alternatives; :func:`resort_labels` uses the defaults.
    """
    start = np.zeros((len(labels), int(labels.max()) + 1))
    rows = np.arange(len(labels))
    start[rows, labels] = np.where(fixed, fixed_weight, 1.0)
    F = _spread(_graph(Z, n_neighbors), start, fixed, alpha, iterations)
    best = np.argmax(F, axis=1)
    move = ~fixed & (F[rows, best] > (1 + margin) * F[rows, labels])
    return np.where(move, best, labels)


def _numeric(a):
    try:
        return np.asarray(a).dtype.kind in "biuf"
    except (TypeError, ValueError):
        return False


def _check_inputs(X, labels, fixed):
    """``(Z float64, labels int64, fixed bool or None)``, or raise :class:`UsageError`."""
    if not _numeric(X) or np.ndim(X) != 2:
        raise UsageError(
            f"X of shape {np.shape(X)} must be a 2-D array of numbers (n_images, n_features)"
        )
    Z = np.asarray(X, dtype=np.float64)
    if not np.all(np.isfinite(Z)):
        raise UsageError("X holds values that are not finite (NaN or infinity)")
    n = len(Z)
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise UsageError(f"labels of shape {y.shape} must be one cluster per row of X ({n},)")
    if n and (y.dtype.kind not in "iu" or y.min() < -1):
        raise UsageError(
            f"labels must be integers from 0 (or -1: set aside); got dtype {y.dtype}"
            + (f", smallest {y.min().item()!r}" if y.dtype.kind in "iuf" else "")
        )
    y = y.astype(np.int64)
    if fixed is None:
        return Z, y, None
    f = np.asarray(fixed)
    if f.shape != (n,) or f.dtype != bool:
        raise UsageError(
            f"fixed of shape {f.shape} and dtype {f.dtype} must be booleans, one per row of X "
            f"({n},)"
        )
    if np.any(f & (y < 0)):
        raise UsageError(
            f"fixed marks {int(np.sum(f & (y < 0)))} image(s) set aside (label -1): "
            "only an image in a cluster can be fixed"
        )
    return Z, y, f


def _graph(Z, n_neighbors):
    """The symmetric normalised affinity ``D^-1/2 W D^-1/2`` of the k-nearest-neighbour graph.

    Weights ``exp(-d^2 / (s_i s_j))`` with ``s_i`` the distance of image i to
    its farthest kept neighbour (local scaling, Zelnik-Manor and Perona 2004).
    """
    n = len(Z)
    m = min(n_neighbors, n - 1)
    dist, idx = NearestNeighbors(n_neighbors=m + 1).fit(Z).kneighbors(Z)
    dist, idx = dist[:, 1:], idx[:, 1:]
    scale = np.maximum(dist[:, -1], 1e-12)
    rows = np.repeat(np.arange(n), m)
    w = np.exp(-(dist.ravel() ** 2) / (scale[rows] * scale[idx.ravel()]))
    W = sparse.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    W = W.maximum(W.T)
    deg = np.asarray(W.sum(axis=1)).ravel()
    inv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    return sparse.diags(inv) @ W @ sparse.diags(inv)


def _spread(S, start, fixed, alpha, iterations):
    """Label spreading from ``start``, the fixed rows clamped at every step."""
    F = start.copy()
    for _ in range(iterations):
        F = alpha * (S @ F) + (1 - alpha) * start
        F[fixed] = start[fixed]
    return F
