"""k-means (or Ward) on feature vectors, in the space of :class:`~featclust.reduce.Reducer`.

No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .checks import check_bool, check_choice, check_int, check_random_state
from .errors import UsageError
from .reduce import Reducer, blocks, check_features, count_distinct

#: Members of a cluster farther from its centre than this percentile of their
#: distances make a new image an outlier (see :attr:`FeatureKMeans.thresholds_`).
OUTLIER_PERCENTILE = 95
#: Rows per block when finding the nearest centres.
NEAREST_BLOCK_ROWS = 4096
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
#: Constructor parameters, in order (also the ``params`` a model file records).
PARAMS = ("n_clusters", "pca", "whiten", "normalize", "random_state", "n_init", "method",
          "fit_sample")
#: Fitted attributes that belong to the rows fitted on (one value per row, or their sum).
ROW_ATTRIBUTES = ("labels_", "distances_", "inertia_")


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
    random_state : int, default 0
        Random state of PCA and k-means.
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
        with the number of images beyond the per-row labels. ``None``, or a
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
        values a row; beyond it only ``labels_`` and ``distances_`` (12
        bytes a row) grow.

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
    n_features_in_ : int
    n_components_ : int or None
        PCA components used (``pca``, or the automatic choice above).

    A model read by :meth:`load` has no ``labels_``, ``distances_`` or
    ``inertia_`` (they belong to the fitted images).
    """

    def __init__(self, n_clusters=8, pca=DEFAULT_PCA, whiten=False, normalize=DEFAULT_NORMALIZE,
                 random_state=0, n_init=DEFAULT_N_INIT, method="kmeans", fit_sample=FIT_SAMPLE):
        self.n_clusters = n_clusters
        self.pca = pca
        self.whiten = whiten
        self.normalize = normalize
        self.random_state = random_state
        self.n_init = n_init
        self.method = method
        self.fit_sample = fit_sample

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
        check_int("fit_sample", self.fit_sample, low=2, none_ok=True)

    def fit(self, X, y=None, labeller=None):
        """Fit the reduction, then k-means (or Ward), on at most ``fit_sample`` rows.

        With ``fit_sample`` at least the number of rows (or ``None``) every
        row is fitted on and the result is that of a fit on the whole
        matrix. Otherwise the reduction and the clustering are fitted on a
        random sample of ``fit_sample`` rows (drawn with ``random_state``,
        read block by block), and then every row is labelled block by block
        (reduced and given its nearest centre), so memory does not grow
        with the number of rows beyond ``labels_`` and ``distances_``.

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
        from sklearn.cluster import KMeans

        self.check_params()
        for name in ROW_ATTRIBUTES + ("thresholds_",):  # of an earlier fit
            self.__dict__.pop(name, None)
        X = check_features(self, X, reset=True)
        n, k = len(X), self.n_clusters
        if k > n:
            raise UsageError(f"n_clusters={k} is larger than the number of images ({n})"
                             + ("; X holds only 1 sample" if n == 1 else ""))
        rows = sample_rows(n, self.fit_sample, self.random_state)
        m = n if rows is None else len(rows)
        if k > m:
            raise UsageError(f"n_clusters={k} is larger than fit_sample={self.fit_sample}")
        where = f"the {n} images" if rows is None else f"the {m} images of the fit sample"
        distinct = count_distinct(X, stop=k, rows=rows)
        if distinct < k:
            raise UsageError(
                f"n_clusters={k} is larger than the number of distinct images: {where} "
                f"have only {distinct} distinct feature vector{'s' if distinct > 1 else ''} "
                f"(identical images); use n_clusters <= {distinct}")
        if self.method == "ward" and m > MAX_WARD_IMAGES:
            raise UsageError(f"method='ward' needs memory for all pairs of images: at most "
                             f"{MAX_WARD_IMAGES} images, got {m}; use method='kmeans' or "
                             f"fit_sample <= {MAX_WARD_IMAGES}")
        reducer = Reducer(self.pca, self.whiten, self.normalize, self.random_state)
        reducer._fit(X, rows)  # X is checked
        if rows is None:
            Z = reducer._transform(X)
        else:
            Z = np.concatenate([reducer._transform_block(b) for b in blocks(X, rows=rows)])
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
        rank = np.empty(k, np.int64)
        rank[order] = np.arange(k)
        self.reducer_ = reducer
        self.n_components_ = reducer.n_components_
        self.cluster_centers_ = centers[order].astype(np.float32)
        self.feature_centers_ = None
        if reducer.components_ is not None:
            self.feature_centers_ = member_means(reducer, X, rows, rank[labels], k)
        if rows is None and labeller is None:
            labels, distances = self._nearest(Z)
            if self.feature_centers_ is not None:  # measured before the PCA
                start = 0
                for block in blocks(X):
                    end = start + len(block)
                    distances[start:end] = self._feature_distances(block, labels[start:end])
                    start = end
        else:
            del Z, labels
            labels, distances = (labeller or label_rows)(self, X)
        self._set_row_labels(labels, distances, n)
        return self

    def _set_row_labels(self, labels, distances, n):
        """Set ``labels_``, ``distances_``, ``inertia_`` and ``thresholds_`` from every row's."""
        k = self.n_clusters
        labels = np.asarray(labels, dtype=np.int64)
        distances = np.asarray(distances, dtype=np.float32)
        if labels.shape != (n,) or distances.shape != (n,):
            raise ValueError(f"the labeller gave labels of shape {labels.shape} and distances "
                             f"of shape {distances.shape} for {n} rows")
        self.labels_, self.distances_ = labels, distances
        self.inertia_ = float(np.sum(distances ** 2))
        self.thresholds_ = np.array(
            [np.percentile(distances[labels == c], OUTLIER_PERCENTILE)
             if np.any(labels == c) else 0.0 for c in range(k)], dtype=np.float32)

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

    def _label_block(self, X_block):
        """Nearest centre (in the reduced space) and distance of checked rows.

        With PCA, the distance is measured before the PCA, to the mean of the
        cluster's members there (:attr:`feature_centers_`): an image unlike the
        folder differs mostly in what the few kept components leave out, and
        is far from every cluster there even when its projection is not.
        """
        labels, distances = self._nearest(self.reducer_._transform_block(X_block))
        if getattr(self, "feature_centers_", None) is not None:
            distances = self._feature_distances(X_block, labels)
        return labels, distances

    def _feature_distances(self, X_block, labels):
        """Distance of checked rows to their cluster's members' mean before the PCA."""
        F = self.reducer_.prepare(X_block).astype(np.float64)
        return np.linalg.norm(F - self.feature_centers_[labels], axis=1).astype(np.float32)

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
        check_is_fitted(self, "cluster_centers_")
        return label_rows(self, check_features(self, X, reset=False))

    def transform(self, X):
        """Distance of each feature vector to every centre (as ``KMeans.transform``).

        In the reduced space the centres live in (:attr:`distances_` is
        measured before the PCA when there is one).

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

        See :func:`featclust.modelfile.save_model`.

        Parameters
        ----------
        path : path-like or file object
        extra : dict, optional
            JSON-able metadata stored with the model (e.g. feature settings).
        """
        from .modelfile import save_model

        check_is_fitted(self, "cluster_centers_")
        save_model(self, path, extra)

    @classmethod
    def load(cls, path):
        """Load a model written by :meth:`save`, every part of the file checked.

        See :func:`featclust.modelfile.load_model`.

        Returns
        -------
        model : FeatureKMeans
        extra : dict
            The metadata given to :meth:`save`.

        Raises
        ------
        ModelMismatchError
            Naming the file and what is wrong with it.
        """
        from .modelfile import load_model

        return load_model(path, cls)


def sample_rows(n, fit_sample, random_state):
    """The rows a fit on at most ``fit_sample`` of ``n`` rows uses: sorted indices, or None for all.

    The same ``n``, ``fit_sample`` and ``random_state`` give the same rows.
    """
    if fit_sample is None or fit_sample >= n:
        return None
    return np.sort(np.random.default_rng(random_state).choice(n, fit_sample, replace=False))


def label_block(model, X_block):
    """Nearest centre and distance to it of every row of one block (a store chunk, say).

    What a Dask task runs to label its part of a folder; the same as
    ``model.predict_with_distance(X_block)``. Send it a model without
    per-row attributes (:func:`slim`, or the model a ``labeller`` of
    :meth:`FeatureKMeans.fit` receives): a few centres and the reduction.

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


def label_rows(model, X):
    """:func:`label_block` over every block of ``X`` in turn (the default labeller).

    ``X`` is read block by block (see :func:`featclust.reduce.blocks`):
    memory holds one block besides the result.

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
    distances : ndarray of shape (n_samples,), float32
    """
    labels = np.empty(len(X), np.int64)
    distances = np.empty(len(X), np.float32)
    start = 0
    for block in blocks(X):
        labels[start:start + len(block)], distances[start:start + len(block)] = (
            model._label_block(block))
        start += len(block)
    return labels, distances


def member_means(reducer, X, rows, labels, k):
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
        part = labels[start:start + len(block)]
        np.add.at(sums, part, reducer.prepare(block).astype(np.float64))
        start += len(block)
    counts = np.bincount(labels, minlength=k)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def slim(model):
    """A copy of a fitted model without its per-row attributes (what predicting needs).

    It pickles to the size of its centres and reduction, whatever the
    number of rows it was fitted on, as a model read by
    :meth:`FeatureKMeans.load` does.
    """
    import copy

    check_is_fitted(model, "cluster_centers_")
    out = copy.copy(model)
    for name in ROW_ATTRIBUTES:
        out.__dict__.pop(name, None)
    return out


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
