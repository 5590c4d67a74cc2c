"""The ``featclust`` command: a thin layer over the library.

Errors a user can cause become one line on stderr and an exit code:
2 for a user error, 3 when model weights are unavailable, 4 when the store or
the output cannot be written, 130 when interrupted.

It is longer than the other modules because it holds the options, help and
examples of all nine commands; every command function only parses, calls the
library and prints.
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
import warnings

from ._version import __version__
from .checks import MAX_SEED
from .cluster import DEFAULT_NORMALIZE, DEFAULT_PCA, METHODS
from .embed import DEFAULTS as EMBED_DEFAULTS
from .embed import (CPU_BATCH_SIZE, GPU_BATCH_SIZE, GRIDS, LAYERS, POOLINGS, PRECISIONS, Embedder,
                    layer_blocks)
from .errors import FeatclustError
from .report import MAP_METHODS
from .sort import MODES


def _int_type(low=1, high=None):
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


_positive_int = _int_type(1)


def _k_value(text):
    if text == "auto":
        return text
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a positive integer nor 'auto'") \
            from None


def _map_shape(layer):
    """``"14x14x512"`` for ``"block4"``, joined by ``+`` for several blocks."""
    return "+".join("{0}x{0}x{1}".format(*LAYERS[b]) for b in layer_blocks(layer))


def _feature_options(p, from_model=False):
    """The options that decide the features; ``from_model``: defaults come from a saved model."""
    g = p.add_argument_group("features" + (" (default: as the model in OUT_DIR was built; "
                                           "other values are refused)" if from_model else ""))
    d = EMBED_DEFAULTS  # the Embedder's own

    def default(text):
        return "" if from_model else f" (default: {text})"

    g.add_argument("--weights", default=d["weights"], metavar="imagenet|none|PATH",
                   help="VGG16 weights: 'imagenet' (downloaded once by Keras), 'none' (random, "
                        "seeded: for trying things offline) or a local .h5/.weights.h5 file"
                        + default(d["weights"]))
    # Checked by the library (featclust.embed.layer_blocks), so a bad value is one line.
    g.add_argument("--layer", default=d["layer"], metavar="BLOCK[+BLOCK]",
                   help=f"the VGG16 block whose pooled output is the feature map "
                        f"({', '.join(LAYERS)}), or several joined by '+' (block4+block5: "
                        f"each L2-normalised, then concatenated)"
                        + default(f"{d['layer']}, {_map_shape(d['layer'])}; see "
                                  f"benchmarks/quality.py"))
    g.add_argument("--pooling", choices=POOLINGS, default=d["pooling"],
                   help="how the feature map becomes a vector: mean, maximum, generalised "
                        "mean (p=3) or the whole map" + default(d["pooling"]))
    g.add_argument("--grid", type=int, choices=GRIDS, default=d["grid"],
                   help="where to pool: 1 the whole map; 2 also its 2x2 cells; 4 also its 2x2 "
                        "and 4x4 cells (so layout counts)" + default(d["grid"]))
    g.add_argument("--tta", action="store_true",
                   help="average the features of the 8 flips and 90-degree rotations of each "
                        "image, for shapes whose orientation should not matter; 8 times the "
                        "embedding time, stored apart from the plain features")
    g.add_argument("--precision", choices=PRECISIONS, default=d["precision"],
                   help="compute precision of the model" + default(d["precision"]))
    g.add_argument("--batch-size", type=_positive_int, default=None, metavar="N",
                   help=f"images per forward pass (default: {CPU_BATCH_SIZE} on a CPU, "
                        f"{GPU_BATCH_SIZE} on a GPU)")
    _store_option(g)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _store_option(g):
    g.add_argument("--store", metavar="DIR",
                   help="feature store root (default: featclust's folder in the platform's "
                        "cache folder, e.g. ~/.cache/featclust/store on Linux; "
                        "$XDG_CACHE_HOME is honoured)")


def _dask_option(p):
    p.add_argument("--dask", metavar="ADDRESS|local:N",
                   help="embed on a Dask cluster: a scheduler address (tcp://host:8786) or "
                        "local:N (N worker processes on this machine); images and the store "
                        "must be on a filesystem every worker sees (pip install "
                        "'featclust[dask]')")


def _fit_sample_type(text):
    if text == "all":
        return "all"
    return _int_type(2)(text)


def _fit_sample_option(p):
    p.add_argument("--fit-sample", type=_fit_sample_type, default=None, metavar="N|all",
                   help="fit the reduction and k-means on a random sample of at most N images, "
                        "then label every image; all: fit on every image (default: 100000)")


def _fit_sample(args):
    from .cluster import FIT_SAMPLE

    if args.fit_sample is None:
        return FIT_SAMPLE
    return None if args.fit_sample == "all" else args.fit_sample


def _seed_option(g):
    g.add_argument("--seed", type=_int_type(0, MAX_SEED), default=0, metavar="N",
                   help=f"random seed, 0 to {MAX_SEED} (default: 0)")


def _pca_value(text):
    if text.lower() == "none":
        return None
    return _positive_int(text)


def _reduction_options(g):
    """``--pca`` and ``--normalize``: the space k-means works in (sort and scan-k alike)."""
    g.add_argument("--pca", type=_pca_value, default=DEFAULT_PCA, metavar="N|none",
                   help="reduce the features to N PCA components (at most the number of "
                        "images) before k-means; 'none': no PCA"
                        f" (default: {str(DEFAULT_PCA).lower()})")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                   default=DEFAULT_NORMALIZE,
                   help="L2-normalise the features before and after PCA (cosine k-means)"
                        f" (default: {'on' if DEFAULT_NORMALIZE else 'off'})")


def _cluster_options(p):
    g = p.add_argument_group("clustering")
    g.add_argument("-k", "--clusters", type=_k_value, required=True, metavar="K|auto",
                   help="number of clusters, or 'auto': the k that scan-k suggests "
                        "among 2..30 (its table is written to OUT_DIR/kscan.csv)")
    _reduction_options(g)
    g.add_argument("--method", choices=METHODS, default="kmeans",
                   help="k-means (the default) or Ward agglomerative clustering: Ward found "
                        "the shape families a little better in benchmarks/quality.py, but "
                        "needs memory for all pairs of images (at most 20,000)")
    _seed_option(g)
    g.add_argument("--mode", choices=MODES, default="copy",
                   help="how images get into the cluster folders (default: copy)")


def _report_options(p, with_switch=True):
    g = p.add_argument_group("report")
    if with_switch:
        g.add_argument("--no-report", action="store_true",
                       help="do not write OUT_DIR/report/ (montages, map, index.html)")
    g.add_argument("--map", choices=MAP_METHODS, default="auto",
                   help="2-D map of the report: t-SNE, PCA (fast, for very large sets) or "
                        "auto (the default: t-SNE up to its size limit, PCA above)")


#: Feature options that ``assign`` takes from the model unless given.
_MODEL_FEATURES = ("weights", "pooling", "precision", "layer", "tta", "grid")

_IMAGE_DIR_HELP = "the folder of images (searched recursively; it is never changed)"
_OUT_DIR_HELP = "the output folder: new, empty, or written by an earlier featclust sort"


def _examples(*lines):
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _sub(sub, name, help, description, examples):
    return sub.add_parser(name, help=help, description=textwrap.fill(description, 79),
                          epilog=_examples(*examples),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser():
    """The argument parser of the ``featclust`` command."""
    parser = argparse.ArgumentParser(
        prog="featclust",
        description="Find groups of similar images: embed with VGG16, cluster with k-means, "
                    "copy into one folder per cluster.",
        epilog=_examples("featclust sort photos/ sorted/ -k 8",
                         "featclust demo demo-out/ --weights none"),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"featclust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _sub(sub, "sort", "embed, cluster and copy images into cluster folders",
             "Embed what is not in the store yet, cluster with k-means and copy every image "
             "into OUT_DIR/cluster_XX/, with labels.csv, clusters.csv and a report.",
             ["featclust sort photos/ sorted/ -k 8",
              "featclust sort sorted/cluster_03 split/ -k 4   # refine one cluster; embeds "
              "nothing"])
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    p.add_argument("out_dir", metavar="OUT_DIR", help=_OUT_DIR_HELP)
    _cluster_options(p)
    p.add_argument("--truth", metavar="CSV",
                   help="known classes of some images (columns path,label; paths relative to "
                        "IMAGE_DIR): report adjusted Rand index, NMI and a contingency table "
                        "(OUT_DIR/truth.csv)")
    _fit_sample_option(p)
    _feature_options(p)
    _dask_option(p)
    _report_options(p)

    p = _sub(sub, "scan-k", "score k-means for a range of k and suggest one",
             "Fit k-means for every k of a range on the stored features (embedding only what "
             "is missing), print inertia, silhouette, Davies-Bouldin, Calinski-Harabasz and "
             "stability per k, and suggest a k with the reason.",
             ["featclust scan-k photos/ -k 2:30", "featclust scan-k photos/ -k 5:50 --step 5 "
              "--out scan/"])
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    p.add_argument("-k", "--clusters", "--k", dest="k", default="2:30", metavar="A:B",
                   help="the ks to try, A to B inclusive (default: 2:30)")
    p.add_argument("--step", type=_positive_int, default=1, metavar="N",
                   help="try every N-th k of the range (default: 1)")
    _reduction_options(p)
    _seed_option(p)
    p.add_argument("--out", metavar="DIR",
                   help="write kscan.csv and kscan.png (the scores against k) into DIR: a "
                        "new or empty folder, or a featclust output such as a sorted folder")
    _fit_sample_option(p)
    _feature_options(p)
    _dask_option(p)

    p = _sub(sub, "assign", "assign new images to the clusters of a sorted folder",
             "Embed the given images (through the feature store) with the settings the model "
             "in OUT_DIR was built with, and print CSV: path,cluster,distance,outlier. outlier "
             "is true when the image is farther from its cluster's centre than 95% of the "
             "cluster's own members. With --place, also copy each image into its cluster's "
             "folder and add it to labels.csv.",
             ["featclust assign sorted/ new.png more-new/",
              "featclust assign sorted/ incoming/ --place"])
    p.add_argument("out_dir", metavar="OUT_DIR", help="a folder written by featclust sort")
    p.add_argument("inputs", metavar="IMAGE_OR_DIR", nargs="+",
                   help="image files and folders of images to assign")
    p.add_argument("--place", nargs="?", const="model", choices=("model", *MODES),
                   metavar="MODE", help="also put each image into its cluster's folder: by the "
                                        "sort's --mode (the default) or copy|symlink|hardlink")
    _feature_options(p, from_model=True)
    p.set_defaults(**dict.fromkeys(_MODEL_FEATURES))

    p = _sub(sub, "embed", "fill the feature store only",
             "Embed the images of IMAGE_DIR that are not in the store yet.",
             ["featclust embed photos/", "featclust embed photos/ --store /data/featclust",
              "featclust embed photos/ --dask local:4"])
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    _feature_options(p)
    _dask_option(p)

    p = _sub(sub, "similar", "list the images of a folder most similar to query images",
             "For each query image, the most similar images of IMAGE_DIR by cosine similarity "
             "of the stored features (queries that are not in the store are embedded through "
             "it), as CSV on stdout: query,path,similarity,rank.",
             ["featclust similar photos/ photos/cat.png --top 5",
              "featclust similar photos/ queries/"])
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    p.add_argument("queries", metavar="QUERY", nargs="+",
                   help="query image files, or folders of them")
    p.add_argument("--top", type=_positive_int, default=10, metavar="N",
                   help="similar images per query (default: 10)")
    _feature_options(p)

    p = _sub(sub, "duplicates", "find near-duplicate and byte-identical images",
             "Group the images of IMAGE_DIR whose features are near-identical (cosine "
             "similarity at least the threshold), and separately byte-identical files; write "
             "duplicates.csv (kind,group,path,similarity_to_first) and duplicates.html into "
             "OUT_DIR.",
             ["featclust duplicates photos/ dups/",
              "featclust duplicates photos/ dups/ --threshold 0.98"])
    p.add_argument("image_dir", metavar="IMAGE_DIR", help=_IMAGE_DIR_HELP)
    p.add_argument("out_dir", metavar="OUT_DIR",
                   help="where duplicates.csv and duplicates.html go (new, empty or written by "
                        "featclust)")
    p.add_argument("--threshold", type=_unit_float, default=None, metavar="T",
                   help="cosine similarity from which two images count as near-duplicates, "
                        "0 to 1 (default: the one measured in benchmarks/near_duplicates.py)")
    _feature_options(p)

    p = _sub(sub, "demo", "sort a built-in sample set of dot-pattern images",
             "Write a small set of dot-pattern images (rings, lines, grids, clusters) and sort "
             "it into OUT_DIR.",
             ["featclust demo demo-out/ --weights none",
              "featclust demo demo-out/ --images demo-images/"])
    p.add_argument("out_dir", metavar="OUT_DIR", help=_OUT_DIR_HELP)
    p.add_argument("--images", metavar="DIR",
                   help="where to write the sample images (default: featclust's cache folder)")
    _feature_options(p)
    _report_options(p)

    p = _sub(sub, "report", "write the report of a sorted folder again",
             "Re-create OUT_DIR/report/ (montages, galleries, overview, 2-D map, index.html) "
             "from a folder written by sort; the features are read from the feature store the "
             "sort used.",
             ["featclust report sorted/", "featclust report sorted/ --map pca"])
    p.add_argument("out_dir", metavar="OUT_DIR", help="a folder written by featclust sort")
    _report_options(p, with_switch=False)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = _sub(sub, "store", "look after the feature store",
             "gc: drop the stored features no existing image folder uses any more (folders "
             "that were deleted, images that were removed).",
             ["featclust store gc --dry-run", "featclust store gc --store /data/featclust"])
    p.add_argument("action", choices=("gc",), help="what to do: gc (collect garbage)")
    p.add_argument("--dry-run", action="store_true",
                   help="only say what would be dropped")
    _store_option(p)
    return parser


def _unit_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number from 0 to 1")
    return value


def _progress(quiet):
    """Bars on a terminal (none in a redirected stderr), none at all with ``-q``."""
    return False if quiet else None


def _embedder(args):
    """The embedder of the feature options; checked (a bad --layer refused) before any work."""
    embedder = Embedder(weights=args.weights, pooling=args.pooling, precision=args.precision,
                        batch_size=args.batch_size, seed=getattr(args, "seed", 0),
                        layer=args.layer, tta=args.tta, grid=args.grid)
    if args.weights == "none":
        print("featclust: warning: --weights none uses random weights; clusters will not "
              "reflect pretrained features", file=sys.stderr)
    return embedder


def _report_embed(emb, out):
    print(f"images: {len(emb.paths)} ({emb.n_embedded} embedded, {emb.n_reused} reused), "
          f"skipped: {len(emb.bad_files)}", file=out)
    for problem in emb.problems:
        print(f"featclust: store repaired: {problem}", file=sys.stderr)


def _cmd_embed(args):
    from .pipeline import embed_folder

    emb = embed_folder(args.image_dir, _embedder(args), args.store,
                       progress=_progress(args.quiet), dask=args.dask)
    _report_embed(emb, sys.stdout)
    print(f"store: {emb.store_path}")
    return 0


def _print_sort(result):
    import numpy as np

    _report_embed(result.embed, sys.stdout)
    sizes = ", ".join(str(s) for s in np.bincount(result.model.labels_,
                                                  minlength=result.model.n_clusters))
    print(f"clusters: {result.model.n_clusters} (sizes {sizes})")
    if result.kscan is not None:
        print(f"k = {result.kscan.suggested_k_}, suggested by the k scan: {result.kscan.reason_}")
    _print_judgement(result.judgement, len(result.embed.paths))
    for rel in result.kept:
        print(f"featclust: warning: left {rel} as it is: it was changed since featclust wrote "
              "it", file=sys.stderr)
    identical = result.record.counts.get("identical_groups")
    if identical:
        print(f"identical images: {identical} groups of byte-identical files (list them, and "
              "near-duplicates, with featclust duplicates)")
    print(f"output: {result.out_dir}")
    if result.report is not None:
        _print_report(result.report)


def _print_report(report):
    for warning in report.warnings:
        print(f"featclust: warning: {warning}", file=sys.stderr)
    if report.map_note:
        print(f"featclust: note: {report.map_note}", file=sys.stderr)
    print(f"report: {report.index}")


def _cmd_report(args):
    from .report import write_report

    _print_report(write_report(args.out_dir, map_method=args.map,
                               progress=_progress(args.quiet)))
    return 0


def _print_judgement(judged, n_images):
    from .fileio import fmt_num
    from .scores import LOOSE_FACTOR

    def score(name, digits=3):
        return fmt_num(s[name], digits) or "n/a"

    s = judged.scores
    print(f"scores: silhouette {score('silhouette')}, Davies-Bouldin "
          f"{score('davies_bouldin')}, Calinski-Harabasz "
          f"{score('calinski_harabasz', 5)}, stability {score('stability')}")
    for r in judged.clusters:
        if r["tiny"]:
            print(f"featclust: warning: cluster {r['cluster']} is tiny ({r['size']} of "
                  f"{n_images} images)", file=sys.stderr)
        if r["loose"]:
            print(f"featclust: warning: the members of cluster {r['cluster']} sit far from "
                  f"its centre (mean distance {fmt_num(r['mean_distance'], 4)}, more than "
                  f"{LOOSE_FACTOR:g} times the median over the clusters)", file=sys.stderr)
    t = judged.truth
    if t is not None:
        print(f"truth: adjusted Rand index {t.ari:.3f}, NMI {t.nmi:.3f} on {t.n_labelled} "
              f"labelled images" + (f" ({t.n_unknown} truth rows name no clustered image)"
                                    if t.n_unknown else ""))
        if t.contingency.shape[1] <= 12:
            width = max(5, *(len(c) for c in t.classes))
            print("  " + "label".ljust(width) + "".join(
                f"{c:>6d}" for c in range(t.contingency.shape[1])))
            for name, row in zip(t.classes, t.contingency):
                print("  " + name.ljust(width) + "".join(f"{int(x):>6d}" for x in row))
        print("  (contingency table in truth.csv)")


def _cmd_sort(args):
    from .pipeline import sort_folder

    truth = None
    if args.truth:
        from .tables import read_truth_csv

        truth = read_truth_csv(args.truth)
    result = sort_folder(args.image_dir, args.out_dir, n_clusters=args.clusters,
                         embedder=_embedder(args), store=args.store, pca=args.pca,
                         normalize=args.normalize,
                         random_state=args.seed, mode=args.mode,
                         progress=_progress(args.quiet), report=not args.no_report,
                         map_method=args.map, truth=truth, method=args.method,
                         fit_sample=_fit_sample(args), dask=args.dask)
    _print_sort(result)
    return 0


def _cmd_scan_k(args):
    import os

    from .kscan import KScan, parse_k_range
    from .output import OutputFolder, RunRecord, save_kscan
    from .pipeline import embed_folder
    from .report.render import kscan_png
    from .tables import kscan_table

    ks = parse_k_range(args.k, args.step)
    scan = KScan(ks=ks, pca=args.pca, normalize=args.normalize, random_state=args.seed,
                 fit_sample=_fit_sample(args))
    scan.check_params()
    embedder = _embedder(args)
    if args.out:
        OutputFolder(args.out, args.image_dir)  # refuse an unsafe folder before embedding
    emb = embed_folder(args.image_dir, embedder, args.store,
                       exclude=[args.out] if args.out else (), progress=_progress(args.quiet),
                       dask=args.dask)
    _report_embed(emb, sys.stdout)
    scan.fit(emb.features)
    if list(scan.ks_) != ks:
        print(f"featclust: warning: k above {len(emb.paths) - 1} left out: k-means needs more "
              f"images than clusters ({len(emb.paths)} images)", file=sys.stderr)
    print(kscan_table(scan.scores_, scan.suggested_k_), end="")
    print(f"suggested k: {scan.suggested_k_} ({scan.reason_})")
    if args.out:
        record = RunRecord(command="scan-k", status="writing",
                           image_dir=os.path.abspath(args.image_dir),
                           feature_settings=emb.settings)
        png = kscan_png(scan.scores_, scan.suggested_k_)
        for path in save_kscan(args.out, scan, record, args.image_dir, png=png):
            print(f"wrote {path}")
    return 0


def _cmd_assign(args):
    from .assign import assign_images, embedder_for, place_images
    from .output import open_sorted

    folder = open_sorted(args.out_dir)
    embedder = embedder_for(folder, **{k: getattr(args, k, None) for k in _MODEL_FEATURES},
                            batch_size=args.batch_size)
    result = assign_images(folder, args.inputs, embedder, args.store,
                           progress=_progress(args.quiet))
    for b in result.bad_files:
        print(f"featclust: skipped {b.path}: {b.reason}", file=sys.stderr)
    sys.stdout.write(result.csv())
    if args.place:
        placed = place_images(folder, result, None if args.place == "model" else args.place)
        for src, why in placed.skipped:
            print(f"featclust: not placed {src}: {why}", file=sys.stderr)
        print(f"featclust: placed {len(placed.placed)} images into {folder.path} "
              f"(labels.csv updated)", file=sys.stderr)
    return 0


def _cmd_similar(args):
    from .similarity import similar_images

    result = similar_images(args.image_dir, args.queries, args.top, _embedder(args), args.store,
                            progress=_progress(args.quiet))
    for b in result.bad_files:
        print(f"featclust: skipped {b.path}: {b.reason}", file=sys.stderr)
    sys.stdout.write(result.csv())
    return 0


def _cmd_duplicates(args):
    from .similarity import find_duplicates

    result = find_duplicates(args.image_dir, args.out_dir, args.threshold, _embedder(args),
                             args.store, progress=_progress(args.quiet))
    in_near = sum(len(g) for g in result.near)
    print(f"images: {result.n_images}; near-duplicate groups: {len(result.near)} "
          f"({in_near} images, cosine similarity >= {result.threshold:g}); byte-identical "
          f"groups: {len(result.identical)}")
    print(f"output: {result.out_dir}")
    return 0


def _cmd_store(args):
    from .store import gc

    report = gc(args.store, dry_run=args.dry_run)
    verb = "would drop" if args.dry_run else "dropped"
    print(f"store: {verb} {report.rows_dropped} rows ({report.bytes_freed / 2 ** 20:.1f} MiB) "
          f"no image folder uses; {report.rows_kept} rows kept")
    for folder in report.folders_forgotten:
        print(f"  {'would forget' if args.dry_run else 'forgot'} {folder} (no longer exists)")
    return 0


def _cmd_demo(args):
    from .demo import demo

    result = demo(args.out_dir, images_dir=args.images, embedder=_embedder(args),
                  store=args.store, progress=_progress(args.quiet),
                  report=not args.no_report, map_method=args.map)
    print(f"sample images: {result.images_dir}")
    _print_sort(result)
    return 0


COMMANDS = {"sort": _cmd_sort, "embed": _cmd_embed, "demo": _cmd_demo,
            "scan-k": _cmd_scan_k, "assign": _cmd_assign, "report": _cmd_report,
            "similar": _cmd_similar, "duplicates": _cmd_duplicates, "store": _cmd_store}


#: Python parameters named in library messages, and the options that set them.
_FLAGS = {"n_clusters": "-k", "random_state": "--seed", "batch_size": "--batch-size",
          "map_method": "--map", **{name: f"--{name}" for name in (
              "weights", "pooling", "precision", "layer", "grid", "pca", "mode", "method",
              "store")}}
_PARAM = re.compile(r"\b(" + "|".join(_FLAGS) + r")=(?=[A-Z]+\b)")


def _in_flags(message):
    """A library message's advice in the command line's words: ``weights=PATH`` becomes
    ``--weights PATH`` (values received, ``pca=300``, are left as they are)."""
    return _PARAM.sub(lambda m: _FLAGS[m.group(1)] + " ", message)


def _escape_unprintable():
    """Never fail on a file name the output cannot encode (bytes that are not UTF-8 in a name,
    on a strict UTF-8 stream): a terminal shows backslash escapes; a pipe or a file gets the
    name's own bytes, so a CSV redirected to a file reads back to the exact names."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.fileno()  # a real stream, not one a caller put in place to capture output
            tty = stream.isatty()
            stream.reconfigure(errors="backslashreplace" if tty else "surrogateescape")
        except (AttributeError, ValueError, OSError):
            pass


def main(argv=None):
    """Run the command line; returns the exit code instead of exiting.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    # Damaged or oversized images are listed in bad_files.csv with the reason;
    # Pillow's warnings about them would only be noise without a file name.
    warnings.filterwarnings("ignore", module=r"PIL\.")
    _escape_unprintable()
    try:
        return COMMANDS[args.command](args)
    except FeatclustError as e:
        print(f"featclust: error: {_in_flags(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("featclust: interrupted; features computed so far are kept in the store, "
              "and the next run resumes from them", file=sys.stderr)
        return 130


def main_exit():
    """Entry point of the console script."""
    sys.exit(main())
