"""A scikit-learn estimator over the whole pipeline: image files in, clusters out."""

from __future__ import annotations

import os

from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .checks import check_int
from .cluster import DEFAULT_NORMALIZE, DEFAULT_PCA, FeatureKMeans
from .embed import DEFAULTS as EMBED_DEFAULTS
from .embed import Embedder
from .errors import NoImagesError, UsageError



def _inputs(X):
    """``X`` (a folder, an image path, or a list of them) as a list of paths."""
    if isinstance(X, (str, os.PathLike)):
        return [X]
    if isinstance(X, (list, tuple)) and X and all(isinstance(x, (str, os.PathLike)) for x in X):
        return list(X)
    raise UsageError(f"X={X!r} must be a folder, an image file or a non-empty list of folders "
                     "and image files")


class ImageClusterer(ClusterMixin, TransformerMixin, BaseEstimator):
    """Cluster images by their VGG16 features.

    :meth:`fit`, :meth:`predict`, :meth:`transform` and :meth:`assign` all
    take ``X`` as a folder (its images, found as ``featclust sort`` finds
    them), one image file, or a list of folders and image files. Features
    go through the feature store, so an image is embedded once.

    The feature parameters (``weights``, ``pooling``, ``batch_size``,
    ``precision``, ``layer``, ``tta``, ``grid``) are those of
    :class:`featclust.embed.Embedder`, with its defaults.

    Parameters
    ----------
    n_clusters : int or "auto", default 8
        ``"auto"``: the k a scan of 2..30 suggests (see ``kscan_``).
    weights : str, default "imagenet"
        ``"imagenet"``, ``"none"`` (random, seeded with ``random_state``) or
        a weights file path.
    pooling : {"avg", "max", "gem", "flatten"}, default "max"
    pca : int or None, default :data:`featclust.cluster.DEFAULT_PCA`
    normalize : bool, default :data:`featclust.cluster.DEFAULT_NORMALIZE`
    random_state : int, default 0
        Random state of the clustering (and of the random weights).
    store : path-like or None, default None
        Feature store root; default under the user's cache folder.
    batch_size : int or None, default None
        Images per forward pass; ``None`` is 16 on a CPU and 256 on a GPU.
    precision : {"auto", "float32", "bfloat16", "float16"}, default "auto"
    layer : str, default "block4+block5"
        The VGG16 block whose output is pooled (``"block3"``, ``"block4"``,
        ``"block5"``), or several joined by ``+`` (``"block4+block5"``).
    tta : bool, default False
        Average the features of the 8 flips and 90-degree rotations.
    method : {"kmeans", "ward"}, default "kmeans"
        See :class:`featclust.cluster.FeatureKMeans`.
    progress : bool, None or tqdm class, default None
        Progress bars while images are embedded: ``True`` on, ``False`` off,
        ``None`` on where a person watches (a terminal or a notebook), or a
        ``tqdm`` class to draw them with (passed to
        :func:`featclust.embed_folder`).
    grid : {1, 2, 4}, default 1
        Spatial grid of the pooling: 1 the whole map; 2 adds its 2x2 cells, 4
        its 2x2 and 4x4 cells.

    Attributes
    ----------
    paths_ : list of str
        The clustered images: relative to the folder for a folder, as given
        otherwise.
    features_ : ndarray of shape (n_images, n_features)
    labels_ : ndarray of shape (n_images,)
    cluster_centers_ : ndarray of shape (n_clusters, n_reduced)
    distances_ : ndarray of shape (n_images,)
    model_ : featclust.cluster.FeatureKMeans
    embedder_ : featclust.embed.Embedder
    kscan_ : featclust.kscan.KScan or None
        The scan that chose k (with ``n_clusters="auto"``).
    image_dir_ : str or None
        The clustered folder (``None`` when ``X`` was not one folder).
    embed_result_ : featclust.pipeline.EmbedResult or None
        What embedding the folder did (``None`` when ``X`` was not one folder).
    bad_files_ : list of featclust.images.BadFile
        Inputs that could not be used, left out of the clustering.

    Examples
    --------
    >>> est = ImageClusterer(n_clusters=4, weights="none").fit("images/")  # doctest: +SKIP
    >>> est.predict("images/new.png")                                       # doctest: +SKIP
    """

    def __init__(self, n_clusters=8, weights=EMBED_DEFAULTS["weights"], pooling=EMBED_DEFAULTS["pooling"],
                 pca=DEFAULT_PCA, normalize=DEFAULT_NORMALIZE, random_state=0, store=None,
                 batch_size=EMBED_DEFAULTS["batch_size"], precision=EMBED_DEFAULTS["precision"],
                 layer=EMBED_DEFAULTS["layer"], tta=EMBED_DEFAULTS["tta"], method="kmeans", progress=None,
                 grid=EMBED_DEFAULTS["grid"]):
        self.n_clusters = n_clusters
        self.weights = weights
        self.pooling = pooling
        self.pca = pca
        self.normalize = normalize
        self.random_state = random_state
        self.store = store
        self.batch_size = batch_size
        self.precision = precision
        self.layer = layer
        self.tta = tta
        self.method = method
        self.progress = progress
        self.grid = grid

    def _model(self, n_clusters):
        model = FeatureKMeans(n_clusters, pca=self.pca, normalize=self.normalize,
                              random_state=self.random_state, method=self.method)
        model.check_params()
        return model

    def fit(self, X, y=None):
        """Embed the images (reusing the store) and cluster them.

        Parameters
        ----------
        X : path-like or list of path-like
            A folder, an image file, or a list of folders and image files.
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        UsageError
            For an invalid parameter (before anything is embedded) or input.
        NoImagesError
            If no input is a usable image.
        """
        from .kscan import choose_k
        from .pipeline import embed_folder, embed_inputs

        auto = isinstance(self.n_clusters, str) and self.n_clusters == "auto"
        if not auto:
            check_int("n_clusters", self.n_clusters)
        model = self._model(2 if auto else self.n_clusters)
        inputs = _inputs(X)
        embedder = Embedder(weights=self.weights, pooling=self.pooling,
                            precision=self.precision, batch_size=self.batch_size,
                            seed=self.random_state, layer=self.layer, tta=self.tta,
                            grid=self.grid)
        if len(inputs) == 1 and os.path.isdir(inputs[0]):
            emb = embed_folder(inputs[0], embedder, self.store, progress=self.progress)
            paths, features, bad = emb.paths, emb.features, emb.bad_files
            image_dir = os.path.abspath(inputs[0])
        else:
            paths, features, bad = embed_inputs(inputs, embedder, self.store, image_dir=None,
                                                progress=self.progress)
            emb = image_dir = None
            if not paths:
                raise NoImagesError("none of the inputs is a usable image"
                                    + (f" ({bad[0].path}: {bad[0].reason})" if bad else ""))
        kscan = None
        if auto:
            kscan = choose_k(features, pca=self.pca, normalize=self.normalize,
                             random_state=self.random_state)
            model.set_params(n_clusters=kscan.suggested_k_)
        model.fit(features)
        self.embedder_ = embedder
        self.kscan_ = kscan
        self.image_dir_ = image_dir
        self.embed_result_ = emb
        self.bad_files_ = list(bad)
        self.paths_ = list(paths)
        self.features_ = features
        self._set_model(model)
        self.labels_ = model.labels_
        self.distances_ = model.distances_
        return self

    def _set_model(self, model):
        self.model_ = model
        self.cluster_centers_ = model.cluster_centers_

    def fit_transform(self, X, y=None):
        """Fit and return ``features_``."""
        return self.fit(X).features_

    @classmethod
    def from_output(cls, out_dir, store=None, progress=None):
        """The fitted estimator saved by ``sort`` in an output folder.

        Parameters
        ----------
        out_dir : path-like
            A folder written by :func:`featclust.sort_folder` (``featclust sort``).
        store : path-like, optional
            Store root; default the one the sort used.
        progress : bool, None or tqdm class, default None
            As the parameter of :class:`ImageClusterer`.

        Returns
        -------
        ImageClusterer
            With ``model_``, ``embedder_``, ``cluster_centers_`` and
            ``image_dir_`` set, ready for :meth:`predict`, :meth:`transform`
            and :meth:`assign` (the clustered images' ``labels_`` are in the
            folder's ``labels.csv``).

        Raises
        ------
        UsageError, OutputFormatError
            If ``out_dir`` holds no complete sort of a known format.
        ModelMismatchError
            If the model cannot be used with the embedder it was made with
            (its weights file changed, say).
        """
        from .assign import embedder_for
        from .output import open_sorted

        sorted_folder = open_sorted(out_dir)
        record, model = sorted_folder.record, sorted_folder.model
        embedder = embedder_for(sorted_folder)
        e = embedder.get_params()
        est = cls(n_clusters=model.n_clusters, weights=e["weights"], pooling=e["pooling"],
                  pca=model.pca, normalize=model.normalize, random_state=model.random_state,
                  store=store if store is not None else record.store_root,
                  batch_size=e["batch_size"], precision=e["precision"], layer=e["layer"],
                  tta=e["tta"], method=model.method, progress=progress, grid=e["grid"])
        est.embedder_ = embedder
        est.image_dir_ = record.image_dir
        est._set_model(model)
        return est

    def _embed(self, X):
        from .pipeline import embed_inputs

        check_is_fitted(self, ("model_", "embedder_"))
        paths, features, bad = embed_inputs(_inputs(X), self.embedder_, self.store,
                                            self.image_dir_, progress=self.progress)
        if bad:
            raise UsageError(f"cannot use {bad[0].path!r}: {bad[0].reason}")
        return paths, features

    def transform(self, X):
        """VGG16 features of the images, through the feature store.

        Parameters
        ----------
        X : path-like or list of path-like
            A folder, an image file, or a list of folders and image files.

        Returns
        -------
        ndarray of shape (n_images, n_features)

        Raises
        ------
        UsageError
            If an input cannot be used as an image.
        """
        return self._embed(X)[1]

    def assign(self, X):
        """Cluster, distance to its centre and outlier flag of each image.

        An image is an outlier when it is farther from its cluster's centre
        than 95% of the cluster's own members.

        Parameters
        ----------
        X : path-like or list of path-like
            A folder, an image file, or a list of folders and image files.

        Returns
        -------
        featclust.assign.Assignment
        """
        from .assign import Assignment, assign_features

        paths, features = self._embed(X)
        return Assignment(paths, *assign_features(self.model_, features))

    def predict(self, X):
        """Cluster of each image: the nearest fitted centre.

        Images that were part of the clustering get the cluster they were
        sorted into.

        Parameters
        ----------
        X : path-like or list of path-like
            A folder, an image file, or a list of folders and image files.

        Returns
        -------
        ndarray of shape (n_images,)
        """
        return self.assign(X).labels

    def similar(self, X, top=10):
        """The ``top`` clustered images most similar to each image of ``X``.

        Similarity is the cosine of the VGG16 features (exact search,
        :func:`featclust.search.top_similar`). The queries go through the
        feature store (an image already embedded is not embedded again); an
        image that was clustered finds itself first, with similarity 1.0.

        Parameters
        ----------
        X : path-like or list of path-like
            A folder, an image file, or a list of folders and image files.
        top : int, default 10
            Neighbours per query (at most the number of clustered images).

        Returns
        -------
        featclust.similarity.SimilarImages

        Raises
        ------
        UsageError
            For an invalid ``top`` or an input that cannot be used as an image.

        Notes
        -----
        An estimator made by :meth:`from_output` has no ``features_``: the
        sorted folder's images are then read through the store first (as
        :func:`featclust.embed_folder` does: nothing unchanged is embedded
        again), and set as ``paths_`` and ``features_``.
        """
        from .search import top_similar
        from .similarity import SimilarImages

        check_int("top", top)
        check_is_fitted(self, ("model_", "embedder_"))
        if not hasattr(self, "features_"):
            from .pipeline import embed_folder

            if self.image_dir_ is None:
                raise UsageError("this estimator knows no clustered images: fit it first")
            emb = embed_folder(self.image_dir_, self.embedder_, self.store,
                               progress=self.progress)
            self.paths_, self.features_ = list(emb.paths), emb.features
        queries, features = self._embed(X)
        indices, similarities = top_similar(self.features_, features, top)
        return SimilarImages(queries, [[self.paths_[i] for i in row] for row in indices],
                             indices, similarities)


