"""A scikit-learn-style estimator over the whole pipeline."""

from __future__ import annotations

import os

from .assign import Assignment, assign_features, embed_paths, embedder_for, load_output
from .cluster import FeatureKMeans
from .errors import UsageError
from .kscan import choose_k
from .pipeline import embed_folder, make_embedder


class ImageClusterer:
    """Cluster the images of a folder by their VGG16 features.

    Parameters
    ----------
    n_clusters : int or "auto", default 8
        ``"auto"``: the k a scan of 2..30 suggests (see ``kscan_``).
    weights : str, default "imagenet"
        ``"imagenet"``, ``"none"`` (random, seeded) or a weights file path.
    pooling : {"avg", "max", "gem", "flatten"}, default "max"
    pca : int or None, default None
    normalize : bool, default False
    seed : int, default 0
    store : path-like or None, default None
        Feature store root; default under the user's cache folder.
    batch_size : int or None, default None
        Images per forward pass; ``None`` is 16 on a CPU and 256 on a GPU.
    precision : {"auto", "float32", "bfloat16", "float16"}, default "auto"
    layer : {"block3", "block4", "block5"}, default "block4"
        The VGG16 block whose output is pooled.
    tta : bool, default False
        Average the features of the 8 flips and 90-degree rotations.

    Attributes
    ----------
    paths_ : list of str
        Relative paths of the clustered images.
    features_ : ndarray of shape (n_images, n_features)
    labels_ : ndarray of shape (n_images,)
    cluster_centers_ : ndarray of shape (n_clusters, n_reduced)
    distances_ : ndarray of shape (n_images,)
    model_ : FeatureKMeans
    kscan_ : featclust.kscan.KScan or None
        The scan that chose k (with ``n_clusters="auto"``).
    image_dir_ : str
        The clustered folder.
    embed_result_ : featclust.EmbedResult

    Examples
    --------
    >>> est = ImageClusterer(n_clusters=4, weights="none").fit("images/")  # doctest: +SKIP
    >>> est.predict(["images/new.png"])                                     # doctest: +SKIP
    """

    def __init__(self, n_clusters=8, weights="imagenet", pooling="max", pca=None,
                 normalize=False, seed=0, store=None, batch_size=None, precision="auto",
                 layer="block4", tta=False):
        self.n_clusters = n_clusters
        self.weights = weights
        self.pooling = pooling
        self.pca = pca
        self.normalize = normalize
        self.seed = seed
        self.store = store
        self.batch_size = batch_size
        self.precision = precision
        self.layer = layer
        self.tta = tta

    def _embedder(self):
        if getattr(self, "_embedder_", None) is None:
            self._embedder_ = make_embedder(self.weights, self.pooling, self.precision,
                                            self.batch_size, self.seed, layer=self.layer,
                                            tta=self.tta)
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
        auto = isinstance(self.n_clusters, str) and self.n_clusters == "auto"
        model = FeatureKMeans(2 if auto else self.n_clusters, pca=self.pca,
                              normalize=self.normalize, seed=self.seed)
        model.check_params()
        self._embedder_ = None
        emb = embed_folder(image_dir, self._embedder(), self.store)
        self.kscan_ = None
        if auto:
            self.kscan_ = choose_k(emb.features, pca=self.pca, normalize=self.normalize,
                                   seed=self.seed)
            model.n_clusters = self.kscan_.suggested_k_
        model.fit(emb.features)
        self.image_dir_ = os.path.abspath(image_dir)
        self.embed_result_ = emb
        self.paths_ = emb.paths
        self.features_ = emb.features
        self.model_ = model
        self.labels_ = model.labels_
        self.cluster_centers_ = model.cluster_centers_
        self.distances_ = model.distances_
        return self

    @classmethod
    def from_output(cls, out_dir, store=None):
        """The fitted estimator saved by ``sort`` in an output folder.

        Parameters
        ----------
        out_dir : path-like
            A folder written by :func:`featclust.sort_folder` (``featclust sort``).
        store : path-like, optional
            Store root; default the one the sort used.

        Returns
        -------
        ImageClusterer
            With ``model_``, ``cluster_centers_`` and ``image_dir_`` set, ready
            for :meth:`predict` and :meth:`assign`.

        Raises
        ------
        ModelMismatchError
            If the model cannot be read or its weights file changed.
        """
        saved = load_output(out_dir)
        e, model = saved.info["embedder"], saved.model
        est = cls(n_clusters=model.n_clusters, weights=e["weights"], pooling=e["pooling"],
                  pca=model.pca, normalize=model.normalize, seed=model.seed,
                  store=store if store is not None else saved.store_root,
                  batch_size=e["batch_size"], precision=saved.info["feature_settings"]["precision"],
                  layer=e.get("layer", "block5"), tta=e.get("tta", False))
        est._embedder_ = embedder_for(saved)
        est.model_ = model
        est.cluster_centers_ = model.cluster_centers_
        est.image_dir_ = saved.image_dir
        return est

    def transform(self, files):
        """Features of image files, through the feature store (so they are cached).

        Parameters
        ----------
        files : list of path-like
            Image files; a folder stands for the images in it.

        Returns
        -------
        ndarray of shape (n_images, n_features)

        Raises
        ------
        UsageError
            If a file cannot be used as an image.
        """
        return self._embed(files)[1]

    def _embed(self, files):
        paths, feats, bad = embed_paths(files, self._embedder(), self.store,
                                        getattr(self, "image_dir_", None))
        if bad:
            raise UsageError(f"cannot use {bad[0].path!r}: {bad[0].reason}")
        return paths, feats

    def assign(self, files):
        """Cluster, distance to its centre and outlier flag of each image.

        An image is an outlier when it is farther from its cluster's centre
        than 95% of the cluster's own members.

        Parameters
        ----------
        files : list of path-like
            Image files; a folder stands for the images in it.

        Returns
        -------
        featclust.assign.Assignment
        """
        if not hasattr(self, "model_"):
            raise UsageError("this ImageClusterer is not fitted yet; call fit first")
        paths, feats = self._embed(files)
        return Assignment(paths, *assign_features(self.model_, feats))

    def predict(self, files):
        """Cluster of each image: the nearest fitted centre.

        Images that were part of the clustering get the cluster they were
        sorted into.

        Parameters
        ----------
        files : list of path-like
            Image files; a folder stands for the images in it.

        Returns
        -------
        ndarray of shape (n_images,)
        """
        return self.assign(files).labels

    def fit_predict(self, image_dir, y=None):
        """Fit and return ``labels_``."""
        return self.fit(image_dir).labels_
