"""Learning from the corrections: a simulated person curates labelled folders.

Usage::

    nice python benchmarks/curation.py              # HED weights if present, else random
    python benchmarks/curation.py --embed-only      # only make (and cache) the features
    python benchmarks/curation.py --alternatives    # also the re-sort methods not chosen

Draws one labelled set of each kind the quality benchmark has (dots,
silhouettes, glyphs, textures, lines: :mod:`featclust.samples`, through
``benchmarks/quality.py``'s helpers), embeds it once with featclust's default
features (VGG16 block4+block5, max pooling) and caches the vectors under
``--cache``, so a rerun costs no forward pass. The draft is
:class:`featclust.cluster.FeatureKMeans` at the true k (its reduced space:
L2, PCA 32, L2).

Each round the simulated person looks at the ``--per-round`` (20) images the
review page shows first (the highest :func:`featclust.relabel.doubt` among
the images not yet fixed) and moves each to the cluster where most of its
true class lies; those images become fixed. Three arms:

- ``re-sort``: then :func:`featclust.relabel.resort_labels` (the default);
- ``random``: 20 random images a round instead of the most doubtful, then
  the same re-sort;
- ``moves only``: the doubtful images are moved and nothing else changes.

Printed: ARI against the true classes after 0, 1, 2, 5 and 10 rounds, per
kind and arm (the random arm averaged over ``--random-runs`` draws).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402
from quality import (  # noqa: E402
    HED_WEIGHTS,
    KINDS,
    MapModel,
    _atomic_npy,
    decode_all,
    make_set,
    set_families,
    weights_label,
)
from quality_settings import derive, shipped_default  # noqa: E402

from featclust import images  # noqa: E402

FEATURES_VERSION = 1
ROUNDS_SHOWN = (0, 1, 2, 5, 10)


# ---------------------------------------------------------------- the labelled sets


def kind_set(cache, kind, per_kind, seed):
    """``(paths, true labels as ints)`` of the kind's set, written once under ``cache``."""
    fams = set_families(kind, small=False)
    per = max(2, round(per_kind / len(fams)))
    paths, names = make_set(Path(cache) / "sets", kind, fams, per, seed)
    classes = {c: i for i, c in enumerate(sorted(set(names)))}
    return paths, np.array([classes[c] for c in names])


def features(cache, kind, paths, model, spec, log, batch=48):
    """The set's default feature vectors (``derive`` of the block maps), cached as ``.npy``."""
    key = hashlib.sha1(
        json.dumps(
            [
                FEATURES_VERSION,
                paths[0].parent.name,
                model.identity,
                spec.name,
                images.DECODE_VERSION,
            ]
        ).encode()
    ).hexdigest()[:16]
    path = Path(cache) / "features" / f"{kind}-{key}.npy"
    if path.is_file():
        return np.load(path)
    log(f"  forward pass: {kind}, {len(paths)} images")
    parts = []
    for s in range(0, len(paths), batch):
        gray = decode_all(paths[s : s + batch])[0]
        parts.append(derive(model.maps(gray), spec))
    X = np.concatenate(parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_npy(path, X)
    return X


# ---------------------------------------------------------------- the simulated person


def draft(X, k):
    """``(Z, labels)``: featclust's default clustering at the true k, in its reduced space."""
    from featclust.cluster import FeatureKMeans

    model = FeatureKMeans(n_clusters=k, random_state=0).fit(X)
    return np.asarray(model.reduced_, dtype=np.float64), model.labels_.astype(np.int64)


def centres_of(Z, labels, k):
    """The members' mean of every cluster (NaN for an empty one), as a re-fitted model has."""
    C = np.full((k, Z.shape[1]), np.nan)
    for c in range(k):
        if np.any(labels == c):
            C[c] = Z[labels == c].mean(axis=0)
    return C


def correct(labels, truth, rows):
    """Labels after the person moves ``rows`` to the cluster where most of their class lies."""
    k = int(labels.max()) + 1
    home = {c: int(np.argmax(np.bincount(labels[truth == c], minlength=k))) for c in set(truth)}
    out = labels.copy()
    out[rows] = [home[c] for c in truth[rows]]
    return out


def curate(Z, labels, truth, rounds, per_round, choose, resort, seed=0):
    """ARI after each of ``rounds`` rounds (index 0: the draft).

    ``choose``: "doubt" (the most doubtful unfixed images) or "random";
    ``resort``: ``f(Z, labels, fixed, random_state)`` or None (only the moves).
    """
    from sklearn.metrics import adjusted_rand_score

    from featclust.relabel import doubt

    rng = np.random.default_rng(seed)
    k = int(labels.max()) + 1
    fixed = np.zeros(len(labels), bool)
    aris = [adjusted_rand_score(truth, labels)]
    for _ in range(rounds):
        free = np.flatnonzero(~fixed)
        if choose == "doubt":
            d = doubt(Z, labels, centres_of(Z, labels, k))[free]
            rows = free[np.argsort(-d, kind="stable")[:per_round]]
        else:
            rows = rng.choice(free, min(per_round, len(free)), replace=False)
        labels = correct(labels, truth, rows)
        fixed[rows] = True
        if resort is not None:
            labels = resort(Z, labels, fixed, random_state=0)
        aris.append(adjusted_rand_score(truth, labels))
    return np.array(aris)


def arms(Z, labels, truth, args, resort):
    """``{arm: ARI per round}`` of the three arms (the random one averaged over its draws)."""
    rand = np.mean(
        [
            curate(Z, labels, truth, args.rounds, args.per_round, "random", resort, seed=s)
            for s in range(args.random_runs)
        ],
        axis=0,
    )
    return {
        "re-sort": curate(Z, labels, truth, args.rounds, args.per_round, "doubt", resort),
        "random + re-sort": rand,
        "moves only": curate(Z, labels, truth, args.rounds, args.per_round, "doubt", None),
    }


def print_table(results, rounds):
    """Markdown: a row per kind and arm, a column per round shown."""
    shown = [r for r in ROUNDS_SHOWN if r <= rounds]
    print("| kind | arm | " + " | ".join(f"round {r}" for r in shown) + " | gain after 5 |")
    print("| --- | --- | " + " | ".join("---:" for _ in shown) + " | ---: |")
    for kind, by_arm in results.items():
        for arm, aris in by_arm.items():
            gain = f"{aris[5] - aris[0]:+.3f}" if rounds >= 5 else ""
            cells = " | ".join(f"{aris[r]:.3f}" for r in shown)
            print(f"| {kind} | {arm} | {cells} | {gain} |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", default=",".join(KINDS), help="kinds of images (%(default)s)")
    p.add_argument("--per-kind", type=int, default=240, help="images per kind (%(default)s)")
    p.add_argument("--seed", type=int, default=3, help="seed of the drawn sets (%(default)s)")
    p.add_argument(
        "--weights",
        default=HED_WEIGHTS if os.path.isfile(HED_WEIGHTS) else "none",
        help="VGG16 weights: a .weights.h5 file or 'none' (default: %(default)s)",
    )
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--per-round", type=int, default=20, help="images looked at a round")
    p.add_argument("--random-runs", type=int, default=5, help="draws of the random arm")
    p.add_argument("--embed-only", action="store_true", help="make the features and stop")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "featclust-curation"),
        help="folder of the generated sets and their features",
    )
    args = p.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    return args


def main(argv=None):
    args = parse_args(argv)
    t0 = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    spec = shipped_default()[0]
    model = MapModel(args.weights, batch_size=args.batch_size)
    data = {}
    for kind in args.kinds:
        paths, truth = kind_set(args.cache, kind, args.per_kind, args.seed)
        data[kind] = (features(args.cache, kind, paths, model, spec, log), truth)
    log(f"features ready: {time.perf_counter() - t0:.0f} s")
    if args.embed_only:
        return 0
    from featclust.relabel import resort_labels

    print(describe())
    print(f"weights: {weights_label(args.weights)}; {args.per_round} images a round")
    results = {}
    for kind, (X, truth) in data.items():
        Z, labels = draft(X, len(set(truth)))
        results[kind] = arms(Z, labels, truth, args, resort_labels)
        log(f"  {kind}: {time.perf_counter() - t0:.0f} s")
    print_table(results, args.rounds)
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
