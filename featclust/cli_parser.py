"""The ``featclust`` command's parser: its commands, their help and examples.

The options themselves, derived from the library's parameters, are in
:mod:`featclust.cli_options`.
"""

from __future__ import annotations

import argparse
import textwrap

from ._version import __version__
from .cli_options import (
    cluster_options,
    columns,
    dask_option,
    feature_options,
    positive_int,
    report_options,
    scan_options,
    store_option,
    unit_float,
)
from .sort import MODES

_IMAGE_DIR_HELP = "the folder of images (searched recursively; it is never changed)"
_OUT_DIR_HELP = "the output folder: new, empty, or written by an earlier featclust sort"


def _examples(*lines):
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _sub(sub, name, help, description, examples):
    return sub.add_parser(
        name,
        help=help,
        description=textwrap.fill(description, 79),
        epilog=_examples(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``featclust`` command."""
    parser = argparse.ArgumentParser(
        prog="featclust",
        description="Find groups of similar images: embed with VGG16, cluster with k-means, "
        "copy into one folder per cluster.",
        epilog=_examples(
            "featclust sort photos/ sorted/ -k 8", "featclust demo demo-out/ --weights none"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"featclust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _sub(
        sub,
        "sort",
        "embed, cluster and copy images into cluster folders",
        "Embed what is not in the store yet, cluster with k-means and copy every image "
        "into OUT_DIR/cluster_XX/, with "
        + ", ".join(columns(name) for name in ("labels.csv", "clusters.csv", "bad_files.csv"))
        + " and a report; with --truth also "
        + columns("truth.csv")
        + ".",
        [
            "featclust sort photos/ sorted/ -k 8",
            ("featclust sort sorted/cluster_03 split/ -k 4   # refine one cluster; embeds nothing"),
        ],
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    p.add_argument("out_dir", metavar="OUT_DIR", help=_OUT_DIR_HELP)
    cluster_options(p)
    p.add_argument(
        "--truth",
        metavar="CSV",
        help="known classes of some images (columns path,label; paths relative to "
        "IMAGE_DIR): report adjusted Rand index, NMI and a contingency table "
        "(OUT_DIR/truth.csv)",
    )
    p.add_argument(
        "--discard-edits",
        action="store_true",
        help="sort into a folder a person edited (move, merge, rename ...), throwing "
        "the edits away",
    )
    feature_options(p)
    dask_option(p)
    report_options(p)

    p = _sub(
        sub,
        "scan-k",
        "score k-means for a range of k and suggest one",
        "Fit k-means for every k of a range on the stored features (embedding only what "
        "is missing), print inertia, silhouette, Davies-Bouldin, Calinski-Harabasz and "
        "stability per k, and suggest a k with the reason.",
        [
            "featclust scan-k photos/ -k 2:30",
            "featclust scan-k photos/ -k 5:50 --step 5 --out scan/",
        ],
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    scan_options(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        help=f"write {columns('kscan.csv')} and kscan.png (the scores against k) "
        "into DIR: a new or empty folder, or a featclust output such as a "
        "sorted folder",
    )
    feature_options(p)
    dask_option(p)

    p = _sub(
        sub,
        "assign",
        "assign new images to the clusters of a sorted folder",
        "Embed the given images (through the feature store) with the settings the model "
        f"in OUT_DIR was built with, and print CSV: {columns('assign')}. outlier "
        "is true when the image is farther from its cluster's centre than 95% of the "
        "cluster's own members. With --place, also copy each image into its cluster's "
        "folder and add it to labels.csv.",
        [
            "featclust assign sorted/ new.png more-new/",
            "featclust assign sorted/ incoming/ --place",
        ],
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="a folder written by featclust sort")
    p.add_argument(
        "inputs",
        metavar="IMAGE_OR_DIR",
        nargs="+",
        help="image files and folders of images to assign",
    )
    p.add_argument(
        "--place",
        nargs="?",
        const="model",
        choices=("model", *MODES),
        metavar="MODE",
        help="also put each image into its cluster's folder: by the "
        "sort's --mode (the default) or copy|symlink|hardlink",
    )
    feature_options(p, from_model=True)

    p = _sub(
        sub,
        "embed",
        "fill the feature store only",
        "Embed the images of IMAGE_DIR that are not in the store yet.",
        [
            "featclust embed photos/",
            "featclust embed photos/ --store /data/featclust",
            "featclust embed photos/ --dask local:4",
        ],
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    feature_options(p)
    dask_option(p)

    p = _sub(
        sub,
        "similar",
        "list the images of a folder most similar to query images",
        "For each query image, the most similar images of IMAGE_DIR by cosine similarity "
        "of the stored features (queries that are not in the store are embedded through "
        f"it), as CSV on stdout: {columns('similar')}.",
        ["featclust similar photos/ photos/cat.png --top 5", "featclust similar photos/ queries/"],
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    p.add_argument(
        "queries", metavar="QUERY", nargs="+", help="query image files, or folders of them"
    )
    p.add_argument(
        "--top",
        type=positive_int,
        default=10,
        metavar="N",
        help="similar images per query (default: 10)",
    )
    feature_options(p)

    p = _sub(
        sub,
        "duplicates",
        "find near-duplicate and byte-identical images",
        "Group the images of IMAGE_DIR whose features are near-identical (cosine "
        "similarity at least the threshold), and separately byte-identical files; write "
        f"{columns('duplicates.csv')}, {columns('identical.csv')} and duplicates.html "
        "into OUT_DIR.",
        [
            "featclust duplicates photos/ dups/",
            "featclust duplicates photos/ dups/ --threshold 0.98",
        ],
    )
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    p.add_argument(
        "out_dir",
        metavar="OUT_DIR",
        help="where the tables and duplicates.html go (new, empty or written by featclust)",
    )
    p.add_argument(
        "--threshold",
        type=unit_float,
        default=None,
        metavar="T",
        help="cosine similarity from which two images count as near-duplicates, "
        "0 to 1 (default: the one measured in benchmarks/near_duplicates.py)",
    )
    feature_options(p)

    p = _sub(
        sub,
        "demo",
        "sort a built-in sample set of dot-pattern images",
        "Write a small set of dot-pattern images (rings, lines, grids, clusters) and sort "
        "it into OUT_DIR.",
        [
            "featclust demo demo-out/ --weights none",
            "featclust demo demo-out/ --images demo-images/",
        ],
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help=_OUT_DIR_HELP)
    p.add_argument(
        "--images",
        metavar="DIR",
        help="where to write the sample images (default: featclust's cache folder)",
    )
    feature_options(p)
    report_options(p)

    p = _sub(
        sub,
        "report",
        "write the report of a sorted folder again",
        "Re-create OUT_DIR/report/ (montages, galleries, overview, 2-D map, index.html) "
        "from a folder written by sort; the features are read from the feature store the "
        "sort used.",
        ["featclust report sorted/", "featclust report sorted/ --map pca"],
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="a folder written by featclust sort")
    report_options(p, with_switch=False)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = _sub(
        sub,
        "store",
        "look after the feature store",
        "gc: drop the stored features no existing image folder uses any more (folders "
        "that were deleted, images that were removed).",
        ["featclust store gc --dry-run", "featclust store gc --store /data/featclust"],
    )
    p.add_argument("action", choices=("gc",), help="what to do: gc (collect garbage)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be dropped")
    store_option(p)
    _edit_commands(sub)
    return parser


_CLUSTER_HELP = "a cluster: its number or its name"
_PATH_HELP = "an image: its path in labels.csv, or its file in OUT_DIR (cluster_03/x.png)"


def _edit_commands(sub):
    """The commands that edit a sorted folder (see featclust.output.SortedFolder)."""

    def edit(name, help, description, examples):
        p = _sub(
            sub,
            name,
            help,
            description + " Each edit can be undone (featclust undo OUT_DIR).",
            examples,
        )
        p.add_argument("out_dir", metavar="OUT_DIR", help="a folder written by featclust sort")
        return p

    p = edit(
        "move",
        "move images into another cluster",
        "Move images into a cluster: their files, labels.csv, clusters.csv and the "
        "model (re-fitted, so assign follows) change together.",
        ["featclust move sorted/ --to 3 cluster_01/a.png cluster_01/b.png"],
    )
    p.add_argument("--to", required=True, metavar="CLUSTER", help=_CLUSTER_HELP)
    p.add_argument("paths", nargs="+", metavar="PATH", help=_PATH_HELP)
    p = edit(
        "merge",
        "merge clusters into one",
        "Merge clusters into the first given (or --into); the clusters after those "
        "merged away move down a number.",
        ["featclust merge sorted/ 2 5 7", "featclust merge sorted/ 2 rings --into rings"],
    )
    p.add_argument("clusters", nargs="+", metavar="CLUSTER", help=_CLUSTER_HELP)
    p.add_argument("--into", metavar="CLUSTER", help="the cluster that stays")
    p = edit(
        "split",
        "split a cluster by k-means on its stored features",
        "Split a cluster in k (or as many as -k auto chooses): the largest part keeps "
        "the number, the others get new numbers at the end.",
        ["featclust split sorted/ 3", "featclust split sorted/ rings -k 2"],
    )
    p.add_argument("cluster", metavar="CLUSTER", help=_CLUSTER_HELP)
    p.add_argument("-k", dest="k", type=_split_k, default="auto", help="parts, or 'auto' (default)")
    p = edit(
        "rename",
        "name a cluster (its folder follows)",
        "Name a cluster; its folder follows (cluster_03 -> 03-rings). An empty name "
        "takes the name away.",
        ["featclust rename sorted/ 3 rings"],
    )
    p.add_argument("cluster", metavar="CLUSTER", help=_CLUSTER_HELP)
    p.add_argument("name", metavar="NAME", help="the new name")
    p = edit(
        "set-aside",
        "take images out of every cluster",
        "Move images into OUT_DIR/set_aside/, which is no cluster (move them back "
        "with featclust move).",
        ["featclust set-aside sorted/ cluster_02/blurred.png"],
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help=_PATH_HELP)
    p = edit(
        "confirm",
        "mark clusters as right (resort keeps them)",
        "Mark clusters as right as they are: featclust resort keeps their images.",
        ["featclust confirm sorted/ 0 rings"],
    )
    p.add_argument("clusters", nargs="+", metavar="CLUSTER", help=_CLUSTER_HELP)
    p = edit(
        "resort",
        "re-sort the rest, learning from the edits",
        "Re-sort every image a person did not move and that is in no confirmed cluster, "
        "learning from those they did (label spreading on the features' neighbours).",
        ["featclust resort sorted/"],
    )
    for name, help in (("undo", "undo the last edit"), ("redo", "redo the last edit undone")):
        edit(name, help, help[0].upper() + help[1:] + ".", [f"featclust {name} sorted/"])


def _split_k(text):
    if text == "auto":
        return text
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is neither an integer of at least 2 nor 'auto'")
    return k
