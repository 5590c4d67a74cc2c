"""k-means (or Ward) on feature vectors, in the space of :class:`~featclust.reduce.Reducer`.

The estimator. The opening of a fit it shares with :class:`featclust.kscan.KScan`
(:func:`featclust.labelling.checked_sample`, :func:`featclust.reduce.reduced_sample`),
giving rows their nearest centre and the outlier rule are :mod:`featclust.labelling`;
the model file is :mod:`featclust.modelfile`. No TensorFlow here: this module works on
arrays only.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import IO, Any

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.utils.validation import check_is_fitted

from . import reduce as reduction
from .checks import check_bool, check_choice, check_int, check_random_state
from .errors import UsageError
from .labelling import (
    OUTLIER_PERCENTILE,
    ROW_ATTRIBUTES,
    checked_sample,
    feature_distances,
    label_block,
    label_rows,
    member_means,
    nearest,
    outlier_thresholds,
    outliers,
    sample_rows,
    slim,
    squared_distances,
    subsample_kmeans,
)
from .modelfile import check_feature_settings, load_model, save_model
from .reduce import blocks, check_features, count_distinct, reduced_sample

# Kept importable from here, where callers found them before featclust.labelling.
__all__ = [
    "DEFAULTS",
    "DEFAULT_NORMALIZE",
    "DEFAULT_N_INIT",
    "DEFAULT_PCA",
    "FIT_SAMPLE",
    "FeatureKMeans",
    "MAX_WARD_IMAGES",
    "METHODS",
    "OUTLIER_PERCENTILE",
    "ROW_ATTRIBUTES",
    "checked_sample",
    "label_block",
    "label_rows",
    "member_means",
    "outliers",
    "reduced_sample",
    "sample_rows",
    "slim",
    "subsample_kmeans",
]

#: Clustering methods: k-means, or Ward agglomerative clustering.
METHODS = ("kmeans", "ward")
#: Ward needs the n*(n-1)/2 pairwise distances in memory: 20,000 images take 1.6 GB.
MAX_WARD_IMAGES = 20000
#: Default ``fit_sample``: the reduction and k-means of FeatureKMeans and KScan
#: are fitted on at most this many rows (measured with benchmarks/fit_sample.py;
#: see the ``fit_sample`` parameter of :class:`FeatureKMeans`).
FIT_SAMPLE = 100_000
#: The reduction before k-means chosen by ``benchmarks/quality.py`` (the best
#: worst case over five kinds of generated folders; README, "Defaults chosen by
#: measurement"): PCA components (at most the number of images) and L2
#: normalisation, and the k-means restarts, of FeatureKMeans, KScan and sort.
DEFAULT_PCA = 32
DEFAULT_NORMALIZE = True
#: 16 restarts (4 before) cut the spread of the result over random states by
#: half on that benchmark, and k-means costs seconds next to the embedding.
DEFAULT_N_INIT = 16


class FeatureKMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """k-means on feature vectors, a scikit-learn estimator.

    The features are reduced by a :class:`~featclust.reduce.Reducer`
    (optional L2 normalisation and PCA, cosine or spherical k-means when
    normalised), then clustered with :class:`sklearn.cluster.KMeans`.
    Clusters are numbered by size, largest first, so ``cluster 0`` is the
    biggest group.

    Parameters
    ----------
    n_clusters : int, default 8
    pca : int or None, default :data:`DEFAULT_PCA`
        Number of PCA components, at most the number of images (and of
        feature values); ``None`` keeps features of up to 4,096 values as
        they are and reduces longer ones (flatten pooling) to
        ``min(256, n_samples)`` components. A large matrix is reduced block
        by block (:func:`featclust.reduce.blockwise_pca`), so it can be a
        memory-mapped array larger than memory.
    whiten : bool, default False
        Whiten the PCA components.
    normalize : bool, default :data:`DEFAULT_NORMALIZE`
        L2-normalise the vectors before and after PCA.
    random_state : int, None or numpy.random.RandomState, default 0
        Random state of the fit sample, PCA and k-means, as scikit-learn
        accepts it: an int gives the same result every time; ``None`` (numpy's
        global random state) or a ``RandomState`` give the fit an int seed
        drawn from it (see :func:`featclust.checks.check_random_state` and
        ``seed_``).
    n_init : int, default :data:`DEFAULT_N_INIT`
        k-means restarts; the best inertia wins.
    method : {"kmeans", "ward"}, default "kmeans"
        ``"ward"``: Ward agglomerative clustering finds the groups, their
        means are the centres, and each image goes to its nearest centre
        (so :meth:`predict` gives an image the label it got in the fit).
        Memory grows with the square of the number of images (of the fit
        sample); at most :data:`MAX_WARD_IMAGES`.
    fit_sample : int or None, default :data:`FIT_SAMPLE` (100,000)
        Fit the reduction and the clustering on a random sample of at most
        this many rows (drawn with ``random_state``), then give every row
        its nearest centre, block by block: time and memory stop growing
        with the number of images beyond the per-row results. ``None``, or a
        value of at least the number of rows, fits on every row (the labels
        are then exactly those of a fit on the whole matrix).
        Chosen by measurement (benchmarks/fit_sample.py; 200,000 x 512
        planted clusters, k=20, memory-mapped, 2 busy cores): samples of
        10,000 to 100,000 rows matched the full fit's agreement with the
        planted truth within k-means' own run-to-run spread (ARI 0.70-0.96
        either way), while the full fit took 114-266 s and 1.18 GB of
        allocations against 65-79 s and 0.60 GB for 100,000 rows (25,000:
        0.16 GB). 100,000 keeps every folder of up to 100,000 images
        exactly as fitted whole, keeps rare groups (0.1% of the images is
        ~100 rows of the sample), and bounds the fit below 1 GB at 512
        values a row; beyond it only ``labels_``, ``distances_`` and
        ``reduced_`` grow (12 bytes a row, and 4 per component: 140 bytes a
        row at 32 components).

    Attributes
    ----------
    reducer_ : featclust.reduce.Reducer
        The fitted reduction.
    labels_ : ndarray of shape (n_samples,)
    cluster_centers_ : ndarray of shape (n_clusters, n_reduced)
        Centres in the reduced (and normalised) space.
    distances_ : ndarray of shape (n_samples,)
        Euclidean distance of each sample to its cluster: in that space
        without PCA; with PCA, before it, to :attr:`feature_centers_`, so
        that an image unlike the folder is far from every cluster even when
        its few kept components are not.
    feature_centers_ : ndarray of shape (n_clusters, n_features) or None
        With PCA, the mean of each cluster's members before the PCA (after
        the first L2 normalisation); ``None`` without PCA.
    thresholds_ : ndarray of shape (n_clusters,)
        The 95th percentile of the members' distances, per cluster (0 for an
        empty cluster): a new vector farther than this from its centre is an
        outlier (see :meth:`predict_with_distance`).
    inertia_ : float
    reduced_ : ndarray of shape (n_samples, n_components_ or n_features), float32, or None
        Every fitted row in the space of :attr:`cluster_centers_` (what
        :meth:`reduce` gives for ``X``), kept so that judging the clustering
        (:func:`featclust.scores.judge`) and the report do not reduce the
        features again. With PCA it is small (128 bytes a row at 32
        components: 128 MB for a million rows, memory-mapped ``X`` or not).
        Without PCA (``pca=None`` on features of up to 4,096 values) the
        reduced rows are ``X`` itself, normalised: they are kept only while
        they take at most :data:`featclust.reduce.MAX_IN_MEMORY_BYTES`
        (64 MB), else ``reduced_`` is None and the rows are reduced again,
        block by block, when needed. Without PCA or normalisation the rows
        are ``X`` unchanged and ``reduced_`` is None (nothing to save).
        Computed while labelling the rows; with a ``labeller`` (Dask), in one
        more local pass over ``X`` after it.
    seed_ : int
        The int seed this fit drew everything from (``random_state`` itself
        when it is an int).
    n_features_in_ : int
    n_components_ : int or None
        PCA components used (``pca``, or the automatic choice above).

    A model read by :meth:`load` has no ``labels_``, ``distances_``,
    ``inertia_`` or ``reduced_`` (they belong to the fitted images).
    """

    def __init__(
        self,
        n_clusters: int = 8,
        pca: int | None = DEFAULT_PCA,
        whiten: bool = False,
        normalize: bool = DEFAULT_NORMALIZE,
        random_state: Any = 0,
        n_init: int = DEFAULT_N_INIT,
        method: str = "kmeans",
        fit_sample: int | None = FIT_SAMPLE,
    ) -> None:
        self.n_clusters = n_clusters
        self.pca = pca
        self.whiten = whiten
        self.normalize = normalize
        self.random_state = random_state
        self.n_init = n_init
        self.method = method
        self.fit_sample = fit_sample

    def check_params(self) -> None:
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
        check_random_state("random_state", self.random_state, seed=False)
        check_int("n_init", self.n_init)
        check_choice("method", self.method, METHODS)
        check_int("fit_sample", self.fit_sample, low=2, none_ok=True)

    def fit(
        self,
        X: Any,
        y: Any = None,
        labeller: Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> FeatureKMeans:
        """Fit the reduction, then k-means (or Ward), on at most ``fit_sample`` rows.

        With ``fit_sample`` at least the number of rows (or ``None``) every
        row is fitted on and the result is that of a fit on the whole
        matrix. Otherwise the reduction and the clustering are fitted on a
        random sample of ``fit_sample`` rows (drawn with ``random_state``,
        read block by block), and then every row is labelled block by block
        (reduced and given its nearest centre), so memory does not grow
        with the number of rows beyond the per-row ``labels_``,
        ``distances_`` and ``reduced_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            May be a memory-mapped array larger than memory.
        y : ignored
        labeller : callable, optional
            ``labeller(model, X) -> (labels, distances)`` labels every row
            once the centres are fitted (``model`` has no per-row attributes
            then, so it pickles small); for example one that runs
            :func:`label_block` as Dask tasks. Default :func:`label_rows`
            (or, when every row was fitted on, the labels of the fit itself).

        Returns
        -------
        self

        Raises
        ------
        UsageError
            Naming the parameter and the value received, or describing ``X``.
        """
        self.check_params()
        for name in ROW_ATTRIBUTES + ("thresholds_",):  # of an earlier fit
            self.__dict__.pop(name, None)
        seed = check_random_state("random_state", self.random_state)
        X, rows = checked_sample(self, X, self.fit_sample, seed)
        n, k = len(X), self.n_clusters
        if k > n:
            raise UsageError(
                f"n_clusters={k} is larger than the number of images ({n})"
                + ("; X holds only 1 sample" if n == 1 else "")
            )
        m = n if rows is None else len(rows)
        if k > m:
            raise UsageError(f"n_clusters={k} is larger than fit_sample={self.fit_sample}")
        where = f"the {n} images" if rows is None else f"the {m} images of the fit sample"
        distinct = count_distinct(X, stop=k, rows=rows)
        if distinct < k:
            raise UsageError(
                f"n_clusters={k} is larger than the number of distinct images: {where} "
                f"have only {distinct} distinct feature vector{'s' if distinct > 1 else ''} "
                f"(identical images); use n_clusters <= {distinct}"
            )
        if self.method == "ward" and m > MAX_WARD_IMAGES:
            raise UsageError(
                f"method='ward' needs memory for all pairs of images: at most "
                f"{MAX_WARD_IMAGES} images, got {m}; use method='kmeans' or "
                f"fit_sample <= {MAX_WARD_IMAGES}"
            )
        reducer, Z = reduced_sample(X, rows, self.pca, self.whiten, self.normalize, seed)
        if self.method == "ward":
            labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(Z)
            centers = np.stack([Z[labels == c].mean(axis=0, dtype=np.float64) for c in range(k)])
        else:
            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=seed)
            labels = km.fit_predict(Z)
            centers = km.cluster_centers_
        order = np.argsort(-np.bincount(labels, minlength=k), kind="stable")
        rank = np.empty(k, np.int64)
        rank[order] = np.arange(k)
        self.seed_ = seed
        self.reducer_ = reducer
        self.n_components_ = reducer.n_components_
        self.cluster_centers_ = centers[order].astype(np.float32)
        self.feature_centers_ = None
        if reducer.components_ is not None:
            self.feature_centers_ = member_means(reducer, X, rows, rank[labels], k)
        width = self.cluster_centers_.shape[1]
        # See reduced_: without PCA or normalisation the rows would be X itself.
        keep = reducer.components_ is not None or (
            self.normalize and n * width * 4 <= reduction.MAX_IN_MEMORY_BYTES
        )
        if rows is None and labeller is None:
            labels, distances = nearest(self.cluster_centers_, Z)
            if self.feature_centers_ is not None:  # measured before the PCA
                start = 0
                for block in blocks(X):
                    end = start + len(block)
                    distances[start:end] = feature_distances(self, block, labels[start:end])
                    start = end
            reduced = Z if keep else None
        elif labeller is None:
            del Z, labels
            reduced = np.empty((n, width), np.float32) if keep else None
            labels, distances = label_rows(self, X, reduced)
        else:
            del Z, labels
            labels, distances = labeller(self, X)  # before reduced_: the model pickles small
            reduced = reducer.transform_checked(X) if keep else None
        self._set_row_labels(labels, distances, n)
        self.reduced_ = reduced
        return self

    def _set_row_labels(self, labels, distances, n):
        """Set ``labels_``, ``distances_``, ``inertia_`` and ``thresholds_`` from every row's."""
        labels = np.asarray(labels, dtype=np.int64)
        distances = np.asarray(distances, dtype=np.float32)
        if labels.shape != (n,) or distances.shape != (n,):
            raise ValueError(
                f"the labeller gave labels of shape {labels.shape} and distances "
                f"of shape {distances.shape} for {n} rows"
            )
        self.labels_, self.distances_ = labels, distances
        self.inertia_ = float(np.sum(distances**2))
        self.thresholds_ = outlier_thresholds(labels, distances, self.n_clusters)

    def reduce(self, X: Any) -> np.ndarray:
        """Map features into the space the centres live in (as ``reducer_.transform``).

        Returns
        -------
        ndarray of shape (n_samples, n_reduced), float32
        """
        check_is_fitted(self, "cluster_centers_")
        X = check_features(self, X, reset=False)
        return self.reducer_.transform_checked(X)

    def predict(self, X: Any) -> np.ndarray:
        """Index of the nearest centre of each feature vector."""
        return self.predict_with_distance(X)[0]

    def predict_with_distance(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centre and the distance to it, for each feature vector.

        A vector is an outlier of its cluster when the distance exceeds
        ``thresholds_[label]`` (:meth:`outliers`).

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64
        distances : ndarray of shape (n_samples,), float32
        """
        check_is_fitted(self, "cluster_centers_")
        return label_rows(self, check_features(self, X, reset=False))

    def outliers(self, labels: np.ndarray, distances: np.ndarray) -> np.ndarray:
        """Which images are outliers of their cluster (:func:`featclust.labelling.outliers`).

        Parameters
        ----------
        labels, distances : ndarray of shape (n_samples,)
            As :meth:`predict_with_distance` gives them (or ``labels_`` and
            ``distances_``).

        Returns
        -------
        ndarray of shape (n_samples,), bool
            True where the distance exceeds the cluster's threshold (the 95th
            percentile of its members' distances, :attr:`thresholds_`).
        """
        check_is_fitted(self, "thresholds_")
        return outliers(self.thresholds_, labels, distances)

    def transform(self, X: Any) -> np.ndarray:
        """Distance of each feature vector to every centre (as ``KMeans.transform``).

        In the reduced space the centres live in (:attr:`distances_` is
        measured before the PCA when there is one).

        Returns
        -------
        ndarray of shape (n_samples, n_clusters), float32
        """
        Z = self.reduce(X)
        out = np.empty((len(Z), len(self.cluster_centers_)), np.float32)
        for start, d2 in squared_distances(self.cluster_centers_, Z):
            out[start : start + len(d2)] = np.sqrt(np.maximum(d2, 0.0))
        return out

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform` (one per centre), for :meth:`get_feature_names_out`."""
        return len(self.cluster_centers_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def save(self, path: str | os.PathLike | IO[bytes], extra: dict | None = None) -> None:
        """Save the fitted model as ``.npz`` (arrays and JSON settings; no pickle).

        See :func:`featclust.modelfile.save_model`.

        Parameters
        ----------
        path : path-like or file object
        extra : dict, optional
            JSON-able metadata stored with the model (e.g. feature settings).
        """
        check_is_fitted(self, "cluster_centers_")
        save_model(self, path, extra)

    @classmethod
    def load(
        cls, path: str | os.PathLike | IO[bytes], feature_settings: dict | None = None
    ) -> tuple[FeatureKMeans, dict]:
        """Load a model written by :meth:`save`, every part of the file checked.

        See :func:`featclust.modelfile.load_model`.

        Parameters
        ----------
        path : path-like or file object
        feature_settings : dict, optional
            The settings of the features the model is for
            (:meth:`featclust.Embedder.settings`): a model fitted on others is
            refused (see :func:`featclust.modelfile.check_feature_settings`).

        Returns
        -------
        model : FeatureKMeans
        extra : dict
            The metadata given to :meth:`save`.

        Raises
        ------
        ModelMismatchError
            Naming the file and what is wrong with it, or the feature settings
            that differ.
        """
        model, extra = load_model(path, cls)
        where = path if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "")
        check_feature_settings(model, extra, feature_settings, where)
        return model, extra


#: The parameters of :class:`FeatureKMeans` and their defaults, read from its signature
#: (the one place they are declared).
DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(FeatureKMeans).parameters.items()
}
