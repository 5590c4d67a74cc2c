"""Unit tests of the feature store and the clustering model, with a fake embedder."""

import functools
import json
import os

import numpy as np
import pytest
from PIL import Image

import featclust
from featclust import images
from featclust.cluster import FeatureKMeans
from featclust.decoding import iter_features
from featclust.errors import FeaturesUnavailableError, StoreError, StoreLockedError, UsageError
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
    first = featclust.embed_folder(tmp_path / "img", embedder=fake, store=tmp_path / "store")
    assert fake.seen == 10 and first.n_embedded == 10
    assert len(list((tmp_path / "store").glob("features-*/rows/chunk-*.npy"))) == 3
    np.testing.assert_allclose(first.features[:, 0], np.arange(0, 250, 25) / 255, atol=1e-6)
    again = featclust.embed_folder(
        tmp_path / "img", embedder=FakeEmbedder(), store=tmp_path / "store"
    )
    assert again.n_reused == 10 and again.n_embedded == 0
    np.testing.assert_array_equal(again.features, first.features)


def test_interrupted_run_keeps_whole_chunks_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(FeatureStore.__init__, "__defaults__", (None, 2))
    write_images(tmp_path / "img", range(0, 250, 25))
    with pytest.raises(KeyboardInterrupt):
        featclust.embed_folder(
            tmp_path / "img", embedder=FakeEmbedder(fail_after=6), store=tmp_path / "store"
        )
    resumed = FakeEmbedder()
    result = featclust.embed_folder(tmp_path / "img", embedder=resumed, store=tmp_path / "store")
    assert result.n_reused == 6 and resumed.seen == 4
    np.testing.assert_allclose(result.features[:, 0], np.arange(0, 250, 25) / 255, atol=1e-6)
    assert not list(result.store_path.glob("*.tmp"))


def test_same_size_and_mtime_but_new_content_is_detected(tmp_path):
    write_images(tmp_path / "img", [0, 255], "bmp")  # uncompressed: same size for any pixels
    first = featclust.embed_folder(
        tmp_path / "img", embedder=FakeEmbedder(), store=tmp_path / "store"
    )
    target = tmp_path / "img" / "im00.bmp"
    st = os.stat(target)
    data = target.read_bytes()
    write_images(tmp_path / "other", [7], "bmp")
    new = (tmp_path / "other" / "im00.bmp").read_bytes()
    assert len(new) == len(data)
    target.write_bytes(new)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # a racy, same-stat change
    second = featclust.embed_folder(
        tmp_path / "img", embedder=FakeEmbedder(), store=tmp_path / "store"
    )
    assert second.n_embedded == 1
    assert second.features[0, 0] == pytest.approx(7 / 255, abs=1e-6)
    assert first.features[0, 0] == 0


def test_other_settings_other_entry_and_foreign_settings_rebuilt(tmp_path):
    write_images(tmp_path / "img", [0, 100, 200])
    a = featclust.embed_folder(
        tmp_path / "img", embedder=FakeEmbedder("a"), store=tmp_path / "store"
    )
    b = featclust.embed_folder(
        tmp_path / "img", embedder=FakeEmbedder("b"), store=tmp_path / "store"
    )
    assert a.store_path != b.store_path and b.n_embedded == 3
    settings = a.store_path.parents[1] / "settings.json"
    data = json.loads(settings.read_text())
    data["settings"]["tag"] = "tampered"
    settings.write_text(json.dumps(data))
    again = featclust.embed_folder(
        tmp_path / "img", embedder=FakeEmbedder("a"), store=tmp_path / "store"
    )
    assert again.n_embedded == 3
    assert any("other settings" in p and "rebuilt" in p for p in again.problems)


def test_truncated_chunk_is_reported_and_rebuilt(tmp_path):
    write_images(tmp_path / "img", [0, 100, 200])
    first = featclust.embed_folder(
        tmp_path / "img", embedder=FakeEmbedder(), store=tmp_path / "store"
    )
    [chunk] = (tmp_path / "store").glob("features-*/rows/chunk-*.npy")
    chunk.write_bytes(chunk.read_bytes()[:100])
    again = featclust.embed_folder(
        tmp_path / "img", embedder=FakeEmbedder(), store=tmp_path / "store"
    )
    assert again.n_embedded == 3
    assert any(f"chunk {chunk.stem[6:]} is damaged" in p for p in again.problems)
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
    one = featclust.embed_folder(tmp_path / "one", embedder=FakeEmbedder(), store=store)
    two = featclust.embed_folder(tmp_path / "two", embedder=FakeEmbedder(), store=store)
    # two's images are equal: one embedded, the other served its row
    assert one.paths == two.paths and (two.n_embedded, two.n_reused) == (1, 1)
    assert one.features[0, 0] == 0 and two.features[0, 0] == 1


def test_kmeans_numbers_clusters_by_size_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate(
        [rng.normal(0, 0.1, (5, 4)), rng.normal(5, 0.1, (12, 4)), rng.normal(-5, 0.1, (8, 4))]
    ).astype(np.float32)
    model = FeatureKMeans(n_clusters=3, pca=2, normalize=False).fit(X)
    assert np.bincount(model.labels_).tolist() == [12, 8, 5]
    model.save(tmp_path / "m.npz", extra={"x": 1})
    loaded, extra = FeatureKMeans.load(tmp_path / "m.npz")
    assert extra == {"x": 1}
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)
    labels, dist = loaded.predict_with_distance(X)
    np.testing.assert_allclose(dist, model.distances_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_clusters": 0}, "n_clusters=0"),
        ({"n_clusters": 30}, "n_clusters=30 is larger than the number of images (10)"),
        ({"n_clusters": 2, "pca": 0}, "pca=0"),
        ({"n_clusters": "3"}, "n_clusters='3'"),
    ],
)
def test_kmeans_errors_name_parameter_and_value(params, message):
    with pytest.raises(UsageError) as err:
        FeatureKMeans(**params).fit(np.random.default_rng(0).normal(size=(10, 4)))
    assert message in str(err.value)


@pytest.mark.parametrize("mode", ["copy", "symlink", "hardlink"])
def test_sort_modes_place_every_image(tmp_path, mode):
    from featclust.output import OutputFolder
    from featclust.sort import destinations, sort_into_folders

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


def fake_embed_files(calls, fail=()):
    """An ``embed_files`` function without Keras: features from the file size.

    Rows carry the true content hash: files this new are checked by hash.
    """

    def embed_files(missing):
        calls.append([f.path for f in missing])
        for f in missing:
            if f.path in fail:
                yield [], np.zeros((0, 3), np.float32), [images.BadFile(f.path, "broken")]
            else:
                yield (
                    [(f, images.read_bytes(f)[1])],
                    np.array([[f.size, len(f.path), 1.0]], np.float32),
                    [],
                )

    return embed_files


class Bar:
    def __init__(self, log, description, total):
        self.log = log
        log.append((description, total))

    def update(self, n):
        self.log.append(n)

    def close(self):
        self.log.append("closed")


def test_update_fills_a_store_and_a_second_update_embeds_nothing(tmp_path):
    write_images(tmp_path / "img", [0, 100, 200])
    files, _ = images.scan(tmp_path / "img")
    settings = {"model": "fake", "dim": 3}
    calls, log = [], []
    progress = functools.partial(Bar, log)
    with FeatureStore(tmp_path / "img", settings, tmp_path / "store", chunk_size=2) as st:
        cached, bad, n = st.update(files, fake_embed_files(calls, fail={"im01.png"}), progress)
        assert (cached, n) == ([], 2)
        assert [(b.path, b.reason) for b in bad] == [("im01.png", "broken")]
        assert calls == [["im00.png", "im01.png", "im02.png"]]
        assert log == [("embedding", 3), 1, 1, 1, "closed"]
        assert not (st.path / "bad_files.csv").exists()  # update() does not finish()
        feats = st.load(["im00.png", "im02.png"])
        st.finish(files, bad)
    np.testing.assert_array_equal(feats[:, 1], [8, 8])
    with FeatureStore(tmp_path / "img", settings, tmp_path / "store") as st:
        log.clear()
        cached, bad, n = st.update(files, fake_embed_files(calls), progress)
        assert [f.path for f in cached] == ["im00.png", "im02.png"] and n == 0
        assert [b.path for b in bad] == ["im01.png"]  # known bad, not tried again
        assert len(calls) == 1 and log == []  # nothing embedded, no progress bar
        np.testing.assert_array_equal(st.load(["im00.png", "im02.png"]), feats)


def test_update_with_iter_features_and_a_fake_embedder(tmp_path):
    write_images(tmp_path / "img", [0, 100, 200])
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image")
    files, _ = images.scan(tmp_path / "img")
    fake = FakeEmbedder()
    with FeatureStore(tmp_path / "img", fake.settings(), tmp_path / "store") as st:
        cached, bad, n = st.update(files, functools.partial(iter_features, embedder=fake))
        assert n == 3 and fake.seen == 3 and [b.path for b in bad] == ["broken.png"]
        np.testing.assert_allclose(
            st.load([f"im0{i}.png" for i in range(3)])[:, 0], [0, 100 / 255, 200 / 255], atol=1e-6
        )


def test_update_needs_an_open_store(tmp_path):
    write_images(tmp_path / "img", [0])
    files, _ = images.scan(tmp_path / "img")
    st = FeatureStore(tmp_path / "img", {"dim": 3}, tmp_path / "store")
    with pytest.raises(StoreError, match="not open"):
        st.update(files, fake_embed_files([]))


def test_state_without_opening(tmp_path):
    write_images(tmp_path / "img", [0, 100])
    files, _ = images.scan(tmp_path / "img")
    settings = {"model": "fake", "dim": 3}
    st = FeatureStore(tmp_path / "img", settings, tmp_path / "store")
    assert st.state() == "missing" and not (tmp_path / "store").exists()
    with st:
        st.update(files, fake_embed_files([]))
    assert st.state() == "ready"
    assert FeatureStore(tmp_path / "img", settings, tmp_path / "store").state() == "ready"
    other_folder = FeatureStore(tmp_path / "elsewhere", settings, tmp_path / "store")
    assert other_folder.state() == "missing"  # same settings, no index of that folder
    index = st.path / "index.json"
    data = json.loads(index.read_text())
    data["image_dir"] = "/elsewhere"
    index.write_text(json.dumps(data))
    assert st.state() == "other"
    index.write_text("{not json")
    assert st.state() == "damaged"
    index.unlink()
    assert st.state() == "missing"
    settings_file = st.features_dir / "settings.json"
    data = json.loads(settings_file.read_text())
    data["settings"]["model"] = "another"
    settings_file.write_text(json.dumps(data))
    assert st.state() == "other"
    settings_file.write_text("{not json")
    assert st.state() == "damaged"
    settings_file.unlink()
    assert st.state() == "missing"  # settings from the chunks' records; the index is gone
    for meta in st.rows_dir.glob("chunk-*.json"):
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "store": None}))
    assert st.state() == "damaged"  # features without settings, recorded nowhere
    for chunk in st.rows_dir.glob("chunk-*"):
        chunk.unlink()
    assert st.state() == "missing"
    assert sorted(p.name for p in st.path.iterdir()) == [
        "bad_files.csv",
        "lock",
        "lock.pid",
    ] or sorted(p.name for p in st.path.iterdir()) == ["lock", "lock.pid"]  # nothing changed


def test_read_features_reads_and_refuses_in_words(tmp_path):
    write_images(tmp_path / "img", [0, 100, 200])
    files, _ = images.scan(tmp_path / "img")
    settings = {"model": "fake", "dim": 3}
    root = tmp_path / "store"
    st = FeatureStore(tmp_path / "img", settings, root)
    with pytest.raises(FeaturesUnavailableError, match="no longer exists"):
        st.read_features(["im00.png"])
    assert not root.exists(), "reading must not create a store"
    with st:
        st.update(files, fake_embed_files([]))
    reader = FeatureStore(tmp_path / "img", settings, root)
    feats = reader.read_features(["im02.png", "im00.png"])
    np.testing.assert_array_equal(feats[:, 0], [files[2].size, files[0].size])

    with pytest.raises(FeaturesUnavailableError) as err:
        reader.read_features(["im00.png", "gone.png", "also-gone.png"])
    assert "no longer holds the features of 2 of the 3 images" in str(err.value)
    assert len(str(err.value).splitlines()) == 1

    with FeatureStore(tmp_path / "img", settings, root):
        with pytest.raises(FeaturesUnavailableError, match="in use by another featclust run"):
            reader.read_features(["im00.png"])

    # A store of other settings is left exactly as it is.
    settings_file = reader.features_dir / "settings.json"
    data = json.loads(settings_file.read_text())
    data["settings"]["model"] = "another"
    settings_file.write_text(json.dumps(data))

    def tree():
        return {p: p.read_bytes() for p in reader.features_dir.rglob("*") if p.is_file()}

    before = tree()
    with pytest.raises(FeaturesUnavailableError, match="other settings"):
        reader.read_features(["im00.png"])
    settings_file.write_text("{damaged")
    before[settings_file] = settings_file.read_bytes()
    with pytest.raises(FeaturesUnavailableError, match="damaged"):
        reader.read_features(["im00.png"])
    assert tree() == before


def test_store_digest_is_the_content_hash(tmp_path):
    from featclust import fileio, store

    assert not hasattr(store, "_digest")
    write_images(tmp_path / "img", [7])
    files, _ = images.scan(tmp_path / "img")
    data, digest = images.read_bytes(files[0])
    assert digest == fileio.content_hash(data)
