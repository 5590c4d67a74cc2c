"""The shipped defaults: the ones benchmarks/quality.py chose, the same in every entry point."""

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import load_benchmark

from featclust import ImageClusterer
from featclust.cli import build_parser
from featclust.cluster import DEFAULT_N_INIT, DEFAULT_NORMALIZE, DEFAULT_PCA, FeatureKMeans
from featclust.clusterjobs import sort_folder
from featclust.kscan import KScan

ROOT = Path(__file__).resolve().parents[1]


def _defaults(f, *names):
    params = inspect.signature(f).parameters
    return tuple(params[n].default for n in names)


def test_the_shipped_default_is_the_one_the_benchmark_chose():
    """A default changed without measuring it again fails here.

    benchmarks/RESULTS.md records the setting the worst-case rule chose; the
    Embedder's and FeatureKMeans' signatures must give exactly that setting.
    """
    quality = load_benchmark("quality")
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    spec, post, n_init = quality.shipped_default()
    chosen = dict(
        re.findall(r"^chosen \(best worst case.*?n_init (\d+)\): (.+?): min ARI", text, re.M)
    )
    assert chosen.get(str(n_init)) == f"{spec.name} | {post.name}", chosen


def test_every_entry_point_has_the_same_reduction_defaults():
    want = (DEFAULT_PCA, DEFAULT_NORMALIZE)
    assert _defaults(FeatureKMeans, "pca", "normalize") == want
    assert _defaults(KScan, "pca", "normalize") == want
    assert _defaults(sort_folder, "pca", "normalize") == want
    assert _defaults(ImageClusterer, "pca", "normalize") == want
    assert _defaults(FeatureKMeans, "n_init") == (DEFAULT_N_INIT,)
    for command in (["sort", "images", "out", "-k", "3"], ["scan-k", "images"]):
        args = build_parser().parse_args(command)
        assert (args.pca, args.normalize) == want


def test_the_cli_can_turn_the_reduction_off_and_on():
    args = build_parser().parse_args(
        ["sort", "i", "o", "-k", "3", "--pca", "none", "--no-normalize"]
    )
    assert args.pca is None and args.normalize is False
    args = build_parser().parse_args(["scan-k", "i", "--pca", "12", "--normalize"])
    assert args.pca == 12 and args.normalize is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sort", "i", "o", "-k", "3", "--pca", "0"])


def test_pca_larger_than_the_folder_takes_every_component_there_is():
    """A small folder gets fewer components than asked for, not an error."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1], 6)
    X = (rng.normal(0, 0.2, (12, 40)) + 3 * np.eye(40)[truth]).astype(np.float32)
    model = FeatureKMeans(2, pca=64, normalize=True).fit(X)
    assert model.n_components_ == 12 and model.reduce(X).shape == (12, 12)
    assert sorted(np.bincount(model.labels_)) == [6, 6]
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert FeatureKMeans(2, pca=5).fit(X).n_components_ == 5


def test_an_image_unlike_the_folder_is_far_from_every_cluster_after_pca(tmp_path):
    """Distances (and outlier flags) are measured before the PCA.

    Foreign vectors differ from the folder in directions the few kept
    components leave out; projected, they would sit among the members.
    """
    rng = np.random.default_rng(1)
    truth = np.repeat([0, 1, 2], 40)
    members = (np.eye(64)[truth] * 5 + rng.normal(0, 0.3, (120, 64))).astype(np.float32)
    foreign = (np.eye(64)[0] * 5 + rng.normal(0, 0.3, (10, 64))).astype(np.float32)
    foreign[:, 10:30] += rng.normal(0, 3, (10, 20)).astype(np.float32)
    model = FeatureKMeans(3, pca=3, normalize=True, random_state=0).fit(members)
    labels, distances = model.predict_with_distance(foreign)
    assert np.all(distances > model.thresholds_[labels])
    in_space = np.linalg.norm(model.reduce(foreign) - model.cluster_centers_[labels], axis=1)
    assert np.mean(in_space > model.thresholds_[labels]) < 0.5  # the projection hides them
    own_labels, own = model.predict_with_distance(members)
    np.testing.assert_array_equal(own_labels, model.labels_)
    np.testing.assert_allclose(own, model.distances_, rtol=1e-5)
    assert np.mean(own > model.thresholds_[own_labels]) <= 0.1
    model.save(tmp_path / "m.npz")
    loaded, _ = FeatureKMeans.load(tmp_path / "m.npz")
    np.testing.assert_allclose(loaded.predict_with_distance(foreign)[1], distances, rtol=1e-5)
