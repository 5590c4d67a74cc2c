"""scikit-learn conventions of the array estimators, and each result computed once.

Feature names for ``set_output``, ``random_state`` as scikit-learn accepts it,
the k scan's labels as one array, the fit's reduced rows reused by the
scores, and the one outlier rule.
"""

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from featclust import FeatureKMeans, KScan, UsageError, labelling, scores
from featclust.assign import assign_features
from featclust.cluster import slim
from featclust.flags import cluster_table
from featclust.reduce import Reducer


def blobs(n=300, dim=16, groups=3, seed=0):
    X, y = make_blobs(n_samples=n, n_features=dim, centers=groups, random_state=seed)
    return X.astype(np.float32), y


# -- feature names and set_output ----------------------------------------------------------


def test_feature_kmeans_names_its_distance_columns_and_set_output_works():
    X, _ = blobs()
    model = FeatureKMeans(3, pca=4).fit(X)
    assert list(model.get_feature_names_out()) == [f"featurekmeans{i}" for i in range(3)]
    assert model.set_output(transform="default") is model
    out = model.transform(X)
    assert isinstance(out, np.ndarray) and out.shape == (len(X), 3)
    assert isinstance(model.fit_transform(X), np.ndarray)


@pytest.mark.parametrize("pca, width", [(5, 5), (None, 16)])
def test_reducer_names_its_output_columns(pca, width):
    X, _ = blobs()
    reducer = Reducer(pca=pca).set_output(transform="default").fit(X)
    assert list(reducer.get_feature_names_out()) == [f"reducer{i}" for i in range(width)]
    assert reducer.transform(X).shape == (len(X), width)


def test_feature_names_need_a_fit():
    from sklearn.exceptions import NotFittedError

    for est in (FeatureKMeans(3), Reducer(pca=2)):
        with pytest.raises(NotFittedError):
            est.get_feature_names_out()


# -- random_state ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls, params",
    [(FeatureKMeans, {"n_clusters": 3}), (KScan, {"ks": [2, 3]}), (Reducer, {"pca": 3})],
)
def test_random_state_takes_none_int_and_random_state_instances(cls, params):
    X, _ = blobs()
    for random_state in (None, 5, np.random.RandomState(1)):
        est = cls(random_state=random_state, **params).fit(X)
        assert est.get_params()["random_state"] is random_state  # stored as given
    with pytest.raises(UsageError, match="random_state=Generator"):
        cls(random_state=np.random.default_rng(0), **params).fit(X)
    with pytest.raises(UsageError, match="random_state=-1"):
        cls(random_state=-1, **params).fit(X)


def test_a_random_state_instance_seeds_the_fit_as_an_int_would():
    X, _ = blobs(groups=4)
    seed = np.random.RandomState(3).randint(0, 2**32 - 1, dtype=np.int64)
    drawn = FeatureKMeans(4, random_state=np.random.RandomState(3)).fit(X)
    fixed = FeatureKMeans(4, random_state=int(seed)).fit(X)
    assert drawn.seed_ == fixed.seed_ == seed
    np.testing.assert_array_equal(drawn.labels_, fixed.labels_)
    np.testing.assert_array_equal(drawn.cluster_centers_, fixed.cluster_centers_)


def test_saved_random_state_is_an_int_or_none(tmp_path):
    X, _ = blobs()
    for random_state in (None, 4, np.random.RandomState(2)):
        model = FeatureKMeans(3, random_state=random_state).fit(X)
        model.save(tmp_path / "model.npz")
        loaded, _ = FeatureKMeans.load(tmp_path / "model.npz")
        expected = None if random_state is None else model.seed_
        assert loaded.random_state == expected
        np.testing.assert_array_equal(loaded.predict(X), model.labels_)


# -- the k scan's labels --------------------------------------------------------------------


def test_scan_labels_are_one_row_per_scanned_k():
    X, y = blobs(groups=4)
    scan = KScan(ks=range(2, 7)).fit(X)
    assert not hasattr(scan, "labels_")
    assert scan.scan_labels_.shape == (len(scan.ks_), len(X))
    assert scan.scan_labels_.dtype == np.int64
    assert list(scan.scores_["k"]) == scan.ks_
    for k, labels in zip(scan.ks_, scan.scan_labels_):
        assert len(np.unique(labels)) == k
    assert adjusted_rand_score(y, scan.scan_labels_[scan.ks_.index(4)]) > 0.99


# -- the reduced rows, computed once ----------------------------------------------------------


@pytest.mark.parametrize("fit_sample", [None, 100])
def test_fit_keeps_the_reduced_rows(fit_sample):
    X, _ = blobs()
    model = FeatureKMeans(3, pca=4, fit_sample=fit_sample).fit(X)
    assert model.reduced_.dtype == np.float32
    assert model.reduced_.shape == (len(X), model.cluster_centers_.shape[1])
    np.testing.assert_allclose(model.reduced_, model.reduce(X), atol=1e-6)
    assert not hasattr(slim(model), "reduced_")


def test_a_labeller_fit_keeps_the_reduced_rows_too():
    X, _ = blobs()
    model = FeatureKMeans(3, pca=4, fit_sample=100).fit(X, labeller=labelling.label_rows)
    np.testing.assert_allclose(model.reduced_, model.reduce(X), atol=1e-6)


def test_without_pca_large_reduced_rows_are_not_kept(monkeypatch):
    # Without PCA the reduced rows are X itself (normalised): beyond the
    # in-memory budget the fit does not keep a second copy of it.
    from featclust import reduce

    X, _ = blobs()
    small = FeatureKMeans(3, pca=None).fit(X)
    assert small.reduced_.shape == X.shape
    monkeypatch.setattr(reduce, "MAX_IN_MEMORY_BYTES", X.nbytes - 1)
    for fit_sample in (None, 100):
        model = FeatureKMeans(3, pca=None, fit_sample=fit_sample).fit(X)
        assert model.reduced_ is None
        assert adjusted_rand_score(model.labels_, small.labels_) == 1.0
        judged = scores.judge(model, X)  # reduces the rows again
        assert judged.scores["inertia"] == pytest.approx(
            scores.judge(small, X).scores["inertia"], rel=1e-5
        )


def _count_reductions(monkeypatch):
    calls = []
    original = Reducer._transform_block

    def counted(self, Z):
        calls.append(len(Z))
        return original(self, Z)

    monkeypatch.setattr(Reducer, "_transform_block", counted)
    return calls


@pytest.mark.parametrize("in_memory_bytes", [None, 1024])
def test_judge_does_not_reduce_the_features_again(monkeypatch, in_memory_bytes):
    X, _ = blobs()
    if in_memory_bytes:  # the path of a matrix larger than memory's budget
        monkeypatch.setattr(scores, "MAX_IN_MEMORY_BYTES", in_memory_bytes)
    model = FeatureKMeans(3, pca=4).fit(X)
    calls = _count_reductions(monkeypatch)
    judged = scores.judge(model, X)
    assert calls == []
    del model.reduced_  # without it the rows are reduced again, to the same scores
    again = scores.judge(model, X)
    assert sum(calls) >= len(X)
    for key, value in judged.scores.items():
        assert again.scores[key] == pytest.approx(value, rel=1e-5, nan_ok=True), key


# -- the outlier rule ----------------------------------------------------------------------


def test_one_outlier_rule_everywhere():
    X, _ = blobs(n=400)
    model = FeatureKMeans(3, pca=4).fit(X)
    expected = np.array(
        [np.percentile(model.distances_[model.labels_ == c], 95) for c in range(3)],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(model.thresholds_, expected)
    flags = model.outliers(model.labels_, model.distances_)
    np.testing.assert_array_equal(flags, model.distances_ > model.thresholds_[model.labels_])
    assert 0 < flags.sum() <= 0.06 * len(X)
    # assigning the fitted rows again flags the same images
    np.testing.assert_array_equal(assign_features(model, X)[2], flags)
    # clusters.csv's p95 column is the same threshold
    table = cluster_table(model.labels_, model.distances_, 3)
    np.testing.assert_allclose([r["p95_distance"] for r in table], model.thresholds_, rtol=1e-6)
