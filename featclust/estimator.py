"""A scikit-learn-style estimator over the whole pipeline."""

from __future__ import annotations

import os

import numpy as np

from . import images
from .cluster import FeatureKMeans
from .errors import UsageError
from .pipeline import embed_folder, make_embedder


class ImageClusterer:
    """Cluster the images of a folder by their VGG16 features.

    Parameters
    ----------
    n_clusters : int, default 8
    weights : str, default "imagenet"
        ``"imagenet"``, ``"none"`` (random, seeded) or a weights file path.
    pooling : {"avg", "max", "flatten"}, default "avg"
    pca : int or None, default None
    normalize : bool, default False
    seed : int, default 0
    store : path-like or None, default None
        Feature store root; default under the user's cache folder.
    batch_size : int, default 32
    precision : {"auto", "float32", "bfloat16", "float16"}, default "auto"

    Attributes
    ----------
    paths_ : list of str
        Relative paths of the clustered images.
    features_ : ndarray of shape (n_images, n_features)
    labels_ : ndarray of shape (n_images,)
    cluster_centers_ : ndarray of shape (n_clusters, n_reduced)
    distances_ : ndarray of shape (n_images,)
    model_ : FeatureKMeans
    embed_result_ : featclust.EmbedResult

    Examples
    --------
    >>> est = ImageClusterer(n_clusters=4, weights="none").fit("images/")  # doctest: +SKIP
    >>> est.predict(["images/new.png"])                                     # doctest: +SKIP
    """

    def __init__(self, n_clusters=8, weights="imagenet", pooling="avg", pca=None,
                 normalize=False, seed=0, store=None, batch_size=32, precision="auto"):
        self.n_clusters = n_clusters
        self.weights = weights
        self.pooling = pooling
        self.pca = pca
        self.normalize = normalize
        self.seed = seed
        self.store = store
        self.batch_size = batch_size
        self.precision = precision

    def _embedder(self):
        if getattr(self, "_embedder_", None) is None:
            self._embedder_ = make_embedder(self.weights, self.pooling, self.precision,
                                            self.batch_size, self.seed)
        return self._embedder_

    def fit(self, image_dir, y=None):
        """Embed the folder's images (reusing the store) and cluster them.

        Parameters
        ----------
        image_dir : path-like
        y : ignored

        Returns
        -------
        self
        """
        model = FeatureKMeans(self.n_clusters, pca=self.pca, normalize=self.normalize,
                              seed=self.seed)
        model.check_params()
        self._embedder_ = None
        emb = embed_folder(image_dir, self._embedder(), self.store)
        model.fit(emb.features)
        self.embed_result_ = emb
        self.paths_ = emb.paths
        self.features_ = emb.features
        self.model_ = model
        self.labels_ = model.labels_
        self.cluster_centers_ = model.cluster_centers_
        self.distances_ = model.distances_
        return self

    def transform(self, files):
        """Features of image files (not stored).

        Parameters
        ----------
        files : list of path-like

        Returns
        -------
        ndarray of shape (len(files), n_features)

        Raises
        ------
        UsageError
            If a file cannot be decoded as an image.
        """
        pixels = []
        for path in files:
            st = os.stat(path)
            f = images.ImageFile(str(path), os.path.abspath(path), st.st_size, st.st_mtime_ns)
            try:
                pixels.append(images.load(f)[0])
            except images.BadImageError as e:
                raise UsageError(f"cannot use {str(path)!r}: {e}") from None
        if not pixels:
            return np.zeros((0, self._embedder().dim), np.float32)
        return self._embedder().embed(np.stack(pixels))

    def predict(self, files):
        """Cluster of each image file: the nearest fitted centre.

        Parameters
        ----------
        files : list of path-like

        Returns
        -------
        ndarray of shape (len(files),)
        """
        if not hasattr(self, "model_"):
            raise UsageError("this ImageClusterer is not fitted yet; call fit first")
        return self.model_.predict(self.transform(files))

    def fit_predict(self, image_dir, y=None):
        """Fit and return ``labels_``."""
        return self.fit(image_dir).labels_
