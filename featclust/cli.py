"""The ``featclust`` command: a thin layer over the library.

Errors a user can cause become one line on stderr and an exit code:
2 for a user error, 3 when model weights are unavailable, 4 when the store or
the output cannot be written, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from . import __version__
from .errors import FeatclustError


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _feature_options(p):
    g = p.add_argument_group("features")
    g.add_argument("--weights", default="imagenet", metavar="imagenet|none|PATH",
                   help="VGG16 weights: 'imagenet' (downloaded once by Keras, the default), "
                        "'none' (random, seeded: for trying things offline) or a local "
                        ".h5/.weights.h5 file")
    g.add_argument("--pooling", choices=("avg", "max", "flatten"), default="avg",
                   help="how the 7x7x512 block5 output becomes a vector (default: avg)")
    g.add_argument("--precision", choices=("auto", "float32", "bfloat16", "float16"),
                   default="auto", help="compute precision of the model (default: auto)")
    g.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                   help="images per forward pass (default: 32)")
    g.add_argument("--store", metavar="DIR",
                   help="feature store root (default: featclust/store under "
                        "$XDG_CACHE_HOME or ~/.cache)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _cluster_options(p):
    g = p.add_argument_group("clustering")
    g.add_argument("-k", "--clusters", type=_positive_int, required=True, metavar="K",
                   help="number of clusters")
    g.add_argument("--pca", type=_positive_int, metavar="N",
                   help="reduce the features to N PCA components first")
    g.add_argument("--normalize", action="store_true",
                   help="L2-normalise the features (cosine k-means)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--mode", choices=("copy", "symlink", "hardlink"), default="copy",
                   help="how images get into the cluster folders (default: copy)")


def _report_options(p, with_switch=True):
    g = p.add_argument_group("report")
    if with_switch:
        g.add_argument("--no-report", action="store_true",
                       help="do not write OUT_DIR/report/ (montages, map, index.html)")
    g.add_argument("--map", choices=("auto", "tsne", "pca"), default="auto",
                   help="2-D map of the report: t-SNE, PCA (fast, for very large sets) or "
                        "auto (t-SNE up to 10,000 images; the default)")


def build_parser():
    """The argument parser of the ``featclust`` command."""
    parser = argparse.ArgumentParser(
        prog="featclust",
        description="Find groups of similar images: embed with VGG16, cluster with k-means, "
                    "copy into one folder per cluster.")
    parser.add_argument("--version", action="version", version=f"featclust {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("sort", help="embed, cluster and copy images into cluster folders",
                       description="Embed what is not in the store yet, cluster with k-means "
                                   "and copy every image into OUT_DIR/cluster_XX/.")
    p.add_argument("image_dir", metavar="IMAGE_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    _cluster_options(p)
    _feature_options(p)
    _report_options(p)

    p = sub.add_parser("embed", help="fill the feature store only",
                       description="Embed the images of IMAGE_DIR that are not in the store yet.")
    p.add_argument("image_dir", metavar="IMAGE_DIR")
    _feature_options(p)

    p = sub.add_parser("demo", help="sort a built-in sample set of dot-pattern images",
                       description="Write a small set of dot-pattern images (rings, lines, "
                                   "grids, clusters) and sort it into OUT_DIR.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--images", metavar="DIR",
                   help="where to write the sample images (default: featclust's cache folder)")
    _feature_options(p)
    _report_options(p)

    p = sub.add_parser("report", help="write the report of a sorted folder again",
                       description="Re-create OUT_DIR/report/ (montages, overview, 2-D map, "
                                   "index.html) from a folder written by sort; the features "
                                   "are read from the feature store the sort used.")
    p.add_argument("out_dir", metavar="OUT_DIR")
    _report_options(p, with_switch=False)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def _progress(quiet):
    if quiet:
        return None
    from tqdm import tqdm

    def make(desc, total):
        return tqdm(desc=desc, total=total, unit="img", file=sys.stderr, leave=False)

    return make


def _embedder(args):
    from .pipeline import make_embedder

    if args.weights == "none":
        print("featclust: warning: --weights none uses random weights; clusters will not "
              "reflect pretrained features", file=sys.stderr)
    return make_embedder(args.weights, args.pooling, args.precision, args.batch_size,
                         getattr(args, "seed", 0))


def _report_embed(emb, out):
    print(f"images: {len(emb.paths)} ({emb.n_embedded} embedded, {emb.n_reused} reused), "
          f"skipped: {len(emb.bad_files)}", file=out)
    for problem in emb.problems:
        print(f"featclust: store repaired: {problem}", file=sys.stderr)


def _cmd_embed(args):
    from .pipeline import embed_folder

    emb = embed_folder(args.image_dir, _embedder(args), args.store,
                       progress=_progress(args.quiet))
    _report_embed(emb, sys.stdout)
    print(f"store: {emb.store_path}")
    return 0


def _print_sort(result):
    _report_embed(result.embed, sys.stdout)
    sizes = ", ".join(str(s) for s in
                      __import__("numpy").bincount(result.model.labels_,
                                                   minlength=result.model.n_clusters))
    print(f"clusters: {result.model.n_clusters} (sizes {sizes})")
    print(f"output: {result.out_dir}")
    if result.report is not None:
        _print_report(result.report)


def _print_report(report):
    for warning in report.warnings:
        print(f"featclust: warning: {warning}", file=sys.stderr)
    print(f"report: {report.index}")


def _cmd_report(args):
    from .report import write_report

    _print_report(write_report(args.out_dir, map_method=args.map,
                               progress=_progress(args.quiet)))
    return 0


def _cmd_sort(args):
    from .pipeline import sort_folder

    result = sort_folder(args.image_dir, args.out_dir, args.clusters, _embedder(args),
                         args.store, pca=args.pca, normalize=args.normalize, seed=args.seed,
                         mode=args.mode, progress=_progress(args.quiet),
                         report=not args.no_report, map_method=args.map)
    _print_sort(result)
    return 0


def _cmd_demo(args):
    from .pipeline import demo

    result = demo(args.out_dir, images_dir=args.images, embedder=_embedder(args),
                  store=args.store, progress=_progress(args.quiet),
                  report=not args.no_report, map_method=args.map)
    _print_sort(result)
    return 0


COMMANDS = {"sort": _cmd_sort, "embed": _cmd_embed, "demo": _cmd_demo, "report": _cmd_report}


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
    try:
        return COMMANDS[args.command](args)
    except FeatclustError as e:
        print(f"featclust: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("featclust: interrupted; features computed so far are kept in the store, "
              "and the next run resumes from them", file=sys.stderr)
        return 130


def main_exit():
    """Entry point of the console script."""
    sys.exit(main())
