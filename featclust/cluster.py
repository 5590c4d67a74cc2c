"""k-means on feature vectors, with optional PCA and L2 normalisation.

No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

import json

import numpy as np

from .errors import ModelMismatchError, UsageError

MODEL_FORMAT = 1
#: Members of a cluster farther from its centre than this percentile of their
#: distances make a new image an outlier (see :attr:`FeatureKMeans.thresholds_`).
OUTLIER_PERCENTILE = 95
#: Rows per block when finding the nearest centres.
NEAREST_BLOCK_ROWS = 4096
#: With ``pca=None``, features longer than this (``--pooling flatten``: 25,088)
#: are reduced to :data:`AUTO_PCA` components before k-means.
AUTO_PCA_MIN_FEATURES = 4096
AUTO_PCA = 256
#: A feature matrix larger than this is never copied whole: it is read block by
#: block (it may be memory-mapped, see :data:`featclust.store.MMAP_BYTES`) and
#: PCA is a randomized PCA whose passes over the data go block by block
#: (:func:`blockwise_pca`). Whole-matrix PCA needs about 4 times the matrix; the
#: blockwise one a few blocks plus (rows + features) x (components + 10) values.
MAX_IN_MEMORY_BYTES = 64 << 20
#: Size of one block of rows in that case.
BLOCK_BYTES = 16 << 20
#: Clustering methods: k-means, or Ward agglomerative clustering.
METHODS = ("kmeans", "ward")
#: Ward needs the n*(n-1)/2 pairwise distances in memory: 20,000 images take 1.6 GB.
MAX_WARD_IMAGES = 20000


class FeatureKMeans:
    """k-means on feature vectors, scikit-learn style.

    The features are optionally L2-normalised, reduced with PCA and
    normalised again (cosine, or spherical, k-means), then clustered with
    :class:`sklearn.cluster.KMeans`. Clusters are numbered by size, largest
    first, so ``cluster 0`` is the biggest group.

    Parameters
    ----------
    n_clusters : int, default 8
    pca : int or None, default None
        Number of PCA components; ``None`` keeps features of up to 4,096
        values as they are and reduces longer ones (flatten pooling) to
        ``min(256, n_samples)`` components. A matrix larger than
        :data:`MAX_IN_MEMORY_BYTES` is reduced block by block
        (:func:`blockwise_pca`, a randomized PCA), so it can be a
        memory-mapped array larger than memory.
    whiten : bool, default False
        Whiten the PCA components.
    normalize : bool, default False
        L2-normalise the vectors before and after PCA.
    seed : int, default 0
        Random state of PCA and k-means.
    n_init : int, default 4
        k-means restarts; the best inertia wins.
    method : {"kmeans", "ward"}, default "kmeans"
        ``"ward"``: Ward agglomerative clustering finds the groups, their
        means are the centres, and each image goes to its nearest centre
        (so :meth:`predict` gives an image the label it got in the fit).
        Memory grows with the square of the number of images; at most
        :data:`MAX_WARD_IMAGES`.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    cluster_centers_ : ndarray of shape (n_clusters, n_reduced)
        Centres in the reduced (and normalised) space.
    distances_ : ndarray of shape (n_samples,)
        Euclidean distance of each sample to its centre, in that space.
    thresholds_ : ndarray of shape (n_clusters,)
        The 95th percentile of the members' distances, per cluster (0 for an
        empty cluster): a new vector farther than this from its centre is an
        outlier (see :meth:`predict_with_distance`).
    inertia_ : float
    n_features_in_ : int
    n_components_ : int or None
        PCA components used (``pca``, or the automatic choice above).
    pca_mean_, pca_components_, pca_scale_ : ndarray or None
        The fitted projection (``None`` without PCA).
    """

    def __init__(self, n_clusters=8, pca=None, whiten=False, normalize=False, seed=0,
                 n_init=4, method="kmeans"):
        self.n_clusters = n_clusters
        self.pca = pca
        self.whiten = whiten
        self.normalize = normalize
        self.seed = seed
        self.n_init = n_init
        self.method = method

    def check_params(self):
        """Validate the parameters that do not depend on the data.

        Raises
        ------
        UsageError
            Naming the parameter and the value received.
        """
        check_int("n_clusters", self.n_clusters)
        check_int("pca", self.pca, none_ok=True)
        check_int("n_init", self.n_init)
        if self.method not in METHODS:
            raise UsageError(f"method={self.method!r} is not one of {', '.join(METHODS)}")

    def _validate(self, X):
        self.check_params()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise UsageError(f"features must be a 2-D array, got shape {X.shape}")
        n, d = X.shape
        k = self.n_clusters
        if k > n:
            raise UsageError(f"n_clusters={k} is larger than the number of images ({n})")
        if self.method == "ward" and n > MAX_WARD_IMAGES:
            raise UsageError(f"method='ward' needs memory for all pairs of images: at most "
                             f"{MAX_WARD_IMAGES} images, got {n}; use k-means")
        if self.pca is not None:
            if self.pca > min(n, d):
                raise UsageError(f"pca={self.pca} is larger than min(number of images, "
                                 f"feature length) = {min(n, d)}")
        if not all(np.isfinite(block).all() for block in _blocks(X)):
            raise UsageError("features contain NaN or infinite values")
        return X

    def fit(self, X):
        """Fit PCA (if asked) and k-means (or Ward).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        self
        """
        from sklearn.cluster import KMeans

        Z = self.fit_reduce(X)
        if self.method == "ward":
            from sklearn.cluster import AgglomerativeClustering

            labels = AgglomerativeClustering(self.n_clusters, linkage="ward").fit_predict(Z)
            centers = np.stack([Z[labels == c].mean(axis=0, dtype=np.float64)
                                for c in range(self.n_clusters)])
        else:
            km = KMeans(n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.seed)
            labels = km.fit_predict(Z)
            centers = km.cluster_centers_
        order = np.argsort(-np.bincount(labels, minlength=self.n_clusters), kind="stable")
        self.cluster_centers_ = centers[order].astype(np.float32)
        self.labels_, self.distances_ = self._nearest(Z)
        self.inertia_ = float(np.sum(self.distances_ ** 2))
        self.thresholds_ = np.array(
            [np.percentile(self.distances_[self.labels_ == c], OUTLIER_PERCENTILE)
             if np.any(self.labels_ == c) else 0.0 for c in range(self.n_clusters)],
            dtype=np.float32)
        return self

    def fit_reduce(self, X):
        """Fit the reduction only (normalisation and PCA) and return the reduced features.

        :meth:`fit` starts with this; the k scan (:mod:`featclust.kscan`)
        uses it to work in the same space as the clustering.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_reduced)
        """
        from sklearn.decomposition import PCA

        X = self._validate(X)
        n, d = X.shape
        self.n_features_in_ = d
        self.pca_mean_ = self.pca_components_ = self.pca_scale_ = None
        c = self.pca
        if c is None and d > AUTO_PCA_MIN_FEATURES:
            c = min(AUTO_PCA, n, d)
        self.n_components_ = c
        if c is not None:
            if X.nbytes > MAX_IN_MEMORY_BYTES:
                mean, components, variance = blockwise_pca(X, c, self.normalize, self.seed)
            else:
                pca = PCA(n_components=c, random_state=self.seed).fit(_l2(X) if self.normalize
                                                                      else X)
                mean, components, variance = pca.mean_, pca.components_, pca.explained_variance_
            self.pca_mean_ = mean.astype(np.float32)
            self.pca_components_ = components.astype(np.float32)
            scale = np.sqrt(variance) if self.whiten else np.ones(c)
            self.pca_scale_ = np.where(scale > 0, scale, 1.0).astype(np.float32)
        return self.reduce(X)

    def reduce(self, X):
        """Map features into the space the centres live in (block by block)."""
        X = np.asarray(X, dtype=np.float32)
        if X.nbytes <= BLOCK_BYTES:
            return self._reduce_block(X)
        return np.concatenate([self._reduce_block(block) for block in _blocks(X)])

    def _reduce_block(self, Z):
        if self.normalize:
            Z = _l2(Z)
        if self.pca_components_ is not None:
            # float64, so that an image gets the same reduced vector (to float32
            # precision) whether it is projected alone or among thousands.
            W = self.pca_components_.T.astype(np.float64)
            Z = (((Z.astype(np.float64) - self.pca_mean_) @ W) / self.pca_scale_).astype(np.float32)
            if self.normalize:
                Z = _l2(Z)
        return Z

    def _nearest(self, Z):
        # float64 and in blocks: the squared-distance expansion loses digits to
        # cancellation in float32, enough to flip a near tie between the sort and
        # a later predict of the same image; float64 leaves no practical tie.
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        c2 = np.sum(C ** 2, axis=1)
        labels = np.empty(len(Z), np.int64)
        dist = np.empty(len(Z), np.float32)
        for start in range(0, len(Z), NEAREST_BLOCK_ROWS):
            B = np.asarray(Z[start:start + NEAREST_BLOCK_ROWS], dtype=np.float64)
            d2 = np.sum(B ** 2, axis=1)[:, None] - 2 * B @ C.T + c2[None, :]
            best = np.argmin(d2, axis=1)
            labels[start:start + len(B)] = best
            dist[start:start + len(B)] = np.sqrt(np.maximum(d2[np.arange(len(B)), best], 0.0))
        return labels, dist

    def predict(self, X):
        """Index of the nearest centre of each feature vector."""
        return self.predict_with_distance(X)[0]

    def predict_with_distance(self, X):
        """Nearest centre and the distance to it, for each feature vector.

        A vector is an outlier of its cluster when the distance exceeds
        ``thresholds_[label]``.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        distances : ndarray of shape (n_samples,)
        """
        self._check_fitted()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise UsageError(f"features of shape {X.shape} do not match the "
                             f"{self.n_features_in_} features the model was fitted on")
        return self._nearest(self.reduce(X))

    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise UsageError("this FeatureKMeans is not fitted yet; call fit first")

    def get_params(self, deep=True):
        """Constructor parameters, as scikit-learn estimators report them."""
        return {k: getattr(self, k) for k in
                ("n_clusters", "pca", "whiten", "normalize", "seed", "n_init", "method")}

    def save(self, path, extra=None):
        """Save the fitted model as ``.npz`` (arrays and JSON settings; no pickle).

        Parameters
        ----------
        path : path-like or file object
        extra : dict, optional
            JSON-able metadata stored with the model (e.g. feature settings).
        """
        self._check_fitted()
        meta = {"format": MODEL_FORMAT, "params": self.get_params(),
                "n_features_in": int(self.n_features_in_), "extra": extra or {}}
        arrays = {"cluster_centers": self.cluster_centers_, "thresholds": self.thresholds_,
                  "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        if self.pca_components_ is not None:
            arrays.update(pca_mean=self.pca_mean_, pca_components=self.pca_components_,
                          pca_scale=self.pca_scale_)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path):
        """Load a model written by :meth:`save`.

        Returns
        -------
        model : FeatureKMeans
        extra : dict
            The metadata given to :meth:`save`.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if meta.get("format") != MODEL_FORMAT:
                    raise ModelMismatchError(f"model file {str(path)!r} has format "
                                             f"{meta.get('format')}, expected {MODEL_FORMAT}")
                model = cls(**meta["params"])
                model.n_features_in_ = meta["n_features_in"]
                model.cluster_centers_ = data["cluster_centers"]
                model.thresholds_ = data["thresholds"]
                pca = "pca_components" in data
                model.pca_mean_ = data["pca_mean"] if pca else None
                model.pca_components_ = data["pca_components"] if pca else None
                model.pca_scale_ = data["pca_scale"] if pca else None
                model.n_components_ = len(model.pca_components_) if pca else None
        except (OSError, ValueError, KeyError) as e:
            raise ModelMismatchError(f"cannot read model file {str(path)!r}: {e}") from None
        return model, meta["extra"]


def blockwise_pca(X, n_components, normalize=False, seed=0, n_iter=4, n_oversamples=10):
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
    seed : int
    n_iter : int
        Power iterations (``n_iter + 3`` passes over the data in all).
    n_oversamples : int

    Returns
    -------
    mean : ndarray of shape (n_features,)
    components : ndarray of shape (n_components, n_features)
        Rows of unit length, largest variance first, signs as scikit-learn's.
    explained_variance : ndarray of shape (n_components,)
    """
    from sklearn.utils.extmath import svd_flip

    n, d = X.shape
    blocks = _blocks(X)

    def rows(block):
        return (_l2(block) if normalize else block).astype(np.float32, copy=False)

    mean = sum(rows(b).sum(axis=0, dtype=np.float64) for b in blocks) / n
    mean32 = mean.astype(np.float32)

    def centred_times(Q):  # (X - mean) @ Q
        return np.concatenate([rows(b) @ Q for b in blocks]) - mean32 @ Q

    def centred_t_times(Y):  # (X - mean).T @ Y
        out = np.zeros((d, Y.shape[1]), np.float32)
        start = 0
        for b in blocks:
            out += rows(b).T @ Y[start:start + len(b)]
            start += len(b)
        return out - np.outer(mean32, Y.sum(axis=0))

    k = min(n_components + n_oversamples, n, d)
    Q = np.random.default_rng(seed).standard_normal((d, k)).astype(np.float32)
    Y = centred_times(Q)
    for _ in range(n_iter):
        Y = np.linalg.qr(Y)[0]
        Y = centred_times(np.linalg.qr(centred_t_times(Y))[0])
    Y = np.linalg.qr(Y)[0]
    U, S, Vt = np.linalg.svd(centred_t_times(Y).T.astype(np.float64), full_matrices=False)
    U, Vt = svd_flip(U, Vt, u_based_decision=False)
    return mean, Vt[:n_components], S[:n_components] ** 2 / max(n - 1, 1)


def _blocks(X, min_rows=1):
    """Consecutive row blocks of ``X`` of about :data:`BLOCK_BYTES` each (one if smaller).

    Every block has at least ``min_rows`` rows when ``X`` has that many.
    """
    n = len(X)
    rows = max(min_rows, BLOCK_BYTES // max(1, X.itemsize * int(np.prod(X.shape[1:]))), 1)
    if X.nbytes <= BLOCK_BYTES or n <= rows:
        return [X]
    count = n // rows  # every block gets at least ``rows`` rows
    bounds = np.linspace(0, n, count + 1).astype(int)
    return [X[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def check_int(name, value, low=1, none_ok=False):
    """Raise :class:`UsageError` unless ``value`` is an integer of at least ``low``.

    The message names the parameter and the value received.
    """
    if value is None and none_ok:
        return
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
        wanted = "a positive integer" if low == 1 else f"an integer of at least {low}"
        raise UsageError(f"{name}={value!r} must be {wanted}" + (" or None" if none_ok else ""))


def _l2(X):
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)
