"""benchmarks/quality.py: the CI-sized run prints one sane table, and it measures what ships."""

import importlib.util
import io
import sys
from pathlib import Path

import numpy as np
import pytest

from featclust import embed

ROOT = Path(__file__).resolve().parents[1]


def _load_quality():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["quality"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


quality = _load_quality()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("quality")
    out = io.StringIO()
    rows, best = quality.main(["--small", "--cache", str(cache), "--jobs", "1"], out=out)
    return cache, out.getvalue(), {(group, name): vals for group, name, vals in rows}, best


def _cell(rows, group, name, set_name):
    return rows[(group, name)]["random"][set_name]


def test_small_run_prints_one_table_with_sane_scores(small_run):
    cache, text, rows, best = small_run
    lines = text.splitlines()
    assert sum(line.startswith("group ") for line in lines) == 1
    assert "NOT the ImageNet weights" in text
    default = quality.shipped_default()
    assert default[0].name == "b4 max" and default[1].name == "raw - kmeans"
    expected = [("baseline", "pixels: SVD100 k-means (baseline)"),
                ("old default", "b5 avg | raw - kmeans"),
                ("DEFAULT", "b4 max | raw - kmeans"),
                ("subset 2/fam", "b4 max | raw - kmeans | TTA")]
    for key in expected:
        assert key in rows, key
        assert any(key[1] in line and line.startswith(key[0]) for line in lines), key
    for vals in rows.values():
        for cell in vals["random"].values():
            if cell is not None:
                ari, nmi = cell
                assert -1.0 <= ari <= 1.0 and 0.0 <= nmi <= 1.0 + 1e-9
    assert best is not None and "best with random" in text
    csv_rows = (cache / "results.csv").read_text().splitlines()
    assert csv_rows[0] == "weights,set,features,post,subset_tta,ari,nmi"
    assert len(csv_rows) > 50


def test_small_run_scores_match_what_was_observed(small_run):
    # Seeded images, seeded random weights, seeded k-means: the figures are
    # reproducible; the margins absorb float differences between machines.
    _, _, rows, best = small_run
    # Hu moments tell a disk, a star and a bar apart whatever their pose (observed 1.000).
    assert _cell(rows, "baseline", "pixels: 7 Hu moments k-means", "sil")[0] > 0.9
    # The shipped settings with random weights: observed ARI 0.479 on these silhouettes.
    assert _cell(rows, "DEFAULT", "b4 max | raw - kmeans", "sil")[0] > 0.479 - 0.15
    # The old default on these dots (observed 0.325) and the best setting (observed 0.690).
    assert _cell(rows, "old default", "b5 avg | raw - kmeans", "dots")[0] > 0.325 - 0.15
    assert best[0] > 0.690 - 0.15


def test_harness_features_are_the_ones_featclust_computes(small_run):
    """Pooling, layer and TTA of the harness (from cached maps) equal the Embedder's output."""
    cache = small_run[0]
    paths, labels = quality.make_set(cache / "sets", "dots", ("ring", "line", "grid"), 6, 0)
    idx = quality._subset(labels, 2)[:2]
    gray, _ = quality.decode_all([paths[i] for i in idx])
    identity = embed.weights_identity("none")
    set_key = f"{paths[0].parent.name}-sub2"
    maps = [{b: np.load(quality.maps_folder(cache, set_key, identity, t) / f"block{b}.npy")[:2]
             for b in quality.BLOCKS} for t in range(8)]

    spec = quality.shipped_default()[0]
    plain = embed.Embedder(weights="none", precision="float32", batch_size=2)
    np.testing.assert_allclose(plain.embed(gray), quality.derive(maps[0], spec),
                               rtol=1e-4, atol=1e-4)
    tta = embed.Embedder(weights="none", precision="float32", batch_size=2, tta=True)
    assert tta.settings() != plain.settings()  # TTA features get their own store entry
    want = np.mean([quality.derive(m, spec) for m in maps], axis=0)
    np.testing.assert_allclose(tta.embed(gray), want, rtol=1e-4, atol=1e-4)
    gem = embed.Embedder(weights="none", precision="float32", batch_size=2, layer="block5",
                         pooling="gem")
    np.testing.assert_allclose(gem.embed(gray), quality.derive(maps[0], quality.FeatureSpec(
        (5,), "gem")), rtol=1e-4, atol=1e-4)


def test_ward_finds_separated_groups_and_round_trips(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    from featclust.cluster import FeatureKMeans
    from featclust.errors import UsageError

    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], [30, 20, 10])
    X = rng.normal(0, 0.3, (60, 8)) + np.eye(8)[truth] * 5
    model = FeatureKMeans(3, method="ward").fit(X)
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    assert list(np.bincount(model.labels_)) == [30, 20, 10]  # numbered by size
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    model.save(tmp_path / "m.npz")
    loaded, _ = FeatureKMeans.load(tmp_path / "m.npz")
    assert loaded.method == "ward"
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)
    with pytest.raises(UsageError, match="method='single'"):
        FeatureKMeans(3, method="single").fit(X)


def test_cli_tta_features_have_their_own_store_entry_and_ward_sorts_them(tmp_path, capsys):
    from conftest import make_two_families, read_csv

    from featclust.cli import main

    images = tmp_path / "images"
    truth = make_two_families(images, n_per_family=2)
    store = tmp_path / "store"
    common = ["--weights", "none", "--store", str(store), "--batch-size", "4", "-q"]
    assert main(["embed", str(images), "--tta", *common]) == 0
    assert main(["embed", str(images), *common]) == 0
    out = capsys.readouterr().out
    # embedded twice, nothing reused: the TTA features are kept apart from the plain ones
    # (whatever the store's layout on disk)
    assert out.count(f"images: {len(truth)} ({len(truth)} embedded, 0 reused)") == 2

    sorted_dir = tmp_path / "out"
    assert main(["sort", str(images), str(sorted_dir), "-k", "2", "--tta", "--method", "ward",
                 "--no-report", *common]) == 0
    assert f"(0 embedded, {len(truth)} reused)" in capsys.readouterr().out
    info = __import__("json").loads((sorted_dir / "featclust.json").read_text())
    assert info["clustering"]["method"] == "ward"
    assert info["feature_settings"]["tta"] != "none" and info["embedder"]["tta"] is True
    assert sorted(r["path"] for r in read_csv(sorted_dir / "labels.csv")) == sorted(truth)
