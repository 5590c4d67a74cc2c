"""Flatten-pooling features cluster in bounded memory (fake features, no model)."""

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from featclust import images, reduce
from featclust.cluster import FeatureKMeans
from featclust.store import FeatureStore


def _planted(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (k, d)).astype(np.float32)
    truth = rng.integers(0, k, n)
    X = centers[truth] + rng.normal(0, 0.3, (n, d)).astype(np.float32)
    return X, truth


def _memmap(tmp_path, X):
    path = tmp_path / "features.f32"
    X.tofile(path)
    return np.memmap(path, np.float32, "r", shape=X.shape)


def test_long_features_get_automatic_pca_and_stay_out_of_memory(tmp_path, monkeypatch):
    # A scaled-down flatten case: 2,000 x 600 features (4.8 MB) count as
    # "long" and exceed a 256 KB budget, so PCA must be fitted block by block
    # on the memory-mapped matrix, never on a copy of it.
    monkeypatch.setattr(reduce, "AUTO_PCA_MIN_FEATURES", 512)
    monkeypatch.setattr(reduce, "AUTO_PCA", 8)
    monkeypatch.setattr(reduce, "MAX_IN_MEMORY_BYTES", 256 << 10)
    monkeypatch.setattr(reduce, "BLOCK_BYTES", 64 << 10)
    X, truth = _planted(2000, 600, 4)
    X = _memmap(tmp_path, X)

    import sklearn.decomposition

    def no_full_pca(*args, **kwargs):
        raise AssertionError("full-matrix PCA used on a matrix over the memory budget")

    monkeypatch.setattr(sklearn.decomposition, "PCA", no_full_pca)
    import sklearn.cluster  # noqa: F401  (its import is not the fit's memory)

    tracemalloc.start()
    try:
        model = FeatureKMeans(n_clusters=4, pca=None, normalize=True, random_state=0).fit(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < X.nbytes / 2, f"peak {peak} bytes for a {X.nbytes}-byte matrix"
    assert model.n_components_ == 8
    assert model.reducer_.components_.shape == (8, 600)
    assert model.cluster_centers_.shape == (4, 8)
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    np.testing.assert_array_equal(model.predict(X[:50]), model.labels_[:50])


def test_blockwise_pca_matches_scikit_learn(monkeypatch):
    from sklearn.decomposition import PCA

    monkeypatch.setattr(reduce, "BLOCK_BYTES", 16 << 10)  # 14 rows per block
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(500, 12)) * np.arange(12, 0, -1)) @ rng.normal(size=(12, 300))
    X = (X + rng.normal(0, 0.1, X.shape) + 5).astype(np.float32)
    mean, components, variance = reduce.blockwise_pca(X, 8, random_state=1)
    ref = PCA(8, svd_solver="full").fit(X)
    np.testing.assert_allclose(mean, ref.mean_, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(variance, ref.explained_variance_, rtol=1e-3)
    # Same subspace, same signs: each component matches its reference.
    np.testing.assert_allclose(components, ref.components_, atol=2e-3)


def test_short_features_keep_their_length_without_pca():
    X, truth = _planted(60, 512, 3)
    model = FeatureKMeans(n_clusters=3, pca=None).fit(X)
    assert model.n_components_ is None and model.reducer_.components_ is None
    assert model.cluster_centers_.shape == (3, 512)
    assert adjusted_rand_score(truth, model.labels_) == 1.0


def test_saved_model_remembers_automatic_pca(tmp_path):
    X, _ = _planted(40, 5000, 2)
    model = FeatureKMeans(n_clusters=2, pca=None).fit(X)
    assert model.n_components_ == 40  # min(AUTO_PCA, n_samples)
    model.save(tmp_path / "m.npz")
    loaded, _ = FeatureKMeans.load(tmp_path / "m.npz")
    assert loaded.n_components_ == 40
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)


@pytest.mark.parametrize("mmap", [True, False])
def test_store_load_memory_mapped_equals_in_memory(tmp_path, mmap):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    settings = {"dim": 300, "pooling": "flatten"}
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(23, 300)).astype(np.float32)
    files = [
        images.ImageFile(f"img_{i:02d}.png", str(image_dir / f"img_{i:02d}.png"), 10, i)
        for i in range(23)
    ]
    with FeatureStore(image_dir, settings, tmp_path / "store", chunk_size=5) as st:
        st.add([(f, f"hash{i}") for i, f in enumerate(files)], feats)
        order = [files[i].path for i in rng.permutation(23)]
        out = st.load(order, mmap=mmap)
        expected = feats[[int(p[4:6]) for p in order]]
    assert isinstance(out, np.memmap) == mmap
    np.testing.assert_array_equal(out, expected)
    if mmap:
        assert not out.flags.writeable
        # The backing file has no name: nothing is left in the store folder.
        assert not [p for p in st.path.iterdir() if "matrix" in p.name]
