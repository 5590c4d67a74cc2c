"""Grid pooling (``grid``) and block combinations (``layer="block4+block5"``), end to end.

The real Keras VGG16 with random, seeded weights (``weights="none"``) on four
small dot images; every combination's model is built once for the module.
The command-line tests share one ``embed`` + ``sort`` with ``--grid 2
--layer block4+block5`` into one store, which the later runs reuse.
"""

import csv
import inspect
import io
import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import make_two_families, read_csv, stripes
from conftest import run_cli as run
from sklearn.base import clone

from featclust import ImageClusterer, ModelMismatchError, UsageError, images
from featclust.assign import embedder_for
from featclust.cli import build_parser
from featclust.embed import Embedder
from featclust.output import open_sorted
from featclust.pooling import LAYERS, grid_cells, layer_blocks

#: The options of the command-line runs; ``GRID_OPTIONS`` are the features under test.
GRID_OPTIONS = ["--grid", "2", "--layer", "block4+block5"]
COMMON = ["--weights", "none", "--batch-size", "4", "-q"]
GRID_DIM = 5 * (512 + 512)


def errors(stderr):
    """The lines of stderr that are not featclust's warnings."""
    return [line for line in stderr.splitlines() if line and "warning" not in line]


def read_csv_text(text):
    """Rows of CSV text (what assign prints) as dicts."""
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid-images")
    make_two_families(path, n_per_family=2)
    return path


@pytest.fixture(scope="module")
def features(folder):
    """``get(layer, grid)``: ``(dim, features of the folder's 4 images)``, computed once."""
    gray = np.stack([images.decode(p.read_bytes()) for p in sorted(folder.glob("*.png"))])
    done = {}

    def get(layer, grid):
        if (layer, grid) not in done:
            e = Embedder(
                weights="none",
                pooling="max",
                layer=layer,
                grid=grid,
                batch_size=4,
                precision="float32",
            )
            done[layer, grid] = (e.dim, e.embed(gray))
        return done[layer, grid]

    return get


@pytest.fixture
def no_embedding(monkeypatch):
    """Make any forward pass fail: what runs under it must come from the store."""

    def boom(self, gray):
        raise AssertionError("an image was embedded again")

    monkeypatch.setattr("featclust.embed.Embedder.embed_batch", boom)


def parts(vector_rows, layer, grid):
    """Split ``(n, dim)`` rows into ``{(block, level): (n, level, level, channels)}``.

    The whole maps of the blocks come first, then the cells of each block.
    """
    out, start = {}, 0
    levels = (1, 2, 4)[: {1: 1, 2: 2, 4: 3}[grid]]
    for part in (levels[:1], levels[1:]):
        for block in layer_blocks(layer):
            channels = LAYERS[block][1]
            for g in part:
                size = g * g * channels
                out[block, g] = vector_rows[:, start : start + size].reshape(-1, g, g, channels)
                start += size
    assert start == vector_rows.shape[1]
    return out


def unit(rows):
    """Each row (all but the first axis flattened) divided by its length."""
    flat = rows.reshape(len(rows), -1)
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(rows.shape)


# -- the features ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, grid, dim",
    [
        ("block4", 1, 512),
        ("block4", 2, 5 * 512),
        ("block4+block5", 1, 1024),
        ("block4+block5", 4, 21 * 1024),
        ("block3", 4, 21 * 256),
    ],
)
def test_dim_is_the_length_of_the_features(features, layer, grid, dim):
    n, feats = features(layer, grid)
    assert n == dim
    assert feats.shape == (4, dim) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.any()


def test_each_block_of_a_combination_has_unit_norm(features):
    _, feats = features("block4+block5", 1)
    block4, block5 = feats[:, :512], feats[:, 512:]
    np.testing.assert_allclose(np.linalg.norm(block4, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(block5, axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_the_cells_part_is_grid_weight_times_as_long_as_the_whole_maps(folder, weight):
    gray = np.stack([images.decode(p.read_bytes()) for p in sorted(folder.glob("*.png"))])
    e = Embedder(weights="none", layer="block4+block5", grid=4, grid_weight=weight, batch_size=4)
    feats = e.embed(gray)
    whole, cells = feats[:, :1024], feats[:, 1024:]
    np.testing.assert_allclose(np.linalg.norm(whole, axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cells, axis=1), weight, rtol=1e-5)
    # Within each part, the two blocks weigh the same.
    np.testing.assert_allclose(np.linalg.norm(whole[:, :512], axis=1), 0.5**0.5, rtol=1e-5)
    np.testing.assert_allclose(
        np.linalg.norm(cells[:, : 20 * 512], axis=1), weight * 0.5**0.5, rtol=1e-5
    )


def test_whole_map_part_of_a_grid_is_the_plain_features(features):
    _, plain = features("block4", 1)
    _, grid = features("block4", 2)
    np.testing.assert_allclose(grid[:, :512], unit(plain), rtol=1e-5, atol=1e-6)
    assert not np.allclose(unit(grid[:, 512:1024]), unit(plain))  # a cell is not the whole map


@pytest.mark.parametrize("layer, grid", [("block4", 2), ("block3", 4), ("block4+block5", 4)])
def test_max_of_the_cells_is_the_max_of_the_larger_cell(features, layer, grid):
    # The cells of a level cover the larger cell they lie in (on every map side:
    # 28, 14 and the odd 7), so with max pooling each is the max of its cells.
    # Each part is scaled by its length, so the whole map is compared up to scale.
    _, feats = features(layer, grid)
    p = parts(feats, layer, grid)
    for block in layer_blocks(layer):
        np.testing.assert_allclose(
            unit(p[block, 2].max(axis=(1, 2))), unit(p[block, 1][:, 0, 0]), rtol=1e-5, atol=1e-7
        )
        if grid == 4:
            fine = p[block, 4].reshape(-1, 2, 2, 2, 2, p[block, 4].shape[-1])
            np.testing.assert_allclose(fine.max(axis=(2, 4)), p[block, 2], rtol=1e-6)


def test_grid_cells_cover_the_map_and_nest():
    assert grid_cells(14, 1) == [[(0, 14)]]
    assert grid_cells(28, 4) == [
        [(0, 28)],
        [(0, 14), (14, 28)],
        [(0, 7), (7, 14), (14, 21), (21, 28)],
    ]
    assert grid_cells(7, 2)[1] == [(0, 4), (3, 7)]  # the middle row is in both halves
    for side, _ in LAYERS.values():
        _, halves, quarters = grid_cells(side, 4)
        assert halves[0][0] == quarters[0][0] == 0 and halves[1][1] == quarters[3][1] == side
        assert (quarters[0][0], quarters[1][1]) == halves[0]
        assert (quarters[2][0], quarters[3][1]) == halves[1]


def test_settings_keep_grids_and_combinations_apart():
    # One block's whole map: the key the stores made before grids existed have.
    assert not {"grid", "combine"} & set(
        Embedder(weights="none", layer="block4", grid=1).settings()
    )
    assert (
        Embedder(weights="none", layer="block4+block5").settings()["combine"]
        == "l2 per block, concatenated"
    )
    for layer in LAYERS:
        plain = Embedder(weights="none", layer=layer, grid=1).settings()
        assert not {"grid", "combine"} & set(plain) and plain["layer"] == f"{layer}_pool"
    s = {
        (layer, grid): Embedder(weights="none", layer=layer, grid=grid).settings()
        for layer in ("block4", "block4+block5")
        for grid in (1, 2)
    }
    assert len({json.dumps(v, sort_keys=True) for v in s.values()}) == 4
    assert s["block4", 2]["grid"] == "1x1+2x2" and "combine" not in s["block4", 2]
    assert s["block4+block5", 1]["combine"] and "grid" not in s["block4+block5", 1]
    assert s["block4+block5", 1]["layer"] == "block4_pool+block5_pool"
    # The order of the names does not matter: the same features, the same store.
    assert (
        Embedder(weights="none", layer="block5+block4", grid=2).settings() == s["block4+block5", 2]
    )
    assert Embedder(weights="none", grid=4).settings()["grid"] == "1x1+2x2+4x4"


def test_grid_weight_is_a_feature_setting_only_with_a_grid():
    plain = Embedder(weights="none", grid=1, grid_weight=0.3).settings()
    assert "grid_weight" not in plain and plain == Embedder(weights="none", grid=1).settings()
    half, one = (Embedder(weights="none", grid=2, grid_weight=w).settings() for w in (0.5, 1))
    assert half["grid_weight"] == 0.5 and one["grid_weight"] == 1.0
    assert {k: v for k, v in half.items() if k != "grid_weight"} == {
        k: v for k, v in one.items() if k != "grid_weight"
    }
    for bad in (-0.1, "0.5", True, float("nan"), float("inf")):
        with pytest.raises(UsageError, match=re.escape(f"grid_weight={bad!r}")):
            Embedder(weights="none", grid=2, grid_weight=bad)


def test_the_previous_defaults_features_keep_their_store_key():
    """The grid weight changed no feature without a grid: their stores stay valid."""
    before = {
        "model": "keras.applications.VGG16(include_top=False)",
        "weights": "random:he-uniform:seed=0",
        "layer": "block4_pool+block5_pool",
        "pooling": "max",
        "tta": "none",
        "input_size": 224,
        "resample": "bilinear",
        "preprocess": "gray->3ch,pad-white,vgg16.preprocess_input,decode-v2",
        "precision": "float32",
        "feature_version": 1,
        "dim": 1024,
        "combine": "l2 per block, concatenated",
    }
    e = Embedder(weights="none", layer="block4+block5", grid=1, precision="float32")
    assert e.settings() == before
    # The grid's features did change (the parts are weighed apart): a key of their own.
    assert {"grid_weight", "grid_combine"} <= set(
        Embedder(weights="none", layer="block4+block5", grid=2, precision="float32").settings()
    )


def test_grid_round_trips_through_the_params():
    e = Embedder(weights="none", layer="block4+block5", grid=4)
    params = e.get_params()
    assert params["grid"] == 4 and params["layer"] == "block4+block5"
    assert Embedder.from_params(params).settings() == e.settings()
    assert Embedder.from_params(params, grid=None).grid == 4  # None keeps the saved value
    assert Embedder.from_params({"weights": "none"}).grid == 1  # a record from before grids
    e = Embedder(weights="none", grid=2, grid_weight=0.25)
    assert Embedder.from_params(e.get_params()).settings() == e.settings()


def test_layer_blocks_parses_and_names_a_bad_value():
    assert layer_blocks("block4") == ("block4",)
    assert layer_blocks("block5+block3") == ("block3", "block5")
    for bad in ("block9", "block4+block4", "", "block4+", "block4 + block5", 4, None):
        with pytest.raises(UsageError, match=re.escape(f"layer={bad!r}")):
            layer_blocks(bad)
        with pytest.raises(UsageError, match=re.escape(f"layer={bad!r}")):
            Embedder(weights="none", layer=bad)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"grid": 3}, "grid=3"),
        ({"grid": True}, "grid=True"),
        ({"grid": "2"}, "grid='2'"),
        ({"pooling": "flatten", "grid": 2}, "pooling='flatten'"),
        ({"pooling": "flatten", "layer": "block4+block5"}, "pooling='flatten'"),
    ],
)
def test_bad_grid_and_flatten_with_cells_or_blocks_are_refused(params, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        Embedder(weights="none", **params)


def test_flatten_of_one_block_still_works():
    e = Embedder(weights="none", pooling="flatten", layer="block5", grid=1)
    assert e.dim == 7 * 7 * 512 and "grid" not in e.settings()


# -- the command line ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sorted_grid(folder, tmp_path_factory):
    """``featclust embed`` then ``featclust sort`` with grid 2 and block4+block5."""
    base = tmp_path_factory.mktemp("grid-cli")
    store, out = base / "store", base / "sorted"
    embedded = run("embed", folder, *GRID_OPTIONS, *COMMON, "--store", store)
    assert embedded[0] == 0, embedded[2]
    sorted_ = run(
        "sort", folder, out, "-k", "2", "--no-report", *GRID_OPTIONS, *COMMON, "--store", store
    )
    assert sorted_[0] == 0, sorted_[2]
    return {"base": base, "store": store, "out": out, "embed": embedded, "sort": sorted_}


def test_sort_reuses_what_embed_stored(sorted_grid):
    assert "images: 4 (4 embedded, 0 reused)" in sorted_grid["embed"][1]
    assert "images: 4 (0 embedded, 4 reused)" in sorted_grid["sort"][1]
    assert len(read_csv(sorted_grid["out"] / "labels.csv")) == 4


def test_sort_records_the_grid_and_the_blocks(sorted_grid):
    record = open_sorted(sorted_grid["out"]).record
    assert record.embedder["grid"] == 2 and record.embedder["layer"] == "block4+block5"
    assert record.feature_settings["grid"] == "1x1+2x2"
    assert record.feature_settings["layer"] == "block4_pool+block5_pool"
    assert record.feature_settings["dim"] == GRID_DIM
    e = embedder_for(open_sorted(sorted_grid["out"]))
    assert (e.grid, e.layer, e.dim) == (2, "block4+block5", GRID_DIM)


def test_assign_embeds_new_images_with_the_sorts_features(sorted_grid, tmp_path, monkeypatch):
    new = stripes(tmp_path / "new.png")
    code, stdout, stderr = run("assign", sorted_grid["out"], new)  # no feature option
    assert code == 0, stderr
    (row,) = read_csv_text(stdout)
    assert row["path"] == str(new) and row["cluster"] in ("0", "1")
    # Again: the image's grid-2 features come from the store.
    monkeypatch.setattr(
        "featclust.embed.Embedder.embed_batch",
        lambda self, gray: pytest.fail("an image was embedded again"),
    )
    code, again, stderr = run("assign", sorted_grid["out"], new)
    assert code == 0, stderr
    assert read_csv_text(again)[0]["distance"] == row["distance"]


def test_assign_of_the_sorted_images_reuses_the_store(sorted_grid, folder, no_embedding):
    # The store is keyed by the feature settings: only grid-2, block4+block5
    # features are found without embedding.
    for options in ([], GRID_OPTIONS, ["--grid", "2", "--layer", "block5+block4"]):
        code, stdout, stderr = run("assign", sorted_grid["out"], folder, *options)
        assert code == 0, stderr
        labels = {r["path"]: r["cluster"] for r in read_csv(sorted_grid["out"] / "labels.csv")}
        rows = read_csv_text(stdout)
        assert len(rows) == 4
        assert all(labels[r["path"].rsplit("/", 1)[-1]] == r["cluster"] for r in rows)


@pytest.mark.parametrize(
    "option, named",
    [
        (["--grid", "1"], "grid"),
        (["--grid", "4"], "grid"),
        (["--layer", "block4"], "layer"),
        (["--layer", "block4+block5+block3"], "layer"),
        (["--pooling", "flatten"], "flatten"),
    ],
)
def test_assign_refuses_other_grids_and_blocks(sorted_grid, folder, option, named):
    some = min(folder.glob("*.png"))
    code, stdout, stderr = run("assign", sorted_grid["out"], some, *option)
    assert code == 2 and stdout == ""
    assert errors(stderr) == [line for line in stderr.splitlines() if line]  # no warning
    (line,) = errors(stderr)
    assert line.startswith("featclust: error: ") and "built with other feature settings" in line
    assert named in line


@pytest.mark.parametrize("command", ["sort", "embed", "assign", "similar"])
def test_bad_layer_is_one_line_and_exit_2(sorted_grid, folder, tmp_path, command):
    argv = {
        "sort": ["sort", folder, tmp_path / "out", "-k", "2", *COMMON],
        "embed": ["embed", folder, *COMMON],
        "assign": ["assign", sorted_grid["out"], min(folder.glob("*.png"))],
        "similar": ["similar", folder, min(folder.glob("*.png")), *COMMON],
    }[command]
    code, stdout, stderr = run(*argv, "--layer", "block9", "--store", tmp_path / "store")
    assert code == 2 and stdout == ""
    lines = [line for line in stderr.splitlines() if line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("featclust: error: layer='block9' must be one of block3")
    assert "cannot be used now" not in lines[0]  # not blamed on the model's weights
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_bad_grid_and_flatten_with_grid_are_refused(folder, tmp_path):
    code, _, stderr = run("embed", folder, "--grid", "3", *COMMON)
    assert code == 2 and "--grid" in stderr and "invalid choice" in stderr
    code, _, stderr = run(
        "embed",
        folder,
        "--grid",
        "2",
        "--pooling",
        "flatten",
        *COMMON,
        "--store",
        tmp_path / "store",
    )
    assert code == 2
    assert [line for line in stderr.splitlines() if line] == [stderr.strip()]
    assert stderr.startswith("featclust: error: pooling='flatten'") and "grid=2" in stderr


def test_feature_option_defaults_are_the_embedders():
    defaults = {k: p.default for k, p in inspect.signature(Embedder).parameters.items()}
    for argv in (
        ["embed", "x"],
        ["sort", "x", "y", "-k", "2"],
        ["similar", "x", "q"],
        ["scan-k", "x"],
        ["duplicates", "x", "y"],
        ["demo", "y"],
    ):
        args = build_parser().parse_args(argv)
        assert {
            k: getattr(args, k) for k in ("weights", "pooling", "precision", "layer", "grid")
        } == {k: defaults[k] for k in ("weights", "pooling", "precision", "layer", "grid")}
    args = build_parser().parse_args(["assign", "out", "x"])  # assign: the model's
    assert args.grid is None and args.layer is None and args.pooling is None
    assert build_parser().parse_args(["embed", "x", "--grid", "4"]).grid == 4


def test_help_says_what_the_grids_are(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sort", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--grid {1,2,4}" in text and "2x2" in text and "4x4" in text
    assert "BLOCK[+BLOCK]" in text and "block4+block5" in text


# -- the estimator and records of other versions -------------------------------------------


def test_estimator_takes_grid_like_any_parameter(sorted_grid, folder, no_embedding):
    est = ImageClusterer(
        n_clusters=2,
        weights="none",
        layer="block4+block5",
        grid=2,
        batch_size=4,
        store=sorted_grid["store"],
        progress=False,
    )
    assert est.get_params()["grid"] == 2 and clone(est).grid == 2
    assert ImageClusterer().grid == inspect.signature(Embedder).parameters["grid"].default
    est.fit(folder)  # the CLI's features: nothing is embedded
    assert est.features_.shape == (4, GRID_DIM) and est.embedder_.grid == 2
    again = ImageClusterer.from_output(sorted_grid["out"])
    assert (again.grid, again.layer) == (2, "block4+block5")
    assert again.predict(folder).shape == (4,)


def test_estimator_validates_grid_in_fit(folder, tmp_path):
    est = ImageClusterer(n_clusters=2, weights="none", grid=3, store=tmp_path / "store")
    with pytest.raises(UsageError, match="grid=3"):
        est.fit(folder)
    assert not (tmp_path / "store").exists()  # refused before anything was embedded


def test_record_from_before_grids_gives_whole_map_features(sorted_grid, tmp_path):
    # A sort of an earlier version records no "grid": its features were of the whole map.
    plain = Embedder(weights="none", batch_size=4, grid=1)
    params = {k: v for k, v in plain.get_params().items() if k not in ("grid", "grid_weight")}
    old = SimpleNamespace(
        record=SimpleNamespace(embedder=params, feature_settings=plain.settings()), path=tmp_path
    )
    e = embedder_for(old)
    assert e.grid == 1 and e.settings() == plain.settings()
    with pytest.raises(ModelMismatchError, match="grid"):
        embedder_for(old, grid=2)


def test_model_of_flatten_features_refuses_a_grid(sorted_grid, tmp_path):
    # Values that are fine alone but cannot go with the model's: a mismatch, not a crash.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("featclust.json", "model.npz"):
        shutil.copy(sorted_grid["out"] / name, copy / name)
    info = json.loads((copy / "featclust.json").read_text())
    info["embedder"].update(pooling="flatten", grid=1, layer="block5")
    (copy / "featclust.json").write_text(json.dumps(info))
    with pytest.raises(ModelMismatchError, match="built with other feature settings"):
        embedder_for(open_sorted(copy), grid=2)


def test_the_report_names_the_grid_and_its_weight():
    from featclust.report.page import _features_words

    emb = Embedder(weights="none").get_params()
    words = _features_words(emb)
    assert "over the whole map and its 2x2 and 4x4 cells (cells weighted 0.4)" in words
    assert "cells" not in _features_words({**emb, "grid": 1})


def test_follow_up_hints_name_the_grid_weight_only_where_it_counts():
    from featclust.assign import _params_of_settings
    from featclust.cli import _feature_options

    plain = Embedder(weights="none", layer="block4+block5", grid=1, precision="float32")
    words = _feature_options(_params_of_settings(plain.settings()))
    assert "--grid 1" in words and "--layer block4+block5" in words
    assert "--grid-weight" not in words  # without a grid the weight changes nothing
    weighted = Embedder(weights="none", grid=2, grid_weight=0.7, precision="float32")
    params = _params_of_settings(weighted.settings())
    assert params["grid_weight"] == 0.7 and "--grid-weight 0.7" in _feature_options(params)
