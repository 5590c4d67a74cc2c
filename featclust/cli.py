"""The ``featclust`` command: a thin layer over the library.

Errors a user can cause become one line on stderr and an exit code:
2 for a user error, 3 when model weights are unavailable, 4 when the store or
the output cannot be written, 130 when interrupted.

The parser is built in :mod:`featclust.cli_parser` (its options in
:mod:`featclust.cli_options`); here are the command functions, which only
call the library and print, and the error handling.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import warnings

import numpy as np

from .assign import FEATURE_PARAMS, assign_images, embedder_for, place_images, recorded_params
from .cli_curate import CURATE_COMMANDS, refresh_report_of
from .cli_options import (
    cluster_params,
    embedder_params,
)
from .cli_parser import build_parser
from .clusterjobs import scan_folder, sort_folder
from .demo import demo
from .embed import DEFAULTS as EMBED_DEFAULTS
from .embed import Embedder
from .errors import FeatclustError
from .fileio import fmt_num
from .flags import flag_lines, unstable_clustering
from .kscan import MIN_STABILITY, parse_k_range
from .output import open_sorted
from .pipeline import embed_folder
from .report import write_report
from .similarity import find_duplicates, similar_images
from .store import gc
from .tables import fmt_fixed, kscan_table, read_truth_csv


def _progress(quiet):
    """Bars on a terminal (none in a redirected stderr), none at all with ``-q``."""
    return False if quiet else None


def _embedder(args, image_dir=None):
    """The embedder of the feature options; checked (a bad --layer refused) before any work.

    For an ``image_dir`` embedded before, and no option that decides the features given,
    the settings it was embedded with (see :func:`featclust.assign.recorded_params`).
    """
    params = embedder_params(args)
    if image_dir is not None and not getattr(args, "given_features", {}):
        recorded = recorded_params(image_dir, args.store)
        if recorded:
            params.update(recorded[0])
            _note_recorded(image_dir, recorded)
    embedder = Embedder(**params)
    if params["weights"] == "none":
        print(
            "featclust: warning: --weights none uses random weights; clusters will not "
            "reflect pretrained features",
            file=sys.stderr,
        )
    return embedder


def _note_recorded(image_dir, recorded):
    options = _feature_options(recorded[0])
    if options:
        print(
            f"featclust: note: features as {image_dir} was embedded before: {options}"
            + (" (it was also embedded with other settings)" if len(recorded) > 1 else "")
            + "; feature options choose others",
            file=sys.stderr,
        )


def _feature_options(params):
    """The options that give ``params`` where they differ from the defaults, as typed."""
    d = EMBED_DEFAULTS
    words = []
    if params["weights"] != d["weights"]:
        words.append(f"--weights {shlex.quote(str(params['weights']))}")
        if params["weights"] == "none" and params["seed"] != d["seed"]:
            words.append(f"--weights-seed {params['seed']}")
    for name in ("layer", "pooling", "grid", "grid_weight"):
        if params.get(name, d[name]) != d[name]:
            words.append(f"--{name.replace('_', '-')} {params[name]}")
    if params["tta"] != d["tta"]:
        words.append("--tta" if params["tta"] else "--no-tta")
    if params["precision"] not in (d["precision"], "float32", "bfloat16"):  # auto gives these
        words.append(f"--precision {params['precision']}")
    return " ".join(words)


def _given_features(argv):
    """The options deciding the features that ``argv`` gives, by parameter name."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                for a in sub._actions:
                    if a.dest in FEATURE_PARAMS:
                        a.default = argparse.SUPPRESS
                for name in FEATURE_PARAMS:
                    sub._defaults.pop(name, None)
    args = parser.parse_args(argv)
    return {k: getattr(args, k) for k in FEATURE_PARAMS if getattr(args, k, None) is not None}


def _report_embed(emb, out):
    print(
        f"images: {len(emb.paths)} ({emb.n_embedded} embedded, {emb.n_reused} reused), "
        f"skipped: {len(emb.bad_files)}",
        file=out,
    )
    for problem in emb.problems:
        print(f"featclust: store repaired: {problem}", file=sys.stderr)


def _cmd_embed(args):
    emb = embed_folder(
        args.image_dir,
        embedder=_embedder(args, args.image_dir),
        store=args.store,
        progress=_progress(args.quiet),
        dask=args.dask,
    )
    _report_embed(emb, sys.stdout)
    print(f"store: {emb.store_path}")
    return 0


def _command(*words):
    """A command line to print: each word quoted as a shell needs it."""
    return " ".join(shlex.quote(os.fspath(w)) for w in words)


def _print_sort(result, image_dir, store):
    _report_embed(result.embed, sys.stdout)
    sizes = ", ".join(
        str(s) for s in np.bincount(result.model.labels_, minlength=result.model.n_clusters)
    )
    print(f"clusters: {result.model.n_clusters} (sizes {sizes})")
    if result.kscan is not None:
        print(f"k = {result.kscan.suggested_k_}, suggested by the k scan: {result.kscan.reason_}")
    _print_judgement(result.judgement, len(result.embed.paths))
    for rel in result.kept:
        print(
            f"featclust: warning: left {rel} as it is: it was changed since featclust wrote it",
            file=sys.stderr,
        )
    identical = result.record.counts.get("identical_groups")
    if identical:
        dups = os.path.normpath(result.out_dir) + "-duplicates"
        store_words = ("--store", store) if store is not None else ()
        hint = _command("featclust", "duplicates", image_dir, dups, *store_words)
        print(
            f"identical images: {identical} groups of byte-identical files (list them, and "
            f"near-duplicates, with: {hint})"
        )
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
    _print_report(
        write_report(args.out_dir, map_method=args.map_method, progress=_progress(args.quiet))
    )
    return 0


def _print_judgement(judged, n_images):
    def score(name, digits=3):
        return fmt_num(s[name], digits) or "n/a"

    s = judged.scores
    print(
        f"scores: silhouette {score('silhouette')}, Davies-Bouldin "
        f"{score('davies_bouldin')}, Calinski-Harabasz "
        f"{fmt_fixed(s['calinski_harabasz']) or 'n/a'}, stability {score('stability')}"
    )
    for line in flag_lines(judged.clusters):
        print(f"featclust: warning: {line}", file=sys.stderr)
    unstable = unstable_clustering(s, MIN_STABILITY)
    if unstable:
        print(f"featclust: warning: {unstable}", file=sys.stderr)
    t = judged.truth
    if t is not None:
        print(
            f"truth: adjusted Rand index {t.ari:.3f}, NMI {t.nmi:.3f} on {t.n_labelled} "
            f"labelled images"
            + (f" ({t.n_unknown} truth rows name no clustered image)" if t.n_unknown else "")
        )
        if t.contingency.shape[1] <= 12:
            width = max(5, *(len(c) for c in t.classes))
            print(
                "  "
                + "label".ljust(width)
                + "".join(f"{c:>6d}" for c in range(t.contingency.shape[1]))
            )
            for name, row in zip(t.classes, t.contingency):
                print("  " + name.ljust(width) + "".join(f"{int(x):>6d}" for x in row))
        print("  (contingency table in truth.csv)")


def _cmd_sort(args):
    truth = read_truth_csv(args.truth) if args.truth else None
    result = sort_folder(
        args.image_dir,
        args.out_dir,
        **cluster_params(args),
        embedder=_embedder(args, args.image_dir),
        store=args.store,
        mode=args.mode,
        progress=_progress(args.quiet),
        report=not args.no_report,
        map_method=args.map_method,
        truth=truth,
        dask=args.dask,
        discard_edits=args.discard_edits,
    )
    _print_sort(result, args.image_dir, args.store)
    return 0


def _cmd_scan_k(args):
    result = scan_folder(
        args.image_dir,
        ks=parse_k_range(args.k, args.step),
        embedder=_embedder(args, args.image_dir),
        store=args.store,
        pca=args.pca,
        normalize=args.normalize,
        random_state=args.random_state,
        fit_sample=args.fit_sample,
        out_dir=args.out,
        progress=_progress(args.quiet),
        dask=args.dask,
    )
    scan = result.kscan
    _report_embed(result.embed, sys.stdout)
    if result.left_out:
        print(
            f"featclust: warning: k = {', '.join(map(str, result.left_out))} left out: "
            f"k-means needs more (distinct) images than clusters "
            f"({len(result.embed.paths)} images)",
            file=sys.stderr,
        )
    print(kscan_table(scan.scores_, scan.suggested_k_), end="")
    print(f"suggested k: {scan.suggested_k_} ({scan.reason_})")
    for path in result.written:
        print(f"wrote {path}")
    _print_plot_hint(result.written, args.out)
    return 0


def _print_plot_hint(written, out_dir):
    """How to see the k scan's plot: the PNG itself, or the report of a sorted folder."""
    png = next((p for p in written if str(p).endswith(".png")), None)
    if png is None:
        return
    hint = f"see the plot: open {png} (an image viewer or a web browser shows it)"
    try:
        open_sorted(out_dir)
        hint += ", or on the sorted folder's report: " + _command("featclust", "report", out_dir)
    except FeatclustError:
        pass
    print(hint)


def _cmd_assign(args):
    folder = open_sorted(args.out_dir)
    embedder = embedder_for(folder, **embedder_params(args))
    result = assign_images(
        folder, args.inputs, embedder=embedder, store=args.store, progress=_progress(args.quiet)
    )
    for b in result.bad_files:
        print(f"featclust: skipped {b.path}: {b.reason}", file=sys.stderr)
    sys.stdout.write(result.csv())
    if args.place:
        placed = place_images(folder, result, mode=None if args.place == "model" else args.place)
        for src, why in placed.skipped:
            print(f"featclust: not placed {src}: {why}", file=sys.stderr)
        print(
            f"featclust: placed {len(placed.placed)} images into {folder.path} "
            f"(labels.csv updated)",
            file=sys.stderr,
        )
        refresh_report_of(folder.path)
    return 0


def _cmd_similar(args):
    result = similar_images(
        args.image_dir,
        args.queries,
        top=args.top,
        embedder=_embedder(args, args.image_dir),
        store=args.store,
        progress=_progress(args.quiet),
    )
    for b in result.bad_files:
        print(f"featclust: skipped {b.path}: {b.reason}", file=sys.stderr)
    sys.stdout.write(result.csv())
    return 0


def _cmd_duplicates(args):
    result = find_duplicates(
        args.image_dir,
        args.out_dir,
        threshold=args.threshold,
        embedder=_embedder(args, args.image_dir),
        store=args.store,
        progress=_progress(args.quiet),
    )
    in_near = sum(len(g) for g in result.near)
    print(
        f"images: {result.n_images}; near-duplicate groups: {len(result.near)} "
        f"({in_near} images, cosine similarity >= {result.threshold:g}); byte-identical "
        f"groups: {len(result.identical)}"
    )
    print(f"output: {result.out_dir}")
    return 0


def _cmd_store(args):
    report = gc(args.store, dry_run=args.dry_run, forget_gone=args.forget_gone)
    verb = "would drop" if args.dry_run else "dropped"
    print(
        f"store: {verb} {report.rows_dropped} rows ({report.bytes_freed / 2**20:.1f} MiB) "
        f"no image folder uses; {report.rows_kept} rows kept"
    )
    for folder in report.folders_forgotten:
        print(f"  {'would forget' if args.dry_run else 'forgot'} {folder} (no longer exists)")
    if report.folders_gone:
        print(
            f"  kept the features of image folders that no longer exist: "
            f"{', '.join(report.folders_gone)}; moved or renamed? run featclust on the new path "
            f"(their features are reused); `featclust store gc --forget-gone` would free "
            f"{report.rows_gone} rows ({report.bytes_gone / 2**20:.1f} MiB)"
        )
    for problem in report.problems:
        print(f"  {problem}")
    return 0


def _cmd_demo(args):
    result = demo(
        args.out_dir,
        images_dir=args.images,
        embedder=_embedder(args),
        store=args.store,
        progress=_progress(args.quiet),
        report=not args.no_report,
        map_method=args.map_method,
    )
    print(f"sample images: {result.images_dir}")
    _print_sort(result, result.images_dir, args.store)
    return 0


COMMANDS = {
    "sort": _cmd_sort,
    "embed": _cmd_embed,
    "demo": _cmd_demo,
    "scan-k": _cmd_scan_k,
    "assign": _cmd_assign,
    "report": _cmd_report,
    "similar": _cmd_similar,
    "duplicates": _cmd_duplicates,
    "store": _cmd_store,
    **CURATE_COMMANDS,
}


def _flags(parser):
    """Each parameter an option sets, and the option (``random_state``: ``--seed``)."""
    flags = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags.update(_flags(sub))
        elif action.option_strings and action.dest not in ("help", "version"):
            flags.setdefault(action.dest, action.option_strings[0])
    return flags


def _in_flags(message, parser):
    """A library message's advice in the command line's words: ``weights=PATH`` and
    ``weights=none`` become ``--weights PATH`` and ``--weights none`` (values received,
    ``pca=300`` or ``weights='x'``, are left as they are)."""
    flags = _flags(parser)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, flags)) + r")=(?=[A-Z]+\b|[a-z]+\b)")
    return pattern.sub(lambda m: flags[m.group(1)] + " ", message)


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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code instead of exiting.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:
            return int(e.code or 0)
        args.given_features = _given_features(sys.argv[1:] if argv is None else argv)
        # Damaged or oversized images are listed in bad_files.csv with the reason;
        # Pillow's warnings about them would only be noise without a file name.
        warnings.filterwarnings("ignore", module=r"PIL\.")
        _escape_unprintable()
        return COMMANDS[args.command](args)
    except FeatclustError as e:
        print(f"featclust: error: {_in_flags(str(e), parser)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(
            "featclust: interrupted; features computed so far are kept in the store, "
            "and the next run resumes from them",
            file=sys.stderr,
        )
        return 130


def main_exit() -> None:
    """Run :func:`main` and exit with its code (the console script is
    :func:`featclust.__main__.main_exit`, which answers ``--help`` without the library)."""
    sys.exit(main())
