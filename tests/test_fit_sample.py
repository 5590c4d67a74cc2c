"""Clustering at scale: fit on a sample of rows, label every row block by block.

FeatureKMeans(fit_sample=...), KScan(fit_sample=...), cluster.label_block /
label_rows / slim, and bounded-memory scores (fake features, no model).
"""

import pickle
import tracemalloc

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import check_estimator

from featclust import FeatureKMeans, KScan, UsageError, cluster, reduce, scores


def planted(n, d=32, k=5, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (k, d)).astype(np.float32)
    truth = rng.integers(0, k, n)
    return centers[truth] + rng.normal(0, noise, (n, d)).astype(np.float32), truth


def memmap(tmp_path, X, name="X.f32"):
    path = tmp_path / name
    X.tofile(path)
    return np.memmap(path, np.float32, "r", shape=X.shape)


FITTED = ("labels_", "distances_", "cluster_centers_", "thresholds_")


@pytest.mark.parametrize(
    "params", [{}, {"pca": 6, "normalize": True, "whiten": True}, {"method": "ward"}]
)
def test_sample_of_all_rows_gives_todays_labels(params):
    X, _ = planted(700)
    full = FeatureKMeans(n_clusters=5, fit_sample=None, **params).fit(X)
    for fit_sample in (700, 5000):
        model = FeatureKMeans(n_clusters=5, fit_sample=fit_sample, **params).fit(X)
        for name in FITTED:
            np.testing.assert_array_equal(getattr(model, name), getattr(full, name))
        assert model.inertia_ == full.inertia_
    # The default (100,000 rows) covers this matrix whole.
    default = FeatureKMeans(n_clusters=5, **params).fit(X)
    np.testing.assert_array_equal(default.labels_, full.labels_)
    # Labelling every row again, block by block, gives the fit's own labels.
    labels, distances = cluster.label_rows(full, X)
    np.testing.assert_array_equal(labels, full.labels_)
    np.testing.assert_allclose(distances, full.distances_, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("params", [{}, {"pca": 8, "normalize": True}, {"method": "ward"}])
def test_sampled_fit_agrees_with_full_fit(tmp_path, monkeypatch, params):
    monkeypatch.setattr(reduce, "BLOCK_BYTES", 64 << 10)  # 512 rows a block
    monkeypatch.setattr(cluster, "MAX_WARD_IMAGES", 1500)
    X, truth = planted(6000)
    X = memmap(tmp_path, X)
    full_params = {**params, "fit_sample": None}
    if params.get("method") == "ward":  # Ward cannot take all 6,000 rows: only the sample
        with pytest.raises(UsageError, match="fit_sample <= 1500"):
            FeatureKMeans(n_clusters=5, **full_params).fit(X)
        full_params["method"] = "kmeans"
    full = FeatureKMeans(n_clusters=5, **full_params).fit(X)
    model = FeatureKMeans(n_clusters=5, fit_sample=1000, **params).fit(X)
    assert model.labels_.shape == model.distances_.shape == (6000,)
    assert adjusted_rand_score(full.labels_, model.labels_) >= 0.99
    assert adjusted_rand_score(truth, model.labels_) >= 0.99
    np.testing.assert_array_equal(model.predict(X[:300]), model.labels_[:300])
    assert np.isclose(model.inertia_, np.sum(model.distances_**2), rtol=1e-5)
    assert model.thresholds_.shape == (5,) and np.all(model.thresholds_ > 0)
    # The same seed draws the same sample.
    again = FeatureKMeans(n_clusters=5, fit_sample=1000, **params).fit(X)
    np.testing.assert_array_equal(again.labels_, model.labels_)


def _fit_peak(tmp_path, n):
    X, _ = planted(n, d=128, k=4, seed=1)
    X = memmap(tmp_path, X, f"X{n}.f32")
    import sklearn.cluster  # noqa: F401  (imports are not the fit's memory)

    tracemalloc.start()
    try:
        model = FeatureKMeans(n_clusters=4, fit_sample=1500, n_init=1).fit(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert model.labels_.shape == (n,)
    return peak, X.nbytes


def test_memory_stays_flat_in_rows_for_a_memory_mapped_matrix(tmp_path, monkeypatch):
    monkeypatch.setattr(reduce, "BLOCK_BYTES", 256 << 10)  # 512 rows of 128 floats
    small, _ = _fit_peak(tmp_path, 8000)
    large, nbytes = _fit_peak(tmp_path, 40000)  # 20 MB: 80 blocks
    # Beyond the per-row labels and distances (12 bytes a row) and the reduced
    # rows kept as reduced_ (32 components: 128 bytes a row), the peak does not
    # grow with the rows; a copy of the matrix would add 16 MB.
    per_row = (12 + 4 * 32) * (40000 - 8000)
    assert large - small < per_row + (1 << 20), (small, large)
    assert large - 40000 * 32 * 4 < nbytes / 4, (large, nbytes)  # less reduced_: no copy


def test_memory_flat_with_blockwise_pca_on_the_sample(tmp_path, monkeypatch):
    # Long features: the sample itself is over the in-memory budget, so the
    # PCA is fitted block by block on the sampled rows, never gathered whole.
    monkeypatch.setattr(reduce, "AUTO_PCA_MIN_FEATURES", 256)
    monkeypatch.setattr(reduce, "AUTO_PCA", 8)
    monkeypatch.setattr(reduce, "MAX_IN_MEMORY_BYTES", 256 << 10)
    monkeypatch.setattr(reduce, "BLOCK_BYTES", 64 << 10)
    X, truth = planted(4000, d=300, k=4)
    X = memmap(tmp_path, X)
    import sklearn.cluster  # noqa: F401

    tracemalloc.start()
    try:
        model = FeatureKMeans(n_clusters=4, pca=None, normalize=True, fit_sample=1500).fit(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    sample_bytes = 1500 * 300 * 4
    assert peak < sample_bytes, (peak, sample_bytes)
    assert model.reducer_.components_.shape == (8, 300)
    assert adjusted_rand_score(truth, model.labels_) == 1.0


def test_parameter_checked_cloned_saved(tmp_path):
    for bad in (0, 1, 2.5, "all", True):
        with pytest.raises(UsageError, match="fit_sample"):
            FeatureKMeans(fit_sample=bad).check_params()
        with pytest.raises(UsageError, match="fit_sample"):
            KScan(fit_sample=bad).check_params()
    assert FeatureKMeans().fit_sample == KScan().fit_sample == cluster.FIT_SAMPLE
    model = FeatureKMeans(n_clusters=3, fit_sample=50)
    assert clone(model).get_params() == model.get_params()
    assert clone(KScan(fit_sample=7)).fit_sample == 7
    assert "fit_sample=50" in repr(model)
    X, _ = planted(200, k=3)
    with pytest.raises(UsageError, match="n_clusters=3 is larger than fit_sample=2"):
        FeatureKMeans(n_clusters=3, fit_sample=2).fit(X)
    model.fit(X)
    model.save(tmp_path / "m.npz")
    loaded, _ = FeatureKMeans.load(tmp_path / "m.npz")
    assert loaded.fit_sample == 50
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)


def test_check_estimator_with_a_sample():
    failed = [
        r
        for r in check_estimator(FeatureKMeans(n_clusters=3, fit_sample=12), on_fail=None)
        if r["status"] == "failed"
    ]
    assert not failed, [(r["check_name"], str(r["exception"])[:300]) for r in failed]


def test_label_block_and_small_pickles():
    X, _ = planted(3000)
    model = FeatureKMeans(n_clusters=5, fit_sample=500, pca=6).fit(X)
    labels, distances = cluster.label_block(model, X[1000:1100])
    np.testing.assert_array_equal(labels, model.labels_[1000:1100])
    np.testing.assert_allclose(distances, model.distances_[1000:1100], rtol=1e-6)
    assert labels.dtype == np.int64 and distances.dtype == np.float32
    slim = cluster.slim(model)
    assert not hasattr(slim, "labels_") and hasattr(model, "labels_")
    size = len(pickle.dumps(slim))
    assert size < 8000 < len(pickle.dumps(model))
    copy = pickle.loads(pickle.dumps(slim))
    np.testing.assert_array_equal(cluster.label_block(copy, X[:200])[0], model.labels_[:200])
    big = FeatureKMeans(n_clusters=5, fit_sample=500, pca=6).fit(np.concatenate([X] * 4))
    assert len(pickle.dumps(cluster.slim(big))) == size  # same model size for 4x the rows


def test_labeller_gets_a_small_model_and_sets_the_labels():
    X, _ = planted(2000)
    seen = []

    def labeller(model, X):
        seen.append(len(pickle.dumps(model)))
        assert not hasattr(model, "labels_") and not hasattr(model, "thresholds_")
        parts = [
            cluster.label_block(pickle.loads(pickle.dumps(model)), X[a : a + 300])
            for a in range(0, len(X), 300)
        ]
        return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    # Without PCA, the model a labeller gets is the centres and a few numbers.
    model = FeatureKMeans(n_clusters=5, fit_sample=400, pca=None).fit(X, labeller=labeller)
    reference = FeatureKMeans(n_clusters=5, fit_sample=400, pca=None).fit(X)
    assert seen and seen[0] < 5000
    np.testing.assert_array_equal(model.labels_, reference.labels_)
    np.testing.assert_array_equal(model.thresholds_, reference.thresholds_)
    # Also when every row is the sample: the labeller gives the fit's own labels.
    whole = FeatureKMeans(n_clusters=5, fit_sample=None, pca=None).fit(X, labeller=labeller)
    np.testing.assert_array_equal(
        whole.labels_, FeatureKMeans(n_clusters=5, fit_sample=None, pca=None).fit(X).labels_
    )
    with pytest.raises(ValueError, match="labeller gave"):
        FeatureKMeans(n_clusters=5).fit(X, labeller=lambda m, X: (np.zeros(3), np.zeros(3)))


def test_kscan_on_a_sample(tmp_path, monkeypatch):
    X, _ = planted(3000, k=4)
    full = KScan(ks=range(2, 7), fit_sample=None).fit(X)
    same = KScan(ks=range(2, 7), fit_sample=3000).fit(X)
    for key in full.scores_:
        np.testing.assert_array_equal(same.scores_[key], full.scores_[key])
    np.testing.assert_array_equal(same.sample_index_, np.arange(3000))
    monkeypatch.setattr(reduce, "BLOCK_BYTES", 32 << 10)
    sampled = KScan(ks=range(2, 7), fit_sample=800).fit(memmap(tmp_path, X))
    assert len(sampled.sample_index_) == 800 and sampled.scan_labels_.shape == (5, 800)
    assert np.all(np.diff(sampled.sample_index_) > 0)
    assert full.suggested_k_ == sampled.suggested_k_ == 4
    with pytest.raises(UsageError, match="in the fit sample"):
        KScan(ks=[5], fit_sample=3).fit(X)


def test_scores_of_a_large_matrix_are_computed_block_by_block(tmp_path, monkeypatch):
    X, _ = planted(5000, k=4)
    model = FeatureKMeans(n_clusters=4, fit_sample=1000, pca=8).fit(X)
    in_memory = scores.model_scores(model, X)
    monkeypatch.setattr(scores, "MAX_IN_MEMORY_BYTES", 64 << 10)
    monkeypatch.setattr(reduce, "BLOCK_BYTES", 32 << 10)
    blockwise = scores.model_scores(model, memmap(tmp_path, X))
    assert blockwise.keys() == in_memory.keys()
    for key in ("inertia", "silhouette", "davies_bouldin", "calinski_harabasz"):
        assert blockwise[key] == pytest.approx(in_memory[key], rel=1e-5), key
    assert blockwise["stability"] == pytest.approx(1.0)
    # cluster_scores over a ReducedRows equals the one over the reduced array.
    Z = model.reduce(X)
    rows = scores.ReducedRows(model.reducer_, X)
    a, b = scores.cluster_scores(Z, model.labels_), scores.cluster_scores(rows, model.labels_)
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
