"""k-means on feature vectors, with optional PCA and L2 normalisation.

No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

import json

import numpy as np

from .errors import ModelMismatchError, UsageError

MODEL_FORMAT = 1


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
        Number of PCA components; ``None`` keeps the features as they are.
    whiten : bool, default False
        Whiten the PCA components.
    normalize : bool, default False
        L2-normalise the vectors before and after PCA.
    seed : int, default 0
        Random state of PCA and k-means.
    n_init : int, default 4
        k-means restarts; the best inertia wins.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    cluster_centers_ : ndarray of shape (n_clusters, n_reduced)
        Centres in the reduced (and normalised) space.
    distances_ : ndarray of shape (n_samples,)
        Euclidean distance of each sample to its centre, in that space.
    inertia_ : float
    n_features_in_ : int
    pca_mean_, pca_components_, pca_scale_ : ndarray or None
        The fitted projection (``None`` without PCA).
    """

    def __init__(self, n_clusters=8, pca=None, whiten=False, normalize=False, seed=0,
                 n_init=4):
        self.n_clusters = n_clusters
        self.pca = pca
        self.whiten = whiten
        self.normalize = normalize
        self.seed = seed
        self.n_init = n_init

    def check_params(self):
        """Validate the parameters that do not depend on the data.

        Raises
        ------
        UsageError
            Naming the parameter and the value received.
        """
        k = self.n_clusters
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise UsageError(f"n_clusters={k!r} must be a positive integer")
        if self.pca is not None:
            if not isinstance(self.pca, (int, np.integer)) or isinstance(self.pca, bool) \
                    or self.pca < 1:
                raise UsageError(f"pca={self.pca!r} must be a positive integer or None")
        if not isinstance(self.n_init, (int, np.integer)) or self.n_init < 1:
            raise UsageError(f"n_init={self.n_init!r} must be a positive integer")

    def _validate(self, X):
        self.check_params()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise UsageError(f"features must be a 2-D array, got shape {X.shape}")
        n, d = X.shape
        k = self.n_clusters
        if k > n:
            raise UsageError(f"n_clusters={k} is larger than the number of images ({n})")
        if self.pca is not None:
            if self.pca > min(n, d):
                raise UsageError(f"pca={self.pca} is larger than min(number of images, "
                                 f"feature length) = {min(n, d)}")
        if not np.isfinite(X).all():
            raise UsageError("features contain NaN or infinite values")
        return X

    def fit(self, X):
        """Fit PCA (if asked) and k-means.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        self
        """
        from sklearn.cluster import KMeans
        from sklearn.decomposition import PCA

        X = self._validate(X)
        self.n_features_in_ = X.shape[1]
        self.pca_mean_ = self.pca_components_ = self.pca_scale_ = None
        Z = _l2(X) if self.normalize else X
        if self.pca is not None:
            pca = PCA(n_components=self.pca, whiten=self.whiten, random_state=self.seed)
            pca.fit(Z)
            self.pca_mean_ = pca.mean_.astype(np.float32)
            self.pca_components_ = pca.components_.astype(np.float32)
            scale = np.sqrt(pca.explained_variance_) if self.whiten else np.ones(self.pca)
            self.pca_scale_ = np.where(scale > 0, scale, 1.0).astype(np.float32)
        Z = self.reduce(X)
        km = KMeans(n_clusters=self.n_clusters, n_init=self.n_init, random_state=self.seed)
        labels = km.fit_predict(Z)
        order = np.argsort(-np.bincount(labels, minlength=self.n_clusters), kind="stable")
        self.cluster_centers_ = km.cluster_centers_[order].astype(np.float32)
        self.labels_, self.distances_ = self._nearest(Z)
        self.inertia_ = float(np.sum(self.distances_ ** 2))
        return self

    def reduce(self, X):
        """Map features into the space the centres live in."""
        Z = np.asarray(X, dtype=np.float32)
        if self.normalize:
            Z = _l2(Z)
        if self.pca_components_ is not None:
            Z = ((Z - self.pca_mean_) @ self.pca_components_.T) / self.pca_scale_
            if self.normalize:
                Z = _l2(Z)
        return Z

    def _nearest(self, Z):
        d2 = (np.sum(Z ** 2, axis=1)[:, None] - 2 * Z @ self.cluster_centers_.T
              + np.sum(self.cluster_centers_ ** 2, axis=1)[None, :])
        labels = np.argmin(d2, axis=1)
        dist = np.sqrt(np.maximum(d2[np.arange(len(Z)), labels], 0.0))
        return labels.astype(np.int64), dist.astype(np.float32)

    def predict(self, X):
        """Index of the nearest centre of each feature vector."""
        return self.predict_with_distance(X)[0]

    def predict_with_distance(self, X):
        """Nearest centre and the distance to it, for each feature vector."""
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
                ("n_clusters", "pca", "whiten", "normalize", "seed", "n_init")}

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
        arrays = {"cluster_centers": self.cluster_centers_,
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
                pca = "pca_components" in data
                model.pca_mean_ = data["pca_mean"] if pca else None
                model.pca_components_ = data["pca_components"] if pca else None
                model.pca_scale_ = data["pca_scale"] if pca else None
        except (OSError, ValueError, KeyError) as e:
            raise ModelMismatchError(f"cannot read model file {str(path)!r}: {e}") from None
        return model, meta["extra"]


def _l2(X):
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)
