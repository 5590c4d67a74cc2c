"""Giving rows their nearest centre, block by block, and the outlier rule.

The row-labelling half of :class:`~featclust.cluster.FeatureKMeans`: the
nearest centre of every row and its distance (:func:`label_rows`, what a
Dask task runs: :func:`label_block`), the means of the clusters before the
PCA (:func:`member_means`), the fit's random sample of rows
(:func:`sample_rows`), fast k-means on subsamples (:func:`subsample_kmeans`)
and the one outlier rule (:func:`outlier_thresholds`, :func:`outliers`).

Below :mod:`featclust.cluster`: the functions here take a fitted model and
read its public attributes; they never import the estimator. No TensorFlow
here: this module works on arrays only.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .reduce import Reducer, blocks, check_features

#: Members of a cluster farther from its centre than this percentile of their
#: distances make an image an outlier (see :func:`outlier_thresholds`).
OUTLIER_PERCENTILE = 95
#: Rows per block when finding the nearest centres.
NEAREST_BLOCK_ROWS = 4096
#: Fitted attributes that belong to the rows fitted on (one value per row, or their sum).
ROW_ATTRIBUTES = ("labels_", "distances_", "inertia_", "reduced_")


def outlier_thresholds(labels: np.ndarray, distances: np.ndarray, n_clusters: int) -> np.ndarray:
    """The outlier rule's thresholds: the 95th percentile of each cluster's members' distances.

    An image farther from its cluster's centre than this is an outlier
    (:func:`outliers`); see :attr:`featclust.FeatureKMeans.thresholds_`.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
    distances : ndarray of shape (n_samples,)
    n_clusters : int

    Returns
    -------
    ndarray of shape (n_clusters,), float32
        0 for an empty cluster.
    """
    labels = np.asarray(labels)
    distances = np.asarray(distances)
    return np.array(
        [
            np.percentile(distances[labels == c], OUTLIER_PERCENTILE)
            if np.any(labels == c)
            else 0.0
            for c in range(n_clusters)
        ],
        dtype=np.float32,
    )


def outliers(thresholds: np.ndarray, labels: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Which images are outliers: farther from their centre than their cluster's threshold.

    Parameters
    ----------
    thresholds : ndarray of shape (n_clusters,)
        :func:`outlier_thresholds` (a model's ``thresholds_``).
    labels, distances : ndarray of shape (n_samples,)

    Returns
    -------
    ndarray of shape (n_samples,), bool
    """
    return np.asarray(distances) > np.asarray(thresholds)[np.asarray(labels)]


def sample_rows(n: int, fit_sample: int | None, random_state: int) -> np.ndarray | None:
    """The rows a fit on at most ``fit_sample`` of ``n`` rows uses: sorted indices, or None for all.

    The same ``n``, ``fit_sample`` and ``random_state`` (an int seed) give
    the same rows.
    """
    if fit_sample is None or fit_sample >= n:
        return None
    return np.sort(np.random.default_rng(random_state).choice(n, fit_sample, replace=False))


def squared_distances(centers: np.ndarray, Z: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Squared distances of the rows of ``Z`` to every centre: ``(start, block)`` pairs.

    float64 and in blocks of :data:`NEAREST_BLOCK_ROWS` rows: the
    squared-distance expansion loses digits to cancellation in float32,
    enough to flip a near tie between the sort and a later predict of the
    same image; float64 leaves no practical tie.
    """
    C = np.asarray(centers, dtype=np.float64)
    c2 = np.sum(C**2, axis=1)
    for start in range(0, len(Z), NEAREST_BLOCK_ROWS):
        B = np.asarray(Z[start : start + NEAREST_BLOCK_ROWS], dtype=np.float64)
        yield start, np.sum(B**2, axis=1)[:, None] - 2 * B @ C.T + c2[None, :]


def nearest(centers: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre of every row of ``Z``, and the distance to it.

    Returns
    -------
    labels : ndarray of shape (n_rows,), int64
    distances : ndarray of shape (n_rows,), float32
    """
    labels = np.empty(len(Z), np.int64)
    dist = np.empty(len(Z), np.float32)
    for start, d2 in squared_distances(centers, Z):
        best = np.argmin(d2, axis=1)
        labels[start : start + len(d2)] = best
        dist[start : start + len(d2)] = np.sqrt(np.maximum(d2[np.arange(len(d2)), best], 0.0))
    return labels, dist


def feature_distances(model: Any, X_block: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Distance of checked rows to their cluster's members' mean before the PCA.

    ``model.feature_centers_`` (see :func:`member_means`), in the space of
    ``model.reducer_.prepare``.
    """
    F = model.reducer_.prepare(X_block).astype(np.float64)
    return np.linalg.norm(F - model.feature_centers_[labels], axis=1).astype(np.float32)


def label_checked(
    model: Any, X_block: np.ndarray, Z_block: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre (in the reduced space) and distance of rows checked by ``check_features``.

    With PCA, the distance is measured before the PCA, to the mean of the
    cluster's members there (``model.feature_centers_``): an image unlike
    the folder differs mostly in what the few kept components leave out,
    and is far from every cluster there even when its projection is not.

    Parameters
    ----------
    model : featclust.cluster.FeatureKMeans
        Fitted (or loaded).
    X_block : ndarray of shape (n_rows, n_features)
    Z_block : ndarray of shape (n_rows, n_reduced), optional
        ``X_block`` already reduced (``model.reducer_.transform_checked``).
    """
    if Z_block is None:
        Z_block = model.reducer_.transform_checked(X_block)
    labels, distances = nearest(model.cluster_centers_, Z_block)
    if getattr(model, "feature_centers_", None) is not None:
        distances = feature_distances(model, X_block, labels)
    return labels, distances


def label_block(model: Any, X_block: Any) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre and distance to it of every row of one block (a store chunk, say).

    What a Dask task runs to label its part of a folder; the same as
    ``model.predict_with_distance(X_block)``. Send it a model without
    per-row attributes (:func:`slim`, or the model a ``labeller`` of
    :meth:`featclust.cluster.FeatureKMeans.fit` receives): a few centres and
    the reduction.

    Parameters
    ----------
    model : FeatureKMeans
        Fitted (or loaded).
    X_block : array-like of shape (n_rows, n_features)

    Returns
    -------
    labels : ndarray of shape (n_rows,), int64
    distances : ndarray of shape (n_rows,), float32
    """
    return model.predict_with_distance(X_block)


def label_rows(
    model: Any, X: np.ndarray, reduced: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`label_checked` over every block of checked ``X`` in turn (the default labeller).

    ``X`` is read block by block (see :func:`featclust.reduce.blocks`):
    memory holds one block besides the result.

    Parameters
    ----------
    model : FeatureKMeans
        Fitted (or loaded).
    X : ndarray of shape (n_samples, n_features)
        Checked by ``check_features``.
    reduced : ndarray of shape (n_samples, n_reduced), optional
        Filled with the reduced rows on the way (what the model's
        ``reduced_`` keeps).

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
    distances : ndarray of shape (n_samples,), float32
    """
    labels = np.empty(len(X), np.int64)
    distances = np.empty(len(X), np.float32)
    start = 0
    for block in blocks(X):
        end = start + len(block)
        Z = model.reducer_.transform_checked(block)
        if reduced is not None:
            reduced[start:end] = Z
        labels[start:end], distances[start:end] = label_checked(model, block, Z)
        start = end
    return labels, distances


def member_means(
    reducer: Reducer, X: np.ndarray, rows: np.ndarray | None, labels: np.ndarray, k: int
) -> np.ndarray:
    """Mean of each cluster's rows in the space before the PCA (``reducer.prepare``).

    Parameters
    ----------
    reducer : Reducer
        Fitted.
    X : array-like of shape (n_samples, n_features)
        Checked; read block by block.
    rows : ndarray or None
        The rows ``labels`` belong to (sorted indices), or ``None`` for all.
    labels : ndarray of int
        Cluster of each of those rows.
    k : int

    Returns
    -------
    ndarray of shape (k, n_features), float32
        Zero for a cluster without rows.
    """
    sums = np.zeros((k, X.shape[1]), np.float64)
    start = 0
    for block in blocks(X, rows=rows):
        part = labels[start : start + len(block)]
        np.add.at(sums, part, reducer.prepare(block).astype(np.float64))
        start += len(block)
    counts = np.bincount(labels, minlength=k)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def slim(model: Any) -> Any:
    """A copy of a fitted model without its per-row attributes (what predicting needs).

    It pickles to the size of its centres and reduction, whatever the
    number of rows it was fitted on, as a model read by
    :meth:`featclust.cluster.FeatureKMeans.load` does.
    """
    check_is_fitted(model, "cluster_centers_")
    out = copy.copy(model)
    for name in ROW_ATTRIBUTES:
        out.__dict__.pop(name, None)
    return out


def subsample_kmeans(
    F: np.ndarray, k: int, n_runs: int, n_init: int, fit_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n_runs`` fast k-means fits, each on a random subsample of ``fit_size`` rows.

    Every row then gets its nearest centre. The k scan and the stability
    score of a model (:func:`featclust.scores.model_scores`) run k-means so.

    Parameters
    ----------
    F : ndarray of shape (n_samples, n_features)
        Usually :func:`featclust.reduce.fitting_space` of the reduced features.
    k, n_runs, n_init, fit_size : int
    rng : numpy.random.Generator
        Draws the subsamples and the k-means seeds.

    Returns
    -------
    labels : ndarray of shape (n_samples,)
        Labels of the run of lowest inertia.
    runs : list of ndarray
        The labels of every run (their agreement is the stability).
    """
    n = len(F)
    sq = np.sum(F**2, axis=1)
    runs, inertias = [], []
    for _ in range(n_runs):
        rows = np.sort(rng.choice(n, fit_size, replace=False)) if n > fit_size else slice(None)
        km = KMeans(n_clusters=k, n_init=n_init, random_state=int(rng.integers(2**31)))
        # One thread: on a few thousand rows, syncing threads costs more than it
        # saves (3-10 times slower on a busy 2-core machine).
        with threadpool_limits(1):
            km.fit(F[rows])
        centers = km.cluster_centers_.astype(np.float32)
        d2 = sq[:, None] - 2 * (F @ centers.T) + np.sum(centers**2, axis=1)[None, :]
        labels = np.argmin(d2, axis=1)
        runs.append(labels)
        inertias.append(float(np.sum(np.maximum(d2[np.arange(n), labels], 0))))
    return runs[int(np.argmin(inertias))], runs


def checked_sample(
    estimator: BaseEstimator, X: Any, fit_sample: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The opening of a fit (FeatureKMeans, KScan): ``X`` checked, the fit sample drawn.

    Parameters
    ----------
    estimator : BaseEstimator
        Gets ``n_features_in_`` (see :func:`featclust.reduce.check_features`).
    X : array-like of shape (n_samples, n_features)
    fit_sample : int or None
    seed : int
        From :func:`featclust.checks.check_random_state`.

    Returns
    -------
    X : ndarray
        Float32, finite, not copied when it was so already.
    rows : ndarray or None
        :func:`featclust.labelling.sample_rows`: the sorted rows of the
        sample, or ``None`` for all.
    """
    X = check_features(estimator, X, reset=True)
    return X, sample_rows(len(X), fit_sample, seed)
