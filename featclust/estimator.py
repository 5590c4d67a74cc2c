"""A scikit-learn estimator over the whole pipeline: image files in, clusters out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.utils.validation import check_is_fitted

from .assign import AssignResult, assign_features, embedder_for
from .checks import check_int
from .cluster import DEFAULTS as CLUSTER_DEFAULTS
from .cluster import FeatureKMeans
from .embed import DEFAULTS as EMBED_DEFAULTS
from .embed import Embedder
from .errors import NoImagesError, UsageError
from .kscan import choose_k
from .output import open_sorted
from .pipeline import EmbedResult, embed_folder, embed_inputs
from .search import top_similar
from .similarity import SimilarResult

#: What ``fit``, ``predict`` ... take: a folder, an image file, or a list of them.
Inputs = str | os.PathLike | Sequence[str | os.PathLike]
_C, _E = CLUSTER_DEFAULTS, EMBED_DEFAULTS


def _inputs(X: Any) -> list:
    """``X`` (a folder, an image path, or a list of them) as a list of paths."""
    if isinstance(X, (str, os.PathLike)):
        return [X]
    if isinstance(X, (list, tuple)) and X and all(isinstance(x, (str, os.PathLike)) for x in X):
        return list(X)
    raise UsageError(
        f"X={X!r} must be a folder, an image file or a non-empty list of folders and image files"
    )


class ImageClusterer(
    ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator
):
    """Cluster images by their VGG16 features.

    :meth:`fit`, :meth:`predict`, :meth:`transform` and :meth:`assign` all
    take ``X`` as a folder (its images, found as ``featclust sort`` finds
    them), one image file, or a list of folders and image files. Features
    go through the feature store, so an image is embedded once.

    The estimator is an :class:`~featclust.embed.Embedder` followed by a
    :class:`~featclust.cluster.FeatureKMeans`: it takes every parameter of
    the two, with their defaults and their checks (see those classes), plus
    ``store`` and ``progress``.

    Parameters
    ----------
    n_clusters : int or "auto", default as FeatureKMeans
        ``"auto"``: the k a scan of 2..30 suggests (see ``kscan_``).
    weights, pooling, precision, batch_size, seed, jit_compile, layer, tta, grid, grid_weight
        The embedding: see :class:`featclust.embed.Embedder` (``seed`` is the
        seed of the random weights of ``weights="none"``).
    pca, whiten, normalize, random_state, n_init, method, fit_sample
        The clustering: see :class:`featclust.cluster.FeatureKMeans`
        (``random_state`` is the clustering's, and the k scan's).
    store : path-like or None, default None
        Feature store root; default under the user's cache folder.
    progress : bool, None or tqdm class, default None
        Progress bars while images are embedded: ``True`` on, ``False`` off,
        ``None`` on where a person watches (a terminal or a notebook), or a
        ``tqdm`` class to draw them with (passed to
        :func:`featclust.embed_folder`).

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

    def __init__(
        self,
        n_clusters: int | str = _C["n_clusters"],
        *,
        weights: str = _E["weights"],
        pooling: str = _E["pooling"],
        precision: str = _E["precision"],
        batch_size: int | None = _E["batch_size"],
        seed: int = _E["seed"],
        jit_compile: bool | None = _E["jit_compile"],
        layer: str = _E["layer"],
        tta: bool = _E["tta"],
        grid: int = _E["grid"],
        grid_weight: float = _E["grid_weight"],
        pca: int | None = _C["pca"],
        whiten: bool = _C["whiten"],
        normalize: bool = _C["normalize"],
        random_state: Any = _C["random_state"],
        n_init: int = _C["n_init"],
        method: str = _C["method"],
        fit_sample: int | None = _C["fit_sample"],
        store: str | os.PathLike | None = None,
        progress: Any = None,
    ) -> None:
        # Every parameter stored as given (the names are the signature's, not a second list).
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, value)

    def _embedder(self) -> Embedder:
        """The :class:`Embedder` of the parameters (checked: a bad value raises)."""
        return Embedder(**{name: getattr(self, name) for name in EMBED_DEFAULTS})

    def _model(self, n_clusters: int) -> FeatureKMeans:
        """The :class:`FeatureKMeans` of the parameters, checked, with ``n_clusters``."""
        params = {name: getattr(self, name) for name in CLUSTER_DEFAULTS}
        model = FeatureKMeans(**{**params, "n_clusters": n_clusters})
        model.check_params()
        return model

    def fit(self, X: Inputs, y: Any = None) -> ImageClusterer:
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
        auto = isinstance(self.n_clusters, str) and self.n_clusters == "auto"
        if not auto:
            check_int("n_clusters", self.n_clusters)
        model = self._model(2 if auto else self.n_clusters)
        inputs = _inputs(X)
        embedder = self._embedder()
        emb: EmbedResult | None = None
        image_dir = None
        if len(inputs) == 1 and os.path.isdir(inputs[0]):
            emb = embed_folder(
                inputs[0], embedder=embedder, store=self.store, progress=self.progress
            )
            paths, features, bad = emb.paths, emb.features, emb.bad_files
            image_dir = os.path.abspath(inputs[0])
        else:
            found = embed_inputs(
                inputs, embedder=embedder, store=self.store, progress=self.progress
            )
            paths, features, bad = found.paths, found.features, found.bad_files
            if not paths:
                raise NoImagesError(
                    "none of the inputs is a usable image"
                    + (f" ({bad[0].path}: {bad[0].reason})" if bad else "")
                )
        kscan = None
        if auto:
            kscan = choose_k(
                features,
                pca=self.pca,
                normalize=self.normalize,
                random_state=self.random_state,
                fit_sample=self.fit_sample,
            )
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

    def _set_model(self, model: FeatureKMeans) -> None:
        self.model_ = model
        self.cluster_centers_ = model.cluster_centers_

    def fit_transform(self, X: Inputs, y: Any = None) -> np.ndarray:
        """Fit and return ``features_``."""
        return self.fit(X).features_

    @property
    def _n_features_out(self) -> int:
        """Length of the feature vectors :meth:`transform` returns (for
        :meth:`get_feature_names_out`)."""
        check_is_fitted(self, "embedder_")
        return self.embedder_.dim

    @classmethod
    def from_output(
        cls,
        out_dir: str | os.PathLike,
        *,
        store: str | os.PathLike | None = None,
        progress: Any = None,
    ) -> ImageClusterer:
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
            With the parameters of the saved embedder and model, and
            ``model_``, ``embedder_``, ``cluster_centers_`` and ``image_dir_``
            set, ready for :meth:`predict`, :meth:`transform`, :meth:`assign`
            and :meth:`similar` (the clustered images' ``labels_`` are in the
            folder's ``labels.csv``).

        Raises
        ------
        UsageError, OutputFormatError
            If ``out_dir`` holds no complete sort of a known format.
        ModelMismatchError
            If the model cannot be used with the embedder it was made with
            (its weights file changed, say).
        """
        sorted_folder = open_sorted(out_dir)
        record, model = sorted_folder.record, sorted_folder.model
        embedder = embedder_for(sorted_folder)
        est = cls(
            **embedder.get_params(),
            **model.get_params(),
            store=store if store is not None else record.store_root,
            progress=progress,
        )
        est.embedder_ = embedder
        est.image_dir_ = record.image_dir
        est._set_model(model)
        return est

    def _embed(self, X: Inputs) -> tuple[list, np.ndarray]:
        check_is_fitted(self, ("model_", "embedder_"))
        found = embed_inputs(
            _inputs(X),
            embedder=self.embedder_,
            store=self.store,
            image_dir=self.image_dir_,
            progress=self.progress,
        )
        if found.bad_files:
            bad = found.bad_files[0]
            raise UsageError(f"cannot use {bad.path!r}: {bad.reason}")
        return found.paths, found.features

    def transform(self, X: Inputs) -> np.ndarray:
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

    def assign(self, X: Inputs) -> AssignResult:
        """Cluster, distance to its centre and outlier flag of each image.

        An image is an outlier when it is farther from its cluster's centre
        than 95% of the cluster's own members.

        Parameters
        ----------
        X : path-like or list of path-like
            A folder, an image file, or a list of folders and image files.

        Returns
        -------
        featclust.assign.AssignResult
        """
        paths, features = self._embed(X)
        return AssignResult(paths, *assign_features(self.model_, features))

    def predict(self, X: Inputs) -> np.ndarray:
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

    def similar(self, X: Inputs, top: int = 10) -> SimilarResult:
        """The ``top`` clustered images most similar to each image of ``X``.

        Similarity is the cosine of the VGG16 features (exact search,
        :func:`featclust.search.top_similar`). The queries go through the
        feature store (an image already embedded is not embedded again); an
        image that was clustered finds itself first, with similarity 1.0.
        The estimator is left as it is.

        Parameters
        ----------
        X : path-like or list of path-like
            A folder, an image file, or a list of folders and image files.
        top : int, default 10
            Neighbours per query (at most the number of clustered images).

        Returns
        -------
        featclust.similarity.SimilarResult

        Raises
        ------
        UsageError
            For an invalid ``top`` or an input that cannot be used as an image.

        Notes
        -----
        An estimator made by :meth:`from_output` has no ``features_``: the
        sorted folder's images are then read through the store on each call
        (as :func:`featclust.embed_folder` does: nothing unchanged is
        embedded again).
        """
        check_int("top", top)
        check_is_fitted(self, ("model_", "embedder_"))
        if hasattr(self, "features_"):
            paths, features = self.paths_, self.features_
        elif self.image_dir_ is None:
            raise UsageError("this estimator knows no clustered images: fit it first")
        else:
            emb = embed_folder(
                self.image_dir_, embedder=self.embedder_, store=self.store, progress=self.progress
            )
            paths, features = list(emb.paths), emb.features
        queries, query_features = self._embed(X)
        indices, similarities = top_similar(features, query_features, top)
        return SimilarResult(
            queries, [[paths[i] for i in row] for row in indices], indices, similarities
        )
