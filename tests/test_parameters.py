"""One source per parameter: every parameter of Embedder and FeatureKMeans reaches the user
through ImageClusterer, sort_folder and the command line, with the class's default; the
jobs take their options by keyword; the public names are importable and documented; the
command line describes each table with the columns tables.py writes."""

import importlib
import inspect
import io
import types

import numpy as np
import pytest

import featclust
from featclust import ImageClusterer, tables
from featclust.cli import _flags, build_parser
from featclust.cli_options import cluster_params, columns, embedder_params
from featclust.cluster import DEFAULTS as CLUSTER_DEFAULTS
from featclust.cluster import FeatureKMeans
from featclust.clusterjobs import sort_folder
from featclust.embed import DEFAULTS as EMBED_DEFAULTS
from featclust.embed import Embedder
from featclust.fileio import read_csv
from featclust.images import BadFile
from featclust.kscan import DEFAULTS as KSCAN_DEFAULTS


def _defaults(f):
    return {
        name: p.default
        for name, p in inspect.signature(f).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_the_defaults_tables_are_the_signatures():
    assert EMBED_DEFAULTS == _defaults(Embedder)
    assert CLUSTER_DEFAULTS == _defaults(FeatureKMeans)
    assert set(EMBED_DEFAULTS) == {
        "weights",
        "pooling",
        "precision",
        "batch_size",
        "seed",
        "jit_compile",
        "layer",
        "tta",
        "grid",
        "grid_weight",
    }
    assert set(CLUSTER_DEFAULTS) == {
        "n_clusters",
        "pca",
        "whiten",
        "normalize",
        "random_state",
        "n_init",
        "method",
        "fit_sample",
    }


def test_image_clusterer_takes_every_parameter_with_the_class_default():
    params = ImageClusterer().get_params()
    assert set(params) == set(EMBED_DEFAULTS) | set(CLUSTER_DEFAULTS) | {"store", "progress"}
    for name, default in {**EMBED_DEFAULTS, **CLUSTER_DEFAULTS}.items():
        assert params[name] == default, name


def test_image_clusterer_builds_the_two_classes_from_its_parameters():
    given = {
        "weights": "none",
        "pooling": "avg",
        "precision": "float32",
        "batch_size": 4,
        "seed": 9,
        "jit_compile": False,
        "layer": "block5",
        "tta": True,
        "grid": 2,
        "grid_weight": 0.7,
        "pca": 5,
        "whiten": True,
        "normalize": False,
        "random_state": 3,
        "n_init": 2,
        "method": "ward",
        "fit_sample": 500,
    }
    assert set(given) == set(EMBED_DEFAULTS) | set(CLUSTER_DEFAULTS) - {"n_clusters"}
    est = ImageClusterer(n_clusters=3, **given)
    assert est._embedder().get_params() == {n: given[n] for n in EMBED_DEFAULTS}
    model = est._model(3)
    assert model.get_params() == {
        "n_clusters": 3,
        **{n: given[n] for n in CLUSTER_DEFAULTS if n != "n_clusters"},
    }
    with pytest.raises(featclust.UsageError, match="n_init=0"):
        ImageClusterer(n_init=0).fit("never/embedded")  # checked before anything is read


def test_sort_folder_takes_every_parameter_with_the_class_default():
    signature = inspect.signature(sort_folder).parameters
    defaults = _defaults(sort_folder)
    for name, default in CLUSTER_DEFAULTS.items():
        assert defaults[name] == default, name
        assert signature[name].kind is inspect.Parameter.KEYWORD_ONLY
    # the embedder's parameters go through **embedder_params to Embedder
    assert signature["embedder_params"].kind is inspect.Parameter.VAR_KEYWORD
    assert not set(EMBED_DEFAULTS) & set(signature)


def test_scan_folder_takes_the_scan_defaults():
    defaults = _defaults(featclust.scan_folder)
    for name in ("ks", "pca", "normalize", "random_state", "fit_sample"):
        assert defaults[name] == KSCAN_DEFAULTS[name], name


def test_the_command_line_has_every_parameter_with_the_class_default():
    parser = build_parser()
    args = parser.parse_args(["sort", "IN", "OUT"])
    assert embedder_params(args) == EMBED_DEFAULTS
    assert cluster_params(args) == CLUSTER_DEFAULTS
    assert args.n_clusters == 8  # README: `featclust sort IN OUT` without -k makes 8 clusters
    sort_parser = next(a for a in parser._actions if a.dest == "command").choices["sort"]
    flags = _flags(sort_parser)
    assert set(EMBED_DEFAULTS) | set(CLUSTER_DEFAULTS) <= set(flags)
    assert flags["random_state"] == "--seed" and flags["seed"] == "--weights-seed"
    args = parser.parse_args(
        [
            "sort",
            "IN",
            "OUT",
            "-k",
            "auto",
            "--whiten",
            "--n-init",
            "3",
            "--fit-sample",
            "all",
            "--weights-seed",
            "5",
            "--jit-compile",
            "--no-tta",
            "--seed",
            "7",
        ]
    )
    assert cluster_params(args) == {
        **CLUSTER_DEFAULTS,
        "n_clusters": "auto",
        "whiten": True,
        "n_init": 3,
        "fit_sample": None,
        "random_state": 7,
    }
    assert embedder_params(args) == {**EMBED_DEFAULTS, "seed": 5, "jit_compile": True, "tta": False}
    scan = parser.parse_args(["scan-k", "IN"])
    for name in ("pca", "normalize", "random_state", "fit_sample"):
        assert getattr(scan, name) == KSCAN_DEFAULTS[name], name


def test_commands_on_a_sorted_folder_take_the_recorded_settings():
    args = build_parser().parse_args(["assign", "OUT", "new.png"])
    assert embedder_params(args) == dict.fromkeys(EMBED_DEFAULTS)  # None: as recorded


#: The inputs a job takes by position; every other parameter is keyword-only.
POSITIONAL = {
    "embed_folder": ["image_dir"],
    "embed_inputs": ["inputs"],
    "scan_folder": ["image_dir"],
    "sort_folder": ["image_dir", "out_dir"],
    "assign_images": ["sorted_folder", "inputs"],
    "place_images": ["sorted_folder", "assignment"],
    "similar_images": ["image_dir", "queries"],
    "find_duplicates": ["image_dir", "out_dir"],
    "demo": ["out_dir"],
    "open_sorted": ["out_dir"],
    "write_report": ["out_dir"],
}


@pytest.mark.parametrize("name", sorted(POSITIONAL))
def test_jobs_take_their_options_by_keyword(name):
    params = inspect.signature(getattr(featclust, name)).parameters.values()
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional == POSITIONAL[name]


def test_every_public_job_is_checked_for_keyword_options():
    jobs = {n for n in featclust.__all__ if isinstance(getattr(featclust, n), types.FunctionType)}
    assert jobs == set(POSITIONAL)


@pytest.mark.parametrize("name", featclust.__all__)
def test_every_public_name_is_importable_and_documented(name):
    value = getattr(importlib.import_module("featclust"), name)
    if name == "__version__":
        assert isinstance(value, str) and value
    else:
        assert inspect.getdoc(value), f"{name} has no docstring"


def test_result_types_are_named_one_way():
    not_results = {"Embedder", "FeatureKMeans", "ImageClusterer", "KScan", "SortedFolder"}
    classes = [
        n
        for n in featclust.__all__
        if isinstance(getattr(featclust, n), type)
        and not issubclass(getattr(featclust, n), Exception)
    ]
    assert [n for n in classes if n not in not_results and not n.endswith("Result")] == []


def _header(text):
    return tuple(next(iter(io.StringIO(text))).rstrip("\r\n").split(","))


class _Truth:
    classes = ("a", "b")
    contingency = np.array([[2, 0, 1], [0, 3, 0]])


def _written():
    """The header each writer of tables.py writes, by the name COLUMNS gives it."""
    scores = {c: np.array([1.0, 2.0]) for c in tables.KSCAN_COLUMNS}
    scores["k"] = np.array([2, 3])
    cluster_row = {
        "cluster": 0,
        "size": 3,
        "mean_distance": 0.1,
        "p95_distance": 0.2,
        "max_distance": 0.3,
        "tiny": False,
        "loose": True,
    }
    return {
        "labels.csv": tables.labels_csv(["a.png"], [0], [0.5], [False]),
        "bad_files.csv": tables.bad_files_csv([BadFile("x.png", "truncated")]),
        "clusters.csv": tables.clusters_csv([cluster_row]),
        "truth.csv": tables.truth_csv(_Truth()),
        "kscan.csv": tables.kscan_csv(scores, 2),
        "duplicates.csv": tables.duplicates_csv([[("a.png", 1.0), ("b.png", 0.99)]]),
        "identical.csv": tables.identical_csv([["a.png", "b.png"]]),
        "assign": tables.labels_csv(["a.png"], [0], [0.5], [True]),
        "similar": tables.similar_csv([("q.png", "a.png", 0.9, 1)]),
    }


def test_columns_are_what_the_writers_write(tmp_path):
    written = _written()
    assert set(written) == set(tables.COLUMNS)
    for name, text in written.items():
        header = _header(text)
        want = tables.COLUMNS[name]
        if "cluster_*" in want:  # one column per cluster
            i = want.index("cluster_*")
            k = len(header) - len(want) + 1
            want = want[:i] + tuple(f"cluster_{c}" for c in range(k)) + want[i + 1 :]
        assert header == want, name
        (tmp_path / "t.csv").write_text(text)
        assert len(read_csv(tmp_path / "t.csv")) >= 1


def test_the_command_line_help_names_every_column():
    parser = build_parser()
    helps = []
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for sub in commands.values():
        helps.append(sub.format_help())
    text = " ".join(" ".join(h.split()) for h in helps)
    for name, cols in tables.COLUMNS.items():
        for col in cols:
            shown = "cluster_0" if col == "cluster_*" else col
            assert shown in text, (name, col)
        if name.endswith(".csv"):
            assert " ".join(columns(name).split()) in text, name  # the file and its columns


def test_a_job_takes_the_embedder_or_its_parameters_not_both(tmp_path):
    (tmp_path / "in").mkdir()
    both = {"embedder": Embedder(weights="none"), "weights": "none"}
    with pytest.raises(featclust.UsageError, match="not both"):
        sort_folder(tmp_path / "in", tmp_path / "out", **both)
    with pytest.raises(featclust.UsageError, match="not both"):
        featclust.scan_folder(tmp_path / "in", **both)
