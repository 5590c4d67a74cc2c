"""End-to-end: real images, the real VGG16 (random weights), real output folders."""

import hashlib
import json
import os
import shutil
from collections import defaultdict

import numpy as np
import pytest
from conftest import contrast_dots, make_two_families, read_csv
from PIL import Image

import featclust
from featclust import samples
from featclust.cluster import FeatureKMeans
from featclust.errors import UnsafeOutputError


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _groups(labels_csv, truth):
    """Map each true family to the set of clusters its images landed in."""
    found = defaultdict(set)
    for row in read_csv(labels_csv):
        found[truth[row["path"]]].add(int(row["cluster"]))
    return found


@pytest.fixture(scope="module")
def sorted_run(tmp_path_factory, two_families, embedder):
    folder, truth = two_families
    store = tmp_path_factory.mktemp("store")
    out = tmp_path_factory.mktemp("runs") / "k2"
    before = {p: _sha(folder / p) for p in truth}
    result = featclust.sort_folder(
        folder, out, n_clusters=2, embedder=embedder, store=store, normalize=True
    )
    return folder, truth, store, out, result, before


def test_two_shapes_land_in_two_clusters(sorted_run):
    folder, truth, _, out, result, _ = sorted_run
    groups = _groups(out / "labels.csv", truth)
    assert all(len(c) == 1 for c in groups.values()), groups
    assert groups["heavy"] != groups["light"]
    assert result.embed.n_embedded == len(truth)


def test_every_image_copied_once_into_its_cluster(sorted_run):
    folder, truth, _, out, result, _ = sorted_run
    rows = read_csv(out / "labels.csv")
    assert sorted(r["path"] for r in rows) == sorted(truth)
    copies = sorted(
        p.relative_to(out).as_posix() for p in out.glob("cluster_*/**/*") if p.is_file()
    )
    expected = sorted(f"cluster_{int(r['cluster']):02d}/{r['path']}" for r in rows)
    assert copies == expected
    for r in rows:
        dst = out / f"cluster_{int(r['cluster']):02d}" / r["path"]
        assert _sha(dst) == _sha(folder / r["path"])
        assert float(r["distance"]) >= 0


def test_input_folder_untouched(sorted_run):
    folder, truth, _, _, _, before = sorted_run
    assert sorted(p.name for p in folder.iterdir()) == sorted(truth)
    assert {p: _sha(folder / p) for p in truth} == before


def test_marker_and_model_written(sorted_run):
    _, truth, _, out, result, _ = sorted_run
    info = json.loads((out / "featclust.json").read_text())
    assert info["status"] == "complete"
    assert info["counts"]["images"] == len(truth)
    assert sum(info["counts"]["cluster_sizes"]) == len(truth)
    assert info["feature_settings"]["pooling"] == "max"
    assert info["feature_settings"]["layer"] == "block4_pool"
    assert info["feature_settings"]["grid"] == "1x1+2x2+4x4"
    assert info["feature_settings"]["grid_weight"] == 0.4
    assert info["embedder"]["layer"] == "block4" and info["embedder"]["tta"] is False
    assert (info["embedder"]["grid"], info["embedder"]["grid_weight"]) == (4, 0.4)
    assert "labels.csv" in info["files"]
    model, extra = FeatureKMeans.load(out / "model.npz")
    assert extra["feature_settings"] == info["feature_settings"]
    np.testing.assert_array_equal(model.predict(result.embed.features), result.model.labels_)


def test_second_run_with_other_k_embeds_nothing(sorted_run, tmp_path, embedder):
    folder, truth, store, _, _, _ = sorted_run
    result = featclust.sort_folder(
        folder, tmp_path / "k3", n_clusters=3, embedder=embedder, store=store
    )
    assert result.embed.n_embedded == 0
    assert result.embed.n_reused == len(truth)
    listing = os.listdir(tmp_path / "k3")
    assert sorted(n for n in listing if n.startswith("cluster_")) == [
        "cluster_00",
        "cluster_01",
        "cluster_02",
    ]
    assert {"labels.csv", "featclust.json", "model.npz"} <= set(listing)


def test_changed_added_and_deleted_images(tmp_path, embedder):
    folder = tmp_path / "imgs"
    truth = make_two_families(folder, n_per_family=3)
    store = tmp_path / "store"
    first = featclust.embed_folder(folder, embedder=embedder, store=store)
    assert first.n_embedded == 6
    names = sorted(truth)
    changed, deleted = folder / names[0], folder / names[1]
    old_vec = first.features[first.paths.index(names[0])]
    Image.fromarray(np.full((200, 200), 255, np.uint8)).save(changed)  # blank canvas now
    deleted.unlink()
    samples.draw_dots("line", np.random.default_rng(5)).save(folder / "new.png")

    second = featclust.embed_folder(folder, embedder=embedder, store=store)
    assert second.n_embedded == 2  # the changed and the new image
    assert second.n_reused == 4
    assert names[1] not in second.paths and "new.png" in second.paths
    new_vec = second.features[second.paths.index(names[0])]
    assert not np.allclose(new_vec, old_vec)
    np.testing.assert_allclose(
        new_vec, embedder.embed(np.full((1, 224, 224), 255, np.uint8))[0], rtol=1e-4, atol=1e-4
    )
    # the deleted image's row is gone from the store itself, not only hidden
    with featclust.store.FeatureStore(folder, embedder.settings(), store) as st:
        assert names[1] not in st and len(st) == 6

    third = featclust.embed_folder(folder, embedder=embedder, store=store)
    assert third.n_embedded == 0
    np.testing.assert_array_equal(third.features, second.features)


def test_other_pooling_gets_its_own_store_entry(tmp_path, two_families):
    folder, truth = two_families
    store = tmp_path / "store"
    sub = tmp_path / "sub"
    shutil.copytree(folder, sub)
    names = sorted(truth)[:3]
    for p in sub.iterdir():
        if p.name not in names:
            p.unlink()
    avg = featclust.Embedder(weights="none", pooling="avg", batch_size=4)
    mx = featclust.Embedder(weights="none", pooling="max", batch_size=4)
    a = featclust.embed_folder(sub, embedder=avg, store=store)
    b = featclust.embed_folder(sub, embedder=mx, store=store)
    assert (a.n_embedded, b.n_embedded) == (3, 3)
    assert a.store_path != b.store_path
    assert not np.allclose(a.features, b.features)
    assert featclust.embed_folder(sub, embedder=mx, store=store).n_embedded == 0


def test_same_names_in_subfolders_both_arrive(tmp_path, embedder):
    folder = tmp_path / "imgs"
    for sub, fam in (("a", "heavy"), ("b", "light")):
        (folder / sub).mkdir(parents=True)
        for i in range(2):
            contrast_dots(fam, np.random.default_rng(i)).save(folder / sub / f"img_{i}.png")
    out = tmp_path / "out"
    featclust.sort_folder(folder, out, n_clusters=2, embedder=embedder, store=tmp_path / "store")
    copies = sorted(p.relative_to(out).as_posix() for p in out.glob("cluster_*/**/*.png"))
    assert len(copies) == 4
    assert sorted(c.split("/", 1)[1] for c in copies) == [
        "a/img_0.png",
        "a/img_1.png",
        "b/img_0.png",
        "b/img_1.png",
    ]


def test_weights_file_written_by_the_test(tmp_path, two_families):
    import keras

    folder, truth = two_families
    sub = tmp_path / "few"
    sub.mkdir()
    for p in sorted(truth)[:2]:
        shutil.copy(folder / p, sub / p)
    # block5: the saved VGG16 must hold all 13 convolutions, as a VGG16 weights file does
    ref = featclust.Embedder(weights="none", seed=3, batch_size=2, layer="block5")
    vgg = next(layer for layer in ref.build().layers if isinstance(layer, keras.Model))
    path = tmp_path / "vgg16.weights.h5"
    vgg.save_weights(path)
    from_file = featclust.Embedder(weights=str(path), batch_size=2, layer="block5")
    got = featclust.embed_folder(sub, embedder=from_file, store=tmp_path / "store")
    want = featclust.embed_folder(sub, embedder=ref, store=tmp_path / "store2")
    np.testing.assert_allclose(got.features, want.features, rtol=1e-5, atol=1e-5)
    assert got.settings["weights"].startswith("file:sha256=")
    assert keras.config.dtype_policy().name == "float32"


def test_estimator_fit_predict(two_families, embedder, tmp_path):
    folder, truth = two_families
    est = featclust.ImageClusterer(
        n_clusters=2, weights="none", normalize=True, store=tmp_path / "store", batch_size=8
    )
    est.fit(folder)
    assert len(est.labels_) == len(truth) == len(est.paths_)
    assert est.cluster_centers_.shape[0] == 2
    some = [folder / p for p in est.paths_[:3]]
    np.testing.assert_array_equal(est.predict(some), est.labels_[:3])


def test_scan_folder_scores_each_k_and_writes_the_table(sorted_run, tmp_path, embedder):
    folder, truth, store, _, _, _ = sorted_run
    out = tmp_path / "scan"
    result = featclust.scan_folder(
        folder, ks=[2, 3, 40], embedder=embedder, store=store, out_dir=out, progress=False
    )
    assert isinstance(result, featclust.ScanResult)
    assert result.embed.n_embedded == 0 and result.embed.n_reused == len(truth)
    assert list(result.kscan.ks_) == [2, 3] and result.left_out == [40]
    assert result.kscan.suggested_k_ in (2, 3)
    assert sorted(p.name for p in result.written) == ["kscan.csv", "kscan.png"]
    rows = read_csv(out / "kscan.csv")
    assert [int(r["k"]) for r in rows] == [2, 3]
    assert [r["suggested"] for r in rows].count("1") == 1
    # an unsafe output folder is refused before anything is embedded
    with pytest.raises(UnsafeOutputError, match="inside the image"):
        featclust.scan_folder(
            folder, ks=[2], embedder=embedder, store=store, out_dir=folder / "inside"
        )
    assert not (folder / "inside").exists()
