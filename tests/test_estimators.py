"""The three estimators are scikit-learn estimators: clone, parameters, checks, fitting state.

(``ImageClusterer`` fed a folder, one path and a list needs the embedding
pipeline; that test is in tests/test_pipeline.py.)
"""

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import check_estimator
from sklearn.utils.validation import check_is_fitted

from featclust import FeatureKMeans, ImageClusterer, KScan, UsageError
from featclust.reduce import Reducer

NON_DEFAULT = {
    FeatureKMeans: {
        "n_clusters": 3,
        "pca": 5,
        "whiten": True,
        "normalize": True,
        "random_state": 7,
        "n_init": 2,
        "method": "ward",
    },
    KScan: {
        "ks": [2, 3, 5],
        "pca": 4,
        "normalize": True,
        "random_state": 3,
        "n_runs": 4,
        "n_init": 2,
        "sample_size": 500,
        "fit_size": 300,
        "fit_dims": 8,
        "min_stability": 0.5,
    },
    ImageClusterer: {
        "n_clusters": "auto",
        "weights": "none",
        "pooling": "gem",
        "pca": 16,
        "normalize": True,
        "random_state": 5,
        "store": "/tmp/store",
        "batch_size": 4,
        "precision": "float32",
        "layer": "block5",
        "tta": True,
        "method": "ward",
        "progress": False,
    },
    Reducer: {"pca": 3, "whiten": True, "normalize": True, "random_state": 2},
}


def blobs(n=120, dim=8, groups=3, seed=0):
    X, y = make_blobs(n_samples=n, n_features=dim, centers=groups, random_state=seed)
    return X.astype(np.float32), y


@pytest.mark.parametrize("cls", list(NON_DEFAULT), ids=lambda c: c.__name__)
def test_clone_and_params_round_trip(cls):
    params = NON_DEFAULT[cls]
    est = cls(**params)
    assert {k: est.get_params()[k] for k in params} == params
    copy = clone(est)
    assert copy is not est and copy.get_params() == est.get_params()
    default = cls()
    assert default.set_params(**params) is default
    assert default.get_params() == est.get_params()
    assert cls.__name__ in repr(est) and repr(cls()) == f"{cls.__name__}()"
    # parameters are stored unchanged; nothing else is set before fit
    assert vars(cls()) == cls().get_params()


def test_feature_kmeans_passes_check_estimator():
    # Every check holds: expected_failed_checks is empty on purpose.
    failed = [r for r in check_estimator(FeatureKMeans(), on_fail=None) if r["status"] == "failed"]
    assert not failed, [(r["check_name"], str(r["exception"])[:300]) for r in failed]


def test_reducer_passes_check_estimator():
    failed = [r for r in check_estimator(Reducer(), on_fail=None) if r["status"] == "failed"]
    assert not failed, [(r["check_name"], str(r["exception"])[:300]) for r in failed]


@pytest.mark.parametrize(
    "cls", [FeatureKMeans, KScan, ImageClusterer, Reducer], ids=lambda c: c.__name__
)
def test_not_fitted_before_fit(cls):
    with pytest.raises(NotFittedError):
        check_is_fitted(cls())


def test_unfitted_methods_raise_not_fitted_error():
    X, _ = blobs()
    for method in ("predict", "predict_with_distance", "transform", "reduce"):
        with pytest.raises(NotFittedError):
            getattr(FeatureKMeans(3), method)(X)
    with pytest.raises(NotFittedError):
        FeatureKMeans(3).save("never.npz")
    with pytest.raises(NotFittedError):
        Reducer().transform(X)
    for method in ("predict", "transform", "assign"):
        # before anything is embedded: the path need not exist
        with pytest.raises(NotFittedError):
            getattr(ImageClusterer(), method)("no/such/image.png")


def test_transform_gives_distances_to_every_centre():
    X, _ = blobs()
    model = FeatureKMeans(3, pca=4, normalize=True).fit(X)
    D = model.transform(X)
    assert D.shape == (len(X), 3) and D.dtype == np.float32
    np.testing.assert_array_equal(np.argmin(D, axis=1), model.labels_)
    Z = model.reduce(X)
    np.testing.assert_allclose(
        D, np.linalg.norm(Z[:, None] - model.cluster_centers_[None], axis=2), rtol=1e-4, atol=1e-5
    )
    # distances_ are measured before the PCA, to the members' mean there.
    F = model.reducer_.prepare(X)
    np.testing.assert_allclose(
        model.distances_,
        np.linalg.norm(F - model.feature_centers_[model.labels_], axis=1),
        rtol=1e-4,
        atol=1e-5,
    )
    no_pca = FeatureKMeans(3, pca=None, normalize=True).fit(X)
    assert no_pca.feature_centers_ is None
    D = no_pca.transform(X)
    np.testing.assert_allclose(
        D[np.arange(len(X)), no_pca.labels_], no_pca.distances_, rtol=1e-5, atol=1e-6
    )
    assert model.reducer_.n_components_ == model.n_components_ == 4
    np.testing.assert_array_equal(model.fit_predict(X), model.labels_)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"random_state": -1}, "random_state=-1"),
        ({"random_state": "0"}, "random_state='0'"),
        ({"normalize": "yes"}, "normalize='yes'"),
        ({"whiten": 1}, "whiten=1"),
        ({"n_init": 0}, "n_init=0"),
        ({"method": "single"}, "method='single'"),
    ],
)
def test_feature_kmeans_checks_parameters_in_fit(params, message):
    est = FeatureKMeans(2, **params)  # stored as given
    assert est.get_params()[next(iter(params))] is params[next(iter(params))]
    with pytest.raises(UsageError, match=message):
        est.fit(blobs()[0])


def test_feature_kmeans_rejects_bad_features_with_usage_error():
    X, _ = blobs()
    model = FeatureKMeans(3).fit(X)
    with pytest.raises(UsageError, match="X has 7 features, but FeatureKMeans is expecting 8"):
        model.predict(X[:, :7])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(UsageError, match="NaN"):
        FeatureKMeans(3).fit(bad)
    with pytest.raises(UsageError, match="1 sample"):
        FeatureKMeans(3).fit(X[:1])


def test_kscan_scores_are_a_table_of_equal_length_arrays():
    X, _ = blobs(groups=3)
    scan = KScan(ks=range(2, 6), random_state=1).fit(X)
    assert list(scan.scores_) == [
        "k",
        "inertia",
        "silhouette",
        "davies_bouldin",
        "calinski_harabasz",
        "stability",
    ]
    assert all(
        isinstance(v, np.ndarray) and v.ndim == 1 and len(v) == len(scan.ks_)
        for v in scan.scores_.values()
    )
    table = np.rec.fromarrays(list(scan.scores_.values()), names=list(scan.scores_))
    assert list(table.k) == scan.ks_ == [2, 3, 4, 5]
    assert table.silhouette[table.k == scan.suggested_k_][0] == table.silhouette.max()
    assert scan.n_features_in_ == X.shape[1]
    again = clone(scan).fit(X)
    for name, values in scan.scores_.items():
        np.testing.assert_array_equal(values, again.scores_[name])


def test_feature_kmeans_reads_old_model_files_with_seed(tmp_path):
    X, _ = blobs()
    model = FeatureKMeans(3, pca=4, random_state=5).fit(X)
    path = tmp_path / "new.npz"
    model.save(path, extra={"x": 1})
    with np.load(path) as data:
        arrays = dict(data)
    meta = json.loads(bytes(arrays["meta"]).decode())
    assert meta["params"]["random_state"] == 5
    meta["params"]["seed"] = meta["params"].pop("random_state")  # as before the redesign
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    loaded, extra = FeatureKMeans.load(tmp_path / "old.npz")
    assert extra == {"x": 1}
    assert loaded.get_params() == model.get_params()
    check_is_fitted(loaded)
    assert loaded.reducer_.n_components_ == loaded.n_components_ == 4
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)
    np.testing.assert_allclose(loaded.transform(X), model.transform(X), rtol=1e-6)
    np.testing.assert_array_equal(loaded.thresholds_, model.thresholds_)
