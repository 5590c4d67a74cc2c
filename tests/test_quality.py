"""benchmarks/quality.py: the CI-sized run prints sane tables, and it measures what ships."""

import csv
import io

import numpy as np
import pytest
from conftest import load_benchmark

from featclust import embed

quality = load_benchmark("quality")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    cache = tmp_path_factory.mktemp("quality")
    out = io.StringIO()
    rows, chosen = quality.main(["--small", "--cache", str(cache), "--jobs", "1"], out=out)
    return cache, out.getvalue(), rows, chosen


def test_small_run_prints_the_tables_and_keeps_every_score(small_run):
    cache, text, rows, chosen = small_run
    args = quality.parse(["--small"])
    head = "| group | setting | dots | silhouettes | glyphs | textures | lines | symbols |"
    assert text.count(head) == 2
    assert "CHOSEN" in text and chosen is not None
    groups = {group for group, _, _ in rows}
    assert {"baseline", "old default", "shipped", "CHOSEN"} <= groups
    for _, _, summary in rows:
        assert set(summary["kinds"]) == set(quality.KINDS)
        for ari, nmi in summary["kinds"].values():
            assert -1.0 <= ari <= 1.0 and 0.0 <= nmi <= 1.0 + 1e-9
        assert summary["min"] == min(v[0] for v in summary["kinds"].values())
    with open(cache / "scores.csv", newline="") as fh:
        got = list(csv.DictReader(fh))
    assert list(got[0]) == quality.Scores.HEADER
    n_sets = len(quality.KINDS)
    cnn = len(args.pairs) * n_sets * len(args.seeds)
    pixels = len(quality.PIXEL_BASELINES) * n_sets * len(args.seeds)
    assert len(got) == cnn + pixels


def test_a_second_run_reuses_maps_and_scores(small_run, capsys):
    cache = small_run[0]
    before = (cache / "scores.csv").read_text()
    quality.main(["--small", "--cache", str(cache), "--jobs", "1"], out=io.StringIO())
    err = capsys.readouterr().err
    assert "forward pass" not in err and "scoring" not in err
    assert (cache / "scores.csv").read_text() == before


def test_the_rule_takes_the_best_worst_case_among_settings_that_keep_the_dots():
    def summary(dots, other):
        kinds = {"dots": (dots, 0.0), "glyphs": (other, 0.0)}
        return {"kinds": kinds, "min": min(dots, other), "mean": (dots + other) / 2}

    summaries = {
        ("a", "raw"): summary(0.50, 0.20),  # best dots, poor worst case
        ("b", "raw"): summary(0.48, 0.40),  # within 0.03 of the best dots: eligible
        ("c", "raw"): summary(0.40, 0.60),  # best worst case, but loses the dots
    }
    key, best_dots = quality.choose(summaries, 0.03)
    assert key == ("b", "raw") and best_dots == 0.50
    assert quality.choose(summaries, 0.2)[0] == ("c", "raw")


def test_the_choice_is_made_among_the_settings_featclust_offers():
    def summary(dots, other):
        kinds = {"dots": (dots, 0.0), "symbols": (other, 0.0)}
        return {"kinds": kinds, "min": min(dots, other), "mean": (dots + other) / 2}

    summaries = {
        ("b45 max", "L2 pca32 L2 knn10 spectral"): summary(0.60, 0.55),  # not offered
        ("b45 max g2x0.5", "L2 pca32 L2"): summary(0.48, 0.50),
        ("b45 max", "L2 pca32 L2"): summary(0.50, 0.25),
    }
    offered = set(list(summaries)[1:])
    key, best_dots = quality.choose(summaries, 0.03, offered)
    assert key == ("b45 max g2x0.5", "L2 pca32 L2") and best_dots == 0.50
    assert quality.choose(summaries, 0.03)[0] == ("b45 max", "L2 pca32 L2 knn10 spectral")


def test_the_choice_keeps_every_other_kind_within_the_margin_of_the_default_before():
    def summary(dots, glyphs, symbols):
        kinds = {"dots": (dots, 0.0), "glyphs": (glyphs, 0.0), "symbols": (symbols, 0.0)}
        values = (dots, glyphs, symbols)
        return {"kinds": kinds, "min": min(values), "mean": sum(values) / 3}

    before = ("b45 max", "L2 pca32 L2")
    summaries = {
        before: summary(0.50, 0.72, 0.19),
        ("b4 max g4x0.5", "L2 pca64 L2"): summary(0.45, 0.70, 0.45),  # dots 0.05 below
        ("b4 max g4x0.4", "L2 pca32 L2"): summary(0.47, 0.77, 0.38),  # within 0.03
    }
    key, _ = quality.choose(summaries, None, None, 0.03, before, "symbols")
    assert key == ("b4 max g4x0.4", "L2 pca32 L2")
    assert quality.choose(summaries, None)[0] == ("b4 max g4x0.5", "L2 pca64 L2")
    # The new kind is not held to the default before.
    summaries[("b4 max g4x0.4", "L2 pca32 L2")] = summary(0.47, 0.77, 0.15)
    assert quality.choose(summaries, None, None, 0.03, before, "symbols")[0] == before
    summaries[before] = summary(0.50, 0.72, 0.10)
    assert quality.choose(summaries, None, None, 0.03, before, "symbols")[0] != before


def test_the_position_settings_are_measured_and_those_offered_are_embedder_settings():
    args = quality.parse([])
    names = {(sp.name, po.name) for sp, po in args.pairs}
    assert ("b45 max g2x0.5", "L2 pca32 L2") in names
    assert ("b45 max", "L2 pca32 L2 knn10 spectral") in names
    assert ("b45 max +px0.25", "L2 pcaN/16w L2") in names
    for spec in {sp for sp, _ in args.pairs}:
        if spec.offered:
            e = embed.Embedder(weights="none", **spec.embedder_params())
            assert (e.grid, e.grid_weight) == (spec.grid, spec.grid_weight)
    assert not quality.FeatureSpec((4, 5), "max", 2, 0.5, cell_blocks=(5,)).offered
    assert not quality.PostSpec(normalize=True, pca=32, graph=10).offered
    assert quality.PostSpec(normalize=True, pca=32).offered
    assert quality.parse(["--no-position"]).pairs == [
        (sp, po) for sp in quality.parse(["--no-position"]).specs for po in args.posts
    ]


def test_the_position_views_have_their_shapes():
    rng = np.random.default_rng(0)
    maps = {
        4: rng.random((12, 14, 14, 8), dtype=np.float32),
        5: rng.random((12, 7, 7, 8), dtype=np.float32),
        "thumb": rng.integers(0, 256, (12, 28, 28)).astype(np.uint8),
    }
    cells5 = quality.derive(maps, quality.FeatureSpec((4, 5), "max", 2, 0.7, cell_blocks=(5,)))
    assert cells5.shape == (12, 16 + 4 * 8)
    np.testing.assert_allclose(np.linalg.norm(cells5[:, 16:], axis=1), 0.7, rtol=1e-5)
    pixels = quality.derive(maps, quality.FeatureSpec((4, 5), "max", 1, pixels=0.25))
    assert pixels.shape == (12, 16 + 12)  # PCA to at most the rows
    np.testing.assert_allclose(np.linalg.norm(pixels[:, 16:], axis=1), 0.25, rtol=1e-5)
    Z = quality.reduce(cells5, quality.PostSpec(normalize=True, pca=32, graph=5), k=3)
    assert Z.shape == (12, 3)
    Z = quality.reduce(cells5, quality.PostSpec(normalize=True, pca_per=16, whiten=True))
    assert Z.shape == (12, 8)


@pytest.mark.parametrize(
    "spec",
    [
        quality.FeatureSpec((4,), "max"),
        quality.FeatureSpec((4, 5), "max", 2),
        quality.FeatureSpec((4, 5), "max", 2, 0.5),
        quality.FeatureSpec((4,), "gem", 4),
        quality.FeatureSpec((3, 4, 5), "avg"),
        quality.FeatureSpec((5,), "flatten"),
    ],
    ids=lambda s: s.name,
)
def test_harness_features_are_the_ones_featclust_computes(small_run, spec):
    """Every representation derived from the cached maps equals the Embedder's output."""
    cache = small_run[0]
    args = quality.parse(["--small", "--cache", str(cache)])
    _, kind, _, fams, per, seed = quality.benchmark_sets(args)[0]
    paths, _ = quality.make_set(cache / "sets", kind, fams, per, seed)
    gray, _ = quality.decode_all(paths[:2])
    folder = quality.maps_folder(cache, paths[0].parent.name, embed.weights_identity("none"))
    want = quality.derive({b: m[:2] for b, m in quality.load_maps(folder).items()}, spec)
    e = embed.Embedder(weights="none", precision="float32", batch_size=2, **spec.embedder_params())
    assert e.dim == want.shape[1]
    np.testing.assert_allclose(e.embed(gray), want, rtol=1e-4, atol=1e-4)


def test_post_processing_is_featclusts_reducer():
    from featclust.cluster import FeatureKMeans

    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(40, 16))).astype(np.float32)
    post = quality.PostSpec(normalize=True, pca=4, whiten=True)
    Z = quality.reduce(X, post)
    model = FeatureKMeans(3, pca=4, whiten=True, normalize=True, random_state=0).fit(X)
    np.testing.assert_allclose(Z, model.reduce(X), rtol=1e-4, atol=1e-5)
    assert quality.reduce(X, quality.PostSpec(pca=64)).shape == (40, 16)  # as many as there are


def test_ward_finds_separated_groups_and_round_trips(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    from featclust.cluster import FeatureKMeans
    from featclust.errors import UsageError

    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], [30, 20, 10])
    X = rng.normal(0, 0.3, (60, 8)) + np.eye(8)[truth] * 5
    model = FeatureKMeans(3, method="ward", pca=None, normalize=False).fit(X)
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
    assert (
        main(
            [
                "sort",
                str(images),
                str(sorted_dir),
                "-k",
                "2",
                "--tta",
                "--method",
                "ward",
                "--no-report",
                *common,
            ]
        )
        == 0
    )
    assert f"(0 embedded, {len(truth)} reused)" in capsys.readouterr().out
    info = __import__("json").loads((sorted_dir / "featclust.json").read_text())
    assert info["clustering"]["method"] == "ward"
    assert info["feature_settings"]["tta"] != "none" and info["embedder"]["tta"] is True
    assert sorted(r["path"] for r in read_csv(sorted_dir / "labels.csv")) == sorted(truth)
