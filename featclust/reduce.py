"""The space features are clustered in: L2 normalisation and PCA.

:class:`Reducer` is the one reduction :class:`~featclust.cluster.FeatureKMeans`
and :class:`~featclust.kscan.KScan` share, so a scan scores the space a sort
clusters in. A matrix larger than :data:`MAX_IN_MEMORY_BYTES` (flatten
pooling on many images, often memory-mapped from the store) is never copied
whole: it is read block by block and its PCA is a randomized PCA whose passes
go block by block (:func:`blockwise_pca`).

No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.extmath import svd_flip
from sklearn.utils.validation import check_is_fitted, validate_data

from .checks import check_bool, check_int, check_random_state
from .errors import UsageError

#: With ``pca=None``, features longer than this (``pooling="flatten"``: 25,088)
#: are reduced to :data:`AUTO_PCA` components.
AUTO_PCA_MIN_FEATURES = 4096
AUTO_PCA = 256
#: A larger feature matrix is read block by block and gets the blockwise PCA.
#: Whole-matrix PCA needs about 4 times the matrix; the blockwise one a few
#: blocks plus (rows + features) x (components + 10) values.
MAX_IN_MEMORY_BYTES = 64 << 20
#: Size of one block of rows.
BLOCK_BYTES = 16 << 20


def check_features(estimator: BaseEstimator, X: Any, reset: bool) -> np.ndarray:
    """``X`` as a finite 2-D float32 array, its width checked against ``n_features_in_``.

    Parameters
    ----------
    estimator : BaseEstimator
        Gets ``n_features_in_`` when ``reset``; otherwise ``X`` must match it.
    X : array-like of shape (n_samples, n_features)
        A float32 array (a memory-mapped one, say) is not copied.
    reset : bool
        True in ``fit``.

    Raises
    ------
    UsageError
        For another shape, an empty or non-finite ``X`` (scikit-learn's message).
    TypeError
        For sparse or non-numeric input.
    """
    try:
        X = validate_data(estimator, X, dtype=np.float32, ensure_all_finite=False, reset=reset)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not all(np.isfinite(block).all() for block in blocks(X)):
        raise UsageError("X contains NaN or infinite values")
    return X


class Reducer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """L2 normalisation and PCA, as clustering uses them.

    The features are optionally L2-normalised, reduced with PCA and
    normalised again (cosine, or spherical, geometry).

    Parameters
    ----------
    pca : int or None, default None
        Number of PCA components, at most the number of samples and of
        features (a smaller folder gets fewer); ``None`` keeps features of up to
        :data:`AUTO_PCA_MIN_FEATURES` values as they are and reduces longer
        ones to ``min(AUTO_PCA, n_samples)`` components.
    whiten : bool, default False
        Divide each component by its standard deviation.
    normalize : bool, default False
        L2-normalise the vectors before and after PCA.
    random_state : int, None or numpy.random.RandomState, default 0
        Random state of the PCA (see :func:`featclust.checks.check_random_state`).

    Callers that checked ``X`` themselves (:func:`check_features`) use
    :meth:`fit_checked` and :meth:`transform_checked`, which skip the check
    and can fit on some rows only.

    Attributes
    ----------
    n_features_in_ : int
    n_components_ : int or None
        PCA components used (``pca`` or the automatic choice); None without PCA.
    mean_, components_, scale_ : ndarray or None
        The fitted projection (float32; ``None`` without PCA).
    """

    def __init__(
        self,
        pca: int | None = None,
        whiten: bool = False,
        normalize: bool = False,
        random_state: Any = 0,
    ) -> None:
        self.pca = pca
        self.whiten = whiten
        self.normalize = normalize
        self.random_state = random_state

    def check_params(self) -> None:
        """Validate the parameters (:meth:`fit` does too).

        Raises
        ------
        UsageError
            Naming the parameter and the value received.
        """
        check_int("pca", self.pca, none_ok=True)
        check_bool("whiten", self.whiten)
        check_bool("normalize", self.normalize)
        check_random_state("random_state", self.random_state, seed=False)

    def fit(self, X: Any, y: Any = None) -> Reducer:
        """Fit the PCA (if any) on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self
        """
        self.check_params()
        return self.fit_checked(check_features(self, X, reset=True))

    def fit_checked(self, X: np.ndarray, rows: np.ndarray | None = None) -> Reducer:
        """Fit on ``X`` checked by :func:`check_features`, or on its ``rows`` only.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Float32 and finite (not checked again); may be memory-mapped.
        rows : ndarray of int, optional
            Fit on these rows only (sorted indices), read block by block
            (see :func:`blocks`).

        Returns
        -------
        self
        """
        seed = check_random_state("random_state", self.random_state)
        d = X.shape[1]
        n = len(X) if rows is None else len(rows)
        self.n_features_in_ = d
        self.mean_ = self.components_ = self.scale_ = None
        c = None if self.pca is None else min(self.pca, n, d)
        if c is None and d > AUTO_PCA_MIN_FEATURES:
            c = min(AUTO_PCA, n, d)
        self.n_components_ = c
        if c is None:
            return self
        if rows is not None and n * d * X.itemsize <= MAX_IN_MEMORY_BYTES:
            X, rows = np.asarray(X[rows]), None  # a small sample: fitted as a whole
        if rows is not None or X.nbytes > MAX_IN_MEMORY_BYTES:
            mean, components, variance = blockwise_pca(X, c, self.normalize, seed, rows=rows)
        else:
            pca = PCA(n_components=c, random_state=seed)
            pca.fit(l2(X) if self.normalize else X)
            mean, components, variance = pca.mean_, pca.components_, pca.explained_variance_
        self.mean_ = mean.astype(np.float32)
        self.components_ = components.astype(np.float32)
        scale = np.sqrt(variance) if self.whiten else np.ones(c)
        self.scale_ = np.where(scale > 0, scale, 1.0).astype(np.float32)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit and return the reduced ``X`` (validated once)."""
        self.check_params()
        X = check_features(self, X, reset=True)
        return self.fit_checked(X).transform_checked(X)

    def transform(self, X: Any) -> np.ndarray:
        """Map features into the reduced space, block by block.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components_ or n_features), float32
        """
        check_is_fitted(self, "n_components_")
        return self.transform_checked(check_features(self, X, reset=False))

    def transform_checked(self, X: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Reduce ``X`` checked by :func:`check_features` (or its ``rows``), block by block.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Float32 and finite (not checked again); may be memory-mapped.
        rows : ndarray of int, optional
            Only these rows (sorted indices), gathered block by block.

        Returns
        -------
        ndarray of shape (n_rows, n_components_ or n_features), float32
        """
        if rows is None and X.nbytes <= BLOCK_BYTES:
            return self._transform_block(X)
        out = None
        start = 0
        for block in blocks(X, rows=rows):  # filled in place: no second copy of the result
            Z = self._transform_block(block)
            if out is None:
                out = np.empty((len(X) if rows is None else len(rows), Z.shape[1]), np.float32)
            out[start : start + len(Z)] = Z
            start += len(Z)
        assert out is not None  # blocks() yields at least one block
        return out

    @property
    def _n_features_out(self) -> int:
        """Width of the output, for :meth:`get_feature_names_out` (scikit-learn's mixin)."""
        return self.n_features_in_ if self.n_components_ is None else self.n_components_

    def prepare(self, Z: np.ndarray) -> np.ndarray:
        """Rows in the space before the PCA: L2-normalised with ``normalize``, else as given."""
        return np.asarray(l2(Z) if self.normalize else Z, dtype=np.float32)

    def _transform_block(self, Z):
        Z = self.prepare(Z)
        if self.components_ is not None:
            # float64, so that an image gets the same reduced vector (to float32
            # precision) whether it is projected alone or among thousands.
            W = self.components_.T.astype(np.float64)
            Z = (((Z.astype(np.float64) - self.mean_) @ W) / self.scale_).astype(np.float32)
            if self.normalize:
                Z = l2(Z)
        return np.asarray(Z, dtype=np.float32)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def fitting_space(
    Z: np.ndarray, fit_dims: int, fit_size: int, rng: np.random.Generator, random_state: int
) -> np.ndarray:
    """At most ``fit_dims`` PCA components of ``Z``, the PCA fitted on ``fit_size`` rows.

    Fast k-means runs (the k scan, the stability of a model) work here: the
    top components hold the between-cluster directions.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_features)
    fit_dims, fit_size : int
    rng : numpy.random.Generator
        Draws the rows the PCA is fitted on.
    random_state : int
        Random state of the PCA.

    Returns
    -------
    ndarray of shape (n_samples, min(n_features, fit_dims)), float32
        ``Z`` itself when it has at most ``fit_dims`` columns.
    """
    n, d = Z.shape
    if d <= fit_dims:
        return Z
    rows = rng.choice(n, fit_size, replace=False) if n > fit_size else slice(None)
    pca = PCA(n_components=min(fit_dims, len(Z[rows])), random_state=random_state).fit(Z[rows])
    return pca.transform(Z).astype(np.float32)


def blockwise_pca(
    X: np.ndarray,
    n_components: int,
    normalize: bool = False,
    random_state: int = 0,
    n_iter: int = 4,
    n_oversamples: int = 10,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Randomized PCA (Halko, Martinsson and Tropp, 2011) reading ``X`` block by block.

    Every pass over the data multiplies one block of rows at a time, so ``X``
    can be a memory-mapped matrix larger than memory: besides a block, only
    ``(n_samples + n_features) x (n_components + n_oversamples)`` values are
    held. The data are centred on the fly, never copied.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_components : int
    normalize : bool
        L2-normalise each row before the PCA.
    random_state : int
        Seed of the random projection.
    n_iter : int
        Power iterations (``n_iter + 3`` passes over the data in all).
    n_oversamples : int
    rows : ndarray of int, optional
        Fit on these rows of ``X`` only (sorted), read block by block.

    Returns
    -------
    mean : ndarray of shape (n_features,)
    components : ndarray of shape (n_components, n_features)
        Rows of unit length, largest variance first, signs as scikit-learn's.
    explained_variance : ndarray of shape (n_components,)
    """
    d = X.shape[1]
    n = len(X) if rows is None else len(rows)
    parts = blocks(X, rows=rows)

    def prepared(block):
        return (l2(block) if normalize else block).astype(np.float32, copy=False)

    mean = sum(prepared(b).sum(axis=0, dtype=np.float64) for b in parts) / n
    mean32 = mean.astype(np.float32)

    def centred_times(Q):  # (X - mean) @ Q
        return np.concatenate([prepared(b) @ Q for b in parts]) - mean32 @ Q

    def centred_t_times(Y):  # (X - mean).T @ Y
        out = np.zeros((d, Y.shape[1]), np.float32)
        start = 0
        for b in parts:
            out += prepared(b).T @ Y[start : start + len(b)]
            start += len(b)
        return out - np.outer(mean32, Y.sum(axis=0))

    k = min(n_components + n_oversamples, n, d)
    Q = np.random.default_rng(random_state).standard_normal((d, k)).astype(np.float32)
    Y = centred_times(Q)
    for _ in range(n_iter):
        Y = np.linalg.qr(Y)[0]
        Y = centred_times(np.linalg.qr(centred_t_times(Y))[0])
    Y = np.linalg.qr(Y)[0]
    U, S, Vt = np.linalg.svd(centred_t_times(Y).T.astype(np.float64), full_matrices=False)
    U, Vt = svd_flip(U, Vt, u_based_decision=False)
    return mean, Vt[:n_components], S[:n_components] ** 2 / max(n - 1, 1)


def blocks(
    X: np.ndarray, min_rows: int = 1, rows: np.ndarray | None = None
) -> Sequence[np.ndarray] | _RowBlocks:
    """Consecutive row blocks of ``X`` of about :data:`BLOCK_BYTES` each (one if smaller).

    Every block has at least ``min_rows`` rows when ``X`` has that many.

    Parameters
    ----------
    X : ndarray of shape (n_samples, ...)
    min_rows : int
    rows : ndarray of int, optional
        Only these rows of ``X`` (sorted, for reading a memory-mapped ``X``
        in order). The blocks are then copies, read one at a time when the
        returned sequence is iterated (it can be iterated again), so a
        sample of a memory-mapped matrix is never held whole.

    Returns
    -------
    sequence of ndarray
    """
    if rows is not None:
        return _RowBlocks(X, np.asarray(rows), min_rows)
    n = len(X)
    per_block = _rows_per_block(X, min_rows)
    if X.nbytes <= BLOCK_BYTES or n <= per_block:
        return [X]
    return [X[a:b] for a, b in _bounds(n, per_block)]


def _rows_per_block(X, min_rows=1):
    return max(min_rows, BLOCK_BYTES // max(1, X.itemsize * int(np.prod(X.shape[1:]))), 1)


def _bounds(n, per_block):
    count = max(1, n // per_block)  # every block gets at least ``per_block`` rows
    bounds = np.linspace(0, n, count + 1).astype(int)
    return list(itertools.pairwise(bounds))


class _RowBlocks:
    """The blocks of some rows of ``X``, each gathered when iterated (see :func:`blocks`)."""

    def __init__(self, X, rows, min_rows=1):
        self.X, self.rows = X, rows
        self.shape = (len(rows),) + tuple(X.shape[1:])
        per_block = _rows_per_block(X, min_rows)
        self._bounds = _bounds(len(rows), per_block) if len(rows) > per_block else [(0, len(rows))]

    def __len__(self):
        return len(self._bounds)

    def __iter__(self):
        for a, b in self._bounds:
            yield np.asarray(self.X[self.rows[a:b]])


def count_distinct(X: np.ndarray, stop: int | None = None, rows: np.ndarray | None = None) -> int:
    """Number of distinct rows of ``X`` (exactly equal values), read block by block.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    stop : int, optional
        Stop counting once this many distinct rows are found (the answer is
        then ``stop``): checking "at least k distinct rows" reads k rows when
        the rows differ, as real images' features do.
    rows : ndarray of int, optional
        Count among these rows of ``X`` only (see :func:`blocks`).

    Returns
    -------
    int
    """
    seen = set()
    for block in blocks(X, rows=rows):
        block = np.ascontiguousarray(block, dtype=np.float32) + np.float32(0)  # -0.0 -> 0.0
        for row in block:
            seen.add(hashlib.blake2b(row.tobytes(), digest_size=16).digest())
            if stop is not None and len(seen) >= stop:
                return len(seen)
    return len(seen)


def l2(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit length (zero rows left as they are)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def reduced_sample(
    X: np.ndarray,
    rows: np.ndarray | None,
    pca: int | None,
    whiten: bool,
    normalize: bool,
    seed: int,
) -> tuple[Reducer, np.ndarray]:
    """The reduction fitted on the fit sample, and the sample reduced (block by block).

    Parameters
    ----------
    X : ndarray
        Checked (:func:`featclust.labelling.checked_sample`).
    rows : ndarray or None
        The fit sample (None: every row).
    pca, whiten, normalize : as in :class:`featclust.cluster.FeatureKMeans`
    seed : int

    Returns
    -------
    reducer : Reducer
    Z : ndarray of shape (n_rows, n_reduced), float32
    """
    reducer = Reducer(pca, whiten, normalize, seed).fit_checked(X, rows)
    return reducer, reducer.transform_checked(X, rows)
