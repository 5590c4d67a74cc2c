"""Unit tests of the feature store and the clustering model, with a fake embedder."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import featclust
from featclust.cluster import FeatureKMeans
from featclust.errors import StoreLockedError, UsageError
from featclust.store import FeatureStore


class FakeEmbedder:
    """Features = a few pixel statistics; counts how many images it saw."""

    batch_size = batch = 2
    dim = 3
    pooling = "avg"
    weights = "fake"
    precision = "float32"
    seed = 0

    def __init__(self, tag="a", fail_after=None):
        self.tag = tag
        self.seen = 0
        self.fail_after = fail_after

    def settings(self):
        return {"model": "fake", "tag": self.tag, "dim": self.dim}

    def embed(self, gray):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt
        self.seen += len(gray)
        g = gray.reshape(len(gray), -1).astype(np.float32) / 255
        return np.stack([g.mean(1), g.std(1), g[:, :100].mean(1)], axis=1)

    embed_batch = embed


def write_images(folder, values, ext="png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        Image.fromarray(np.full((20, 20), v, np.uint8)).save(folder / f"im{i:02d}.{ext}")


def test_reuse_and_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(FeatureStore.__init__, "__defaults__", (None, 4))
    write_images(tmp_path / "img", range(0, 250, 25))  # 10 images
    fake = FakeEmbedder()
    first = featclust.embed_folder(tmp_path / "img", fake, tmp_path / "store")
    assert fake.seen == 10 and first.n_embedded == 10
    chunks = sorted(p.name for p in first.store_path.glob("chunk-*.npy"))
    assert chunks == ["chunk-000000.npy", "chunk-000001.npy", "chunk-000002.npy"]
    np.testing.assert_allclose(first.features[:, 0], np.arange(0, 250, 25) / 255, atol=1e-6)
    again = featclust.embed_folder(tmp_path / "img", FakeEmbedder(), tmp_path / "store")
    assert again.n_reused == 10 and again.n_embedded == 0
    np.testing.assert_array_equal(again.features, first.features)


def test_interrupted_run_keeps_whole_chunks_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(FeatureStore.__init__, "__defaults__", (None, 2))
    write_images(tmp_path / "img", range(0, 250, 25))
    with pytest.raises(KeyboardInterrupt):
        featclust.embed_folder(tmp_path / "img", FakeEmbedder(fail_after=6), tmp_path / "store")
    resumed = FakeEmbedder()
    result = featclust.embed_folder(tmp_path / "img", resumed, tmp_path / "store")
    assert result.n_reused == 6 and resumed.seen == 4
    np.testing.assert_allclose(result.features[:, 0], np.arange(0, 250, 25) / 255, atol=1e-6)
    assert not list(result.store_path.glob("*.tmp"))


def test_same_size_and_mtime_but_new_content_is_detected(tmp_path):
    write_images(tmp_path / "img", [0, 255], "bmp")  # uncompressed: same size for any pixels
    first = featclust.embed_folder(tmp_path / "img", FakeEmbedder(), tmp_path / "store")
    target = tmp_path / "img" / "im00.bmp"
    st = os.stat(target)
    data = target.read_bytes()
    write_images(tmp_path / "other", [7], "bmp")
    new = (tmp_path / "other" / "im00.bmp").read_bytes()
    assert len(new) == len(data)
    target.write_bytes(new)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # a racy, same-stat change
    second = featclust.embed_folder(tmp_path / "img", FakeEmbedder(), tmp_path / "store")
    assert second.n_embedded == 1
    assert second.features[0, 0] == pytest.approx(7 / 255, abs=1e-6)
    assert first.features[0, 0] == 0


def test_other_settings_other_entry_and_foreign_settings_rebuilt(tmp_path):
    write_images(tmp_path / "img", [0, 100, 200])
    a = featclust.embed_folder(tmp_path / "img", FakeEmbedder("a"), tmp_path / "store")
    b = featclust.embed_folder(tmp_path / "img", FakeEmbedder("b"), tmp_path / "store")
    assert a.store_path != b.store_path and b.n_embedded == 3
    settings = a.store_path / "settings.json"
    data = json.loads(settings.read_text())
    data["settings"]["tag"] = "tampered"
    settings.write_text(json.dumps(data))
    again = featclust.embed_folder(tmp_path / "img", FakeEmbedder("a"), tmp_path / "store")
    assert again.n_embedded == 3
    assert any("other settings" in p and "rebuilt" in p for p in again.problems)


def test_truncated_chunk_is_reported_and_rebuilt(tmp_path):
    write_images(tmp_path / "img", [0, 100, 200])
    first = featclust.embed_folder(tmp_path / "img", FakeEmbedder(), tmp_path / "store")
    chunk = first.store_path / "chunk-000000.npy"
    chunk.write_bytes(chunk.read_bytes()[:100])
    again = featclust.embed_folder(tmp_path / "img", FakeEmbedder(), tmp_path / "store")
    assert again.n_embedded == 3
    assert any("chunk 0 is damaged" in p for p in again.problems)
    np.testing.assert_array_equal(again.features, first.features)


def test_store_is_locked_while_in_use(tmp_path):
    write_images(tmp_path / "img", [0])
    settings = FakeEmbedder().settings()
    with FeatureStore(tmp_path / "img", settings, tmp_path / "store"):
        with pytest.raises(StoreLockedError, match="in use by another featclust run"):
            FeatureStore(tmp_path / "img", settings, tmp_path / "store").open()


def test_two_folders_with_the_same_file_names_never_share_rows(tmp_path):
    write_images(tmp_path / "one", [0, 0])
    write_images(tmp_path / "two", [255, 255])
    store = tmp_path / "store"
    one = featclust.embed_folder(tmp_path / "one", FakeEmbedder(), store)
    two = featclust.embed_folder(tmp_path / "two", FakeEmbedder(), store)
    assert one.paths == two.paths and two.n_embedded == 2
    assert one.features[0, 0] == 0 and two.features[0, 0] == 1


def test_kmeans_numbers_clusters_by_size_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (5, 4)), rng.normal(5, 0.1, (12, 4)),
                        rng.normal(-5, 0.1, (8, 4))]).astype(np.float32)
    model = FeatureKMeans(n_clusters=3, pca=2, normalize=False).fit(X)
    assert np.bincount(model.labels_).tolist() == [12, 8, 5]
    model.save(tmp_path / "m.npz", extra={"x": 1})
    loaded, extra = FeatureKMeans.load(tmp_path / "m.npz")
    assert extra == {"x": 1}
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)
    labels, dist = loaded.predict_with_distance(X)
    np.testing.assert_allclose(dist, model.distances_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("params, message", [
    ({"n_clusters": 0}, "n_clusters=0"),
    ({"n_clusters": 30}, "n_clusters=30 is larger than the number of images (10)"),
    ({"n_clusters": 2, "pca": 50}, "pca=50"),
    ({"n_clusters": "3"}, "n_clusters='3'"),
])
def test_kmeans_errors_name_parameter_and_value(params, message):
    with pytest.raises(UsageError) as err:
        FeatureKMeans(**params).fit(np.random.default_rng(0).normal(size=(10, 4)))
    assert message in str(err.value)


@pytest.mark.parametrize("mode", ["copy", "symlink", "hardlink"])
def test_sort_modes_place_every_image(tmp_path, mode):
    from featclust.sort import OutputFolder, destinations, sort_into_folders

    write_images(tmp_path / "img", [0, 100, 200])
    paths = sorted(p.name for p in (tmp_path / "img").iterdir())
    out = OutputFolder(tmp_path / "out", tmp_path / "img")
    out.claim(destinations(paths, [0, 1, 0], 2))
    dests = sort_into_folders(tmp_path / "img", out, paths, [0, 1, 0], 2, mode)
    assert dests == ["cluster_00/im00.png", "cluster_01/im01.png", "cluster_00/im02.png"]
    for src, rel in zip(paths, dests):
        dst = tmp_path / "out" / rel
        assert dst.read_bytes() == (tmp_path / "img" / src).read_bytes()
        assert dst.is_symlink() == (mode == "symlink")
        same_inode = os.stat(dst).st_ino == os.stat(tmp_path / "img" / src).st_ino
        assert same_inode == (mode != "copy")
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == paths
