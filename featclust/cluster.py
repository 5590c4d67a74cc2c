"""k-means (or Ward) on feature vectors, in the space of :class:`~featclust.reduce.Reducer`.

No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

import json

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .checks import check_bool, check_choice, check_int, check_random_state
from .errors import ModelMismatchError, UsageError
from .reduce import Reducer, check_features, count_distinct

MODEL_FORMAT = 1
#: Members of a cluster farther from its centre than this percentile of their
#: distances make a new image an outlier (see :attr:`FeatureKMeans.thresholds_`).
OUTLIER_PERCENTILE = 95
#: Rows per block when finding the nearest centres.
NEAREST_BLOCK_ROWS = 4096
#: Clustering methods: k-means, or Ward agglomerative clustering.
METHODS = ("kmeans", "ward")
#: Ward needs the n*(n-1)/2 pairwise distances in memory: 20,000 images take 1.6 GB.
MAX_WARD_IMAGES = 20000
#: Constructor parameters, in order (also the ``params`` a model file records).
PARAMS = ("n_clusters", "pca", "whiten", "normalize", "random_state", "n_init", "method")
#: The arrays a model file may hold.
MODEL_ARRAYS = ("meta", "cluster_centers", "thresholds", "pca_mean", "pca_components",
                "pca_scale")


class FeatureKMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means on feature vectors, a scikit-learn estimator.

    The features are reduced by a :class:`~featclust.reduce.Reducer`
    (optional L2 normalisation and PCA, cosine or spherical k-means when
    normalised), then clustered with :class:`sklearn.cluster.KMeans`.
    Clusters are numbered by size, largest first, so ``cluster 0`` is the
    biggest group.

    Parameters
    ----------
    n_clusters : int, default 8
    pca : int or None, default None
        Number of PCA components; ``None`` keeps features of up to 4,096
        values as they are and reduces longer ones (flatten pooling) to
        ``min(256, n_samples)`` components. A large matrix is reduced block
        by block (:func:`featclust.reduce.blockwise_pca`), so it can be a
        memory-mapped array larger than memory.
    whiten : bool, default False
        Whiten the PCA components.
    normalize : bool, default False
        L2-normalise the vectors before and after PCA.
    random_state : int, default 0
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
    reducer_ : featclust.reduce.Reducer
        The fitted reduction.
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

    A model read by :meth:`load` has no ``labels_``, ``distances_`` or
    ``inertia_`` (they belong to the fitted images).
    """

    def __init__(self, n_clusters=8, pca=None, whiten=False, normalize=False, random_state=0,
                 n_init=4, method="kmeans"):
        self.n_clusters = n_clusters
        self.pca = pca
        self.whiten = whiten
        self.normalize = normalize
        self.random_state = random_state
        self.n_init = n_init
        self.method = method

    def check_params(self):
        """Validate the parameters that do not depend on the data (:meth:`fit` does too).

        Callers that do expensive work before fitting (embedding a folder)
        call this first to fail fast.

        Raises
        ------
        UsageError
            Naming the parameter and the value received.
        """
        check_int("n_clusters", self.n_clusters)
        check_int("pca", self.pca, none_ok=True)
        check_bool("whiten", self.whiten)
        check_bool("normalize", self.normalize)
        check_random_state("random_state", self.random_state)
        check_int("n_init", self.n_init)
        check_choice("method", self.method, METHODS)

    def fit(self, X, y=None):
        """Fit the reduction, then k-means (or Ward).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        UsageError
            Naming the parameter and the value received, or describing ``X``.
        """
        from sklearn.cluster import KMeans

        self.check_params()
        X = check_features(self, X, reset=True)
        n, k = len(X), self.n_clusters
        if k > n:
            raise UsageError(f"n_clusters={k} is larger than the number of images ({n})"
                             + ("; X holds only 1 sample" if n == 1 else ""))
        distinct = count_distinct(X, stop=k)
        if distinct < k:
            raise UsageError(
                f"n_clusters={k} is larger than the number of distinct images: the {n} images "
                f"have only {distinct} distinct feature vector{'s' if distinct > 1 else ''} "
                f"(identical images); use n_clusters <= {distinct}")
        if self.method == "ward" and n > MAX_WARD_IMAGES:
            raise UsageError(f"method='ward' needs memory for all pairs of images: at most "
                             f"{MAX_WARD_IMAGES} images, got {n}; use method='kmeans'")
        reducer = Reducer(self.pca, self.whiten, self.normalize, self.random_state)
        reducer._fit(X)  # X is checked
        Z = reducer._transform(X)
        if self.method == "ward":
            from sklearn.cluster import AgglomerativeClustering

            labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(Z)
            centers = np.stack([Z[labels == c].mean(axis=0, dtype=np.float64)
                                for c in range(k)])
        else:
            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state)
            labels = km.fit_predict(Z)
            centers = km.cluster_centers_
        order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
        self.reducer_ = reducer
        self.n_components_ = reducer.n_components_
        self.cluster_centers_ = centers[order].astype(np.float32)
        self.labels_, self.distances_ = self._nearest(Z)
        self.inertia_ = float(np.sum(self.distances_ ** 2))
        self.thresholds_ = np.array(
            [np.percentile(self.distances_[self.labels_ == c], OUTLIER_PERCENTILE)
             if np.any(self.labels_ == c) else 0.0 for c in range(k)], dtype=np.float32)
        return self

    def reduce(self, X):
        """Map features into the space the centres live in (as ``reducer_.transform``).

        Returns
        -------
        ndarray of shape (n_samples, n_reduced), float32
        """
        check_is_fitted(self, "cluster_centers_")
        X = check_features(self, X, reset=False)
        return self.reducer_._transform(X)

    def _squared_distances(self, Z):
        # float64 and in blocks: the squared-distance expansion loses digits to
        # cancellation in float32, enough to flip a near tie between the sort and
        # a later predict of the same image; float64 leaves no practical tie.
        C = np.asarray(self.cluster_centers_, dtype=np.float64)
        c2 = np.sum(C ** 2, axis=1)
        for start in range(0, len(Z), NEAREST_BLOCK_ROWS):
            B = np.asarray(Z[start:start + NEAREST_BLOCK_ROWS], dtype=np.float64)
            yield start, np.sum(B ** 2, axis=1)[:, None] - 2 * B @ C.T + c2[None, :]

    def _nearest(self, Z):
        labels = np.empty(len(Z), np.int64)
        dist = np.empty(len(Z), np.float32)
        for start, d2 in self._squared_distances(Z):
            best = np.argmin(d2, axis=1)
            labels[start:start + len(d2)] = best
            dist[start:start + len(d2)] = np.sqrt(np.maximum(d2[np.arange(len(d2)), best], 0.0))
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
        labels : ndarray of shape (n_samples,), int64
        distances : ndarray of shape (n_samples,), float32
        """
        return self._nearest(self.reduce(X))

    def transform(self, X):
        """Distance of each feature vector to every centre (as ``KMeans.transform``).

        Returns
        -------
        ndarray of shape (n_samples, n_clusters), float32
        """
        Z = self.reduce(X)
        out = np.empty((len(Z), len(self.cluster_centers_)), np.float32)
        for start, d2 in self._squared_distances(Z):
            out[start:start + len(d2)] = np.sqrt(np.maximum(d2, 0.0))
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def save(self, path, extra=None):
        """Save the fitted model as ``.npz`` (arrays and JSON settings; no pickle).

        Parameters
        ----------
        path : path-like or file object
        extra : dict, optional
            JSON-able metadata stored with the model (e.g. feature settings).
        """
        check_is_fitted(self, "cluster_centers_")
        meta = {"format": MODEL_FORMAT, "params": self.get_params(),
                "n_features_in": int(self.n_features_in_), "extra": extra or {}}
        arrays = {"cluster_centers": self.cluster_centers_, "thresholds": self.thresholds_,
                  "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        r = self.reducer_
        if r.components_ is not None:
            arrays.update(pca_mean=r.mean_, pca_components=r.components_, pca_scale=r.scale_)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path):
        """Load a model written by :meth:`save` (also by featclust versions that said ``seed``).

        Every part of the file is checked (parameters, shapes and values of
        the arrays) before the model is made, so a damaged or tampered file
        gives one error that says what is wrong, never a traceback later.

        Returns
        -------
        model : FeatureKMeans
        extra : dict
            The metadata given to :meth:`save`.

        Raises
        ------
        ModelMismatchError
            If the file cannot be read, is of another format, or any part of
            it is missing, of the wrong type or shape, or not finite; the
            message names the file and the part.
        """
        where = f"model file {str(path)!r}"
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except ValueError as e:
            if "pickle" in str(e):
                raise ModelMismatchError(f"{where} holds pickled data (object arrays, or no "
                                         ".npz at all), which is never loaded") from None
            raise ModelMismatchError(f"cannot read {where}: {e}") from None
        except (OSError, KeyError, TypeError, EOFError, RuntimeError) as e:
            raise ModelMismatchError(f"cannot read {where}: {e}") from None
        except Exception as e:  # zipfile.BadZipFile and other damage of the container
            raise ModelMismatchError(f"cannot read {where}: {type(e).__name__}: {e}") from None
        return _model_from_arrays(cls, arrays, where)


def _model_from_arrays(cls, arrays, where):
    """Check what :meth:`FeatureKMeans.load` read and build the model from it."""

    def bad(what):
        return ModelMismatchError(f"{where}: {what}")

    unknown = sorted(set(arrays) - set(MODEL_ARRAYS))
    if unknown:
        raise bad(f"unknown arrays {', '.join(unknown)}")
    missing = [name for name in ("meta", "cluster_centers", "thresholds") if name not in arrays]
    if missing:
        raise bad(f"missing arrays {', '.join(missing)}")
    raw = arrays["meta"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise bad(f"meta must be JSON bytes (uint8), got {raw.dtype} of shape {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"meta is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise bad(f"meta must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != MODEL_FORMAT:
        raise ModelMismatchError(f"{where} has format {meta.get('format')!r}, expected "
                                 f"{MODEL_FORMAT}")
    params, extra = meta.get("params"), meta.get("extra", {})
    if not isinstance(params, dict):
        raise bad(f"params must be a JSON object, got {type(params).__name__}")
    if not isinstance(extra, dict):
        raise bad(f"extra must be a JSON object, got {type(extra).__name__}")
    params = dict(params)
    if "seed" in params and "random_state" not in params:
        params["random_state"] = params.pop("seed")  # files written before the redesign
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise bad(f"unknown parameters {', '.join(map(repr, unknown))}")
    model = cls(**params)
    try:
        model.check_params()
    except UsageError as e:
        raise bad(f"parameter {e}") from None
    d = meta.get("n_features_in")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise bad(f"n_features_in={d!r} must be a positive integer")
    k = model.n_clusters

    def array(name, shape):
        a = arrays[name]
        if not np.issubdtype(a.dtype, np.floating) or a.shape != shape:
            raise bad(f"{name} must be a float array of shape {shape}, got {a.dtype} of shape "
                      f"{a.shape}")
        if not np.isfinite(a).all():
            raise bad(f"{name} holds NaN or infinite values")
        return a.astype(np.float32, copy=False)

    pca_names = ("pca_mean", "pca_components", "pca_scale")
    present = [name for name in pca_names if name in arrays]
    if present and len(present) != 3:
        raise bad(f"PCA arrays incomplete: has {', '.join(present)}, needs {', '.join(pca_names)}")
    r = Reducer(model.pca, model.whiten, model.normalize, model.random_state)
    r.n_features_in_ = model.n_features_in_ = d
    r.mean_ = r.components_ = r.scale_ = None
    width = d
    if present:
        c = arrays["pca_components"].shape[0] if arrays["pca_components"].ndim == 2 else -1
        if c < 1 or c > d or (model.pca is not None and c != model.pca):
            raise bad(f"pca_components has shape {arrays['pca_components'].shape}; expected "
                      f"({model.pca if model.pca is not None else 'at most ' + str(d)}, {d})")
        r.mean_ = array("pca_mean", (d,))
        r.components_ = array("pca_components", (c, d))
        r.scale_ = array("pca_scale", (c,))
        if np.any(r.scale_ <= 0):
            raise bad("pca_scale must be positive")
        width = c
    elif model.pca is not None:
        raise bad(f"pca={model.pca} but the file has no PCA arrays")
    r.n_components_ = model.n_components_ = r.components_.shape[0] if present else None
    model.reducer_ = r
    model.cluster_centers_ = array("cluster_centers", (k, width))
    model.thresholds_ = array("thresholds", (k,))
    if np.any(model.thresholds_ < 0):
        raise bad("thresholds must not be negative")
    return model, extra


def subsample_kmeans(F, k, n_runs, n_init, fit_size, rng):
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
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    n = len(F)
    sq = np.sum(F ** 2, axis=1)
    runs, inertias = [], []
    for _ in range(n_runs):
        rows = np.sort(rng.choice(n, fit_size, replace=False)) if n > fit_size else slice(None)
        km = KMeans(n_clusters=k, n_init=n_init, random_state=int(rng.integers(2 ** 31)))
        # One thread: on a few thousand rows, syncing threads costs more than it
        # saves (3-10 times slower on a busy 2-core machine).
        with threadpool_limits(1):
            km.fit(F[rows])
        centers = km.cluster_centers_.astype(np.float32)
        d2 = sq[:, None] - 2 * (F @ centers.T) + np.sum(centers ** 2, axis=1)[None, :]
        labels = np.argmin(d2, axis=1)
        runs.append(labels)
        inertias.append(float(np.sum(np.maximum(d2[np.arange(n), labels], 0))))
    return runs[int(np.argmin(inertias))], runs
