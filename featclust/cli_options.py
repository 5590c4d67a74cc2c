"""The options of the ``featclust`` command, derived from the library's parameters.

Every option that sets a parameter of :class:`~featclust.embed.Embedder` or
:class:`~featclust.cluster.FeatureKMeans` is stored under that parameter's
name (``--seed`` sets ``random_state``, ``--weights-seed`` sets ``seed``)
with the class's default, so :func:`embedder_params` and
:func:`cluster_params` are the keyword arguments of the two classes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .checks import MAX_SEED
from .cluster import DEFAULTS as CLUSTER_DEFAULTS
from .cluster import MAX_WARD_IMAGES, METHODS
from .device import PRECISIONS
from .embed import CPU_BATCH_SIZE, GPU_BATCH_SIZE
from .embed import DEFAULTS as EMBED_DEFAULTS
from .kscan import DEFAULTS as KSCAN_DEFAULTS
from .pooling import GRIDS, LAYERS, POOLINGS, layer_blocks
from .report import MAP_METHODS
from .sort import MODES
from .tables import COLUMNS


def int_type(low: int = 1, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer within ``[low, high]``, checked before any work starts."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{text!r} must be an integer {bounds}")
        return value

    return parse


positive_int = int_type(1)


def _k_value(text):
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a positive integer nor 'auto'"
        ) from None


def _pca_value(text):
    if text.lower() == "none":
        return None
    return positive_int(text)


def _fit_sample_value(text):
    if text == "all":
        return None
    return int_type(2)(text)


def unit_float(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number from 0 to 1")
    return value


def _on_off(value):
    return "on" if value else "off"


def columns(name: str) -> str:
    """``"labels.csv (path, cluster, ...)"``: a table and its columns, as tables.py writes them."""
    cols = ", ".join("cluster_0, cluster_1, ..." if c == "cluster_*" else c for c in COLUMNS[name])
    return f"{name} ({cols})" if name.endswith(".csv") else cols


def _map_shape(layer):
    """``"14x14x512"`` for ``"block4"``, joined by ``+`` for several blocks."""
    return "+".join("{0}x{0}x{1}".format(*LAYERS[b]) for b in layer_blocks(layer))


def embedder_params(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~featclust.embed.Embedder` keyword arguments of parsed options."""
    return {name: getattr(args, name) for name in EMBED_DEFAULTS}


def cluster_params(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~featclust.cluster.FeatureKMeans` keyword arguments of parsed options."""
    return {name: getattr(args, name) for name in CLUSTER_DEFAULTS}


def feature_options(
    p: argparse.ArgumentParser, from_model: bool = False, from_folder: bool = True
) -> None:
    """The options that decide the features; defaults come from a saved model with
    ``from_model``, else (``from_folder``) from IMAGE_DIR's earlier embedding, if any."""
    g = p.add_argument_group(
        "features"
        + (
            " (default: as the model in OUT_DIR was built; other values are refused)"
            if from_model
            else " (without --weights, --weights-seed, --layer, --pooling, --grid, "
            "--grid-weight, --tta or --precision: as IMAGE_DIR was embedded before, if it was)"
            if from_folder
            else ""
        )
    )
    d = EMBED_DEFAULTS  # the Embedder's own

    def default(text):
        return "" if from_model else f" (default: {text})"

    g.add_argument(
        "--weights",
        default=d["weights"],
        metavar="imagenet|none|PATH",
        help="VGG16 weights: 'imagenet' (downloaded once by Keras), 'none' (random, "
        "seeded: for trying things offline) or a local .h5/.weights.h5 file"
        + default(d["weights"]),
    )
    g.add_argument(
        "--weights-seed",
        dest="seed",
        type=int_type(0, MAX_SEED),
        default=d["seed"],
        metavar="N",
        help="seed of the random weights of --weights none" + default(d["seed"]),
    )
    # Checked by the library (featclust.pooling.layer_blocks), so a bad value is one line.
    g.add_argument(
        "--layer",
        default=d["layer"],
        metavar="BLOCK[+BLOCK]",
        help=f"the VGG16 block whose pooled output is the feature map "
        f"({', '.join(LAYERS)}), or several joined by '+' (block4+block5: "
        f"each L2-normalised, then concatenated)"
        + default(f"{d['layer']}, {_map_shape(d['layer'])}; see benchmarks/quality.py"),
    )
    g.add_argument(
        "--pooling",
        choices=POOLINGS,
        default=d["pooling"],
        help="how the feature map becomes a vector: mean, maximum, generalised "
        "mean (p=3) or the whole map" + default(d["pooling"]),
    )
    g.add_argument(
        "--grid",
        type=int,
        choices=GRIDS,
        default=d["grid"],
        help="where to pool: 1 the whole map; 2 also its 2x2 cells; 4 also its 2x2 "
        "and 4x4 cells (so layout counts)" + default(d["grid"]),
    )
    # Checked by the library (Embedder), as --layer is.
    g.add_argument(
        "--grid-weight",
        type=float,
        default=d["grid_weight"],
        metavar="W",
        help="with --grid 2 or 4: how much the cells count, as the length of their "
        "part against the whole map's (each L2-normalised); 0 leaves layout out"
        + default(f"{d['grid_weight']:g}"),
    )
    g.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=d["tta"],
        help="average the features of the 8 flips and 90-degree rotations of each "
        "image, for shapes whose orientation should not matter; 8 times the "
        "embedding time, stored apart from the plain features" + default(_on_off(d["tta"])),
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d["precision"],
        help="compute precision of the model" + default(d["precision"]),
    )
    g.add_argument(
        "--batch-size",
        type=positive_int,
        default=d["batch_size"],
        metavar="N",
        help=f"images per forward pass (default: {CPU_BATCH_SIZE} on a CPU, "
        f"{GPU_BATCH_SIZE} on a GPU)",
    )
    g.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default=d["jit_compile"],
        help="compile the model with XLA (default: on a GPU only)",
    )
    store_option(g)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    if from_model:
        p.set_defaults(**dict.fromkeys(EMBED_DEFAULTS))


def store_option(g: Any) -> None:
    g.add_argument(
        "--store",
        metavar="DIR",
        help="feature store root (default: featclust's folder in the platform's "
        "cache folder, e.g. ~/.cache/featclust/store on Linux; "
        "$XDG_CACHE_HOME is honoured)",
    )


def dask_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dask",
        metavar="ADDRESS|local:N",
        help="embed on a Dask cluster: a scheduler address (tcp://host:8786) or "
        "local:N (N worker processes on this machine); images and the store "
        "must be on a filesystem every worker sees (pip install "
        "'featclust[dask]')",
    )


def _fit_sample_option(g, d):
    default = "all" if d["fit_sample"] is None else d["fit_sample"]
    g.add_argument(
        "--fit-sample",
        type=_fit_sample_value,
        default=d["fit_sample"],
        metavar="N|all",
        help="fit the reduction and k-means on a random sample of at most N images, "
        f"then label every image; all: fit on every image (default: {default})",
    )


def _seed_option(g, d):
    g.add_argument(
        "--seed",
        dest="random_state",
        type=int_type(0, MAX_SEED),
        default=d["random_state"],
        metavar="N",
        help=f"random seed of the clustering, 0 to {MAX_SEED} (default: {d['random_state']})",
    )


def reduction_options(g: Any, d: dict[str, Any]) -> None:
    """``--pca``, ``--normalize``, ``--seed`` and ``--fit-sample``, with the defaults ``d``."""
    g.add_argument(
        "--pca",
        type=_pca_value,
        default=d["pca"],
        metavar="N|none",
        help="reduce the features to N PCA components (at most the number of "
        "images) before k-means; 'none': no PCA"
        f" (default: {str(d['pca']).lower()})",
    )
    g.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        default=d["normalize"],
        help="L2-normalise the features before and after PCA (cosine k-means)"
        f" (default: {_on_off(d['normalize'])})",
    )
    _seed_option(g, d)
    _fit_sample_option(g, d)


def scan_options(p: argparse.ArgumentParser) -> None:
    """The options of ``scan-k`` that set parameters of :class:`~featclust.kscan.KScan`."""
    p.add_argument(
        "-k",
        "--clusters",
        "--k",
        dest="k",
        default="2:30",
        metavar="A:B",
        help="the ks to try, A to B inclusive (default: 2:30)",
    )
    p.add_argument(
        "--step",
        type=positive_int,
        default=1,
        metavar="N",
        help="try every N-th k of the range (default: 1)",
    )
    reduction_options(p, KSCAN_DEFAULTS)


def cluster_options(p: argparse.ArgumentParser) -> None:
    """Every parameter of :class:`~featclust.cluster.FeatureKMeans`, and ``--mode``."""
    d = CLUSTER_DEFAULTS
    g = p.add_argument_group("clustering")
    g.add_argument(
        "-k",
        "--clusters",
        dest="n_clusters",
        type=_k_value,
        default=d["n_clusters"],
        metavar="K|auto",
        help="number of clusters, or 'auto': the k that scan-k suggests "
        "among 2..30 (its table is written to OUT_DIR/kscan.csv)"
        f" (default: {d['n_clusters']})",
    )
    reduction_options(g, d)
    g.add_argument(
        "--whiten",
        action=argparse.BooleanOptionalAction,
        default=d["whiten"],
        help=f"whiten the PCA components (default: {_on_off(d['whiten'])})",
    )
    g.add_argument(
        "--n-init",
        type=positive_int,
        default=d["n_init"],
        metavar="N",
        help=f"k-means restarts; the best wins (default: {d['n_init']})",
    )
    g.add_argument(
        "--method",
        choices=METHODS,
        default=d["method"],
        help="k-means or Ward agglomerative clustering (the means of its groups "
        "become the centres); Ward needs memory for all pairs of the images "
        f"it is fitted on: at most {MAX_WARD_IMAGES:,} (see --fit-sample) "
        f"(default: {d['method']})",
    )
    g.add_argument(
        "--mode",
        choices=MODES,
        default="copy",
        help="how images get into the cluster folders (default: copy)",
    )


def report_options(p: argparse.ArgumentParser, with_switch: bool = True) -> None:
    g = p.add_argument_group("report")
    if with_switch:
        g.add_argument(
            "--no-report",
            action="store_true",
            help="do not write OUT_DIR/report/ (montages, map, index.html)",
        )
    g.add_argument(
        "--map",
        dest="map_method",
        choices=MAP_METHODS,
        default="auto",
        help="2-D map of the report: t-SNE, PCA (fast, for very large sets) or "
        "auto (the default: t-SNE up to its size limit, PCA above)",
    )
