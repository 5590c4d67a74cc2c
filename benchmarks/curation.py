"""Learning from the corrections: a simulated person curates labelled folders.

Usage::

    nice python benchmarks/curation.py              # HED weights if present, else random
    python benchmarks/curation.py --embed-only      # only make (and cache) the features
    python benchmarks/curation.py --alternatives    # also the re-sort methods not chosen
    python benchmarks/curation.py --seeds 3,4       # two sets a kind, the table averaged

Draws a labelled set (``--per-kind`` images, 240) of each kind the quality
benchmark has (dots, silhouettes, glyphs, textures, lines:
:mod:`featclust.samples`, through ``benchmarks/quality.py``'s helpers), one
per seed in ``--seeds``, embeds it once with featclust's default features
(VGG16 block4+block5, max pooling; HED-VGG16 weights, see HED_WEIGHTS.md)
and caches the vectors under ``--cache``, so a rerun costs no forward pass
(about 2 minutes a set on 2 busy cores the first time). The draft is
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
kind and arm (the random arm averaged over ``--random-runs`` draws, every
arm averaged over the sets of a kind). ``--alternatives`` adds a row per
method measured against the default (spreading variants, seeded and
constrained k-means, a classifier, a learnt metric).
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


# ---------------------------------------------------------------- the methods not chosen


def _on_rows(method):
    """A ``resort`` of :func:`curate` from a method of (Z, labels, fixed) -> labels."""

    def resort(Z, labels, fixed, random_state=0):
        if not fixed.any():
            return labels
        return np.where(fixed, labels, method(Z, labels, fixed))

    return resort


def _centres(Z, labels, k, rows=None):
    rows = np.ones(len(labels), bool) if rows is None else rows
    return np.array(
        [
            Z[rows & (labels == c)].mean(axis=0)
            if np.any(rows & (labels == c))
            else np.full(Z.shape[1], 1e3)
            for c in range(k)
        ]
    )


def _kmeans(Z, labels, fixed, C, iterations=20):
    """Lloyd steps from centres ``C``, the fixed images held in their clusters."""
    k = len(C)
    y = labels
    for _ in range(iterations):
        d2 = ((Z[:, None, :] - C[None]) ** 2).sum(axis=-1)
        y = np.where(fixed, labels, d2.argmin(axis=1))
        C = _centres(Z, y, k)
    return y


def seeded_kmeans(Z, labels, fixed):
    """Seeded k-means (Basu et al. 2002): centres from the fixed members where a
    cluster has any, else from its members; the fixed images stay (constrained)."""
    k = int(labels.max()) + 1
    has = np.isin(np.arange(k), labels[fixed])
    C = np.where(has[:, None], _centres(Z, labels, k, fixed), _centres(Z, labels, k))
    return _kmeans(Z, labels, fixed, C)


def constrained_kmeans(Z, labels, fixed):
    """k-means from the current clusters' means, the fixed images held."""
    return _kmeans(Z, labels, fixed, _centres(Z, labels, int(labels.max()) + 1))


def classifier(Z, labels, fixed, unfixed_weight=0.1):
    """Logistic regression on the fixed images (weight 1) and the rest (0.1)."""
    from sklearn.linear_model import LogisticRegression

    w = np.where(fixed, 1.0, unfixed_weight)
    model = LogisticRegression(C=10.0, max_iter=500).fit(Z, labels, sample_weight=w)
    return model.classes_[model.predict_proba(Z).argmax(axis=1)]


def lda_then_spread(Z, labels, fixed):
    """A metric learnt from the fixed images (LDA, fixed rows counted 6 times), then
    the default spreading in it."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from featclust.relabel import spread_labels

    Xt = np.concatenate([Z] + [Z[fixed]] * 5)
    yt = np.concatenate([labels] + [labels[fixed]] * 5)
    T = LinearDiscriminantAnalysis(solver="eigen", shrinkage=0.5).fit(Xt, yt).transform(Z)
    return spread_labels(T, labels, fixed)


def alternatives():
    """``{name: resort}``: the methods measured against the default."""
    from featclust.relabel import spread_labels

    def spreading(**kw):
        return lambda Z, y, f: spread_labels(Z, y, f, **kw)

    return {
        "default: spreading, 7 neighbours, alpha 0.95, fixed x2, margin 50%": _on_rows(spreading()),
        "spreading, 10 neighbours, alpha 0.99, fixed x20 (first try)": _on_rows(
            spreading(n_neighbors=10, alpha=0.99, fixed_weight=20.0, margin=0.0, iterations=100)
        ),
        "spreading, 10 neighbours, alpha 0.9, fixed x1": _on_rows(
            spreading(n_neighbors=10, alpha=0.9, fixed_weight=1.0, margin=0.0)
        ),
        "default without the margin": _on_rows(spreading(margin=0.0)),
        "seeded k-means (constrained)": _on_rows(seeded_kmeans),
        "k-means from the current clusters (constrained)": _on_rows(constrained_kmeans),
        "logistic regression, fixed x10": _on_rows(classifier),
        "LDA metric from the fixed images, then the default": _on_rows(lda_then_spread),
    }


def compare(data, args):
    """One row per method: mean ARI over rounds 1-10, the smallest gain after 5 rounds,
    and in how many of the (kind, round 1/2/5/10) cells it is at least as good as
    both baselines (0.005 leeway)."""
    shown = [r for r in ROUNDS_SHOWN if 0 < r <= args.rounds]
    moves = {
        kind: curate(Z, y, t, args.rounds, args.per_round, "doubt", None)
        for kind, (Z, y, t) in data.items()
    }
    print()
    print("| method | mean ARI, rounds 1-10 | smallest gain after 5 | cells beating both |")
    print("| --- | ---: | ---: | ---: |")
    for name, resort in alternatives().items():
        means, gains, wins = [], [], 0
        for kind, (Z, y, t) in data.items():
            a = curate(Z, y, t, args.rounds, args.per_round, "doubt", resort)
            r = np.mean(
                [
                    curate(Z, y, t, args.rounds, args.per_round, "random", resort, seed=s)
                    for s in range(args.random_runs)
                ],
                axis=0,
            )
            means.append(a[1:].mean())
            gains.append(a[min(5, args.rounds)] - a[0])
            wins += sum(a[i] >= max(r[i], moves[kind][i]) - 0.005 for i in shown)
        print(
            f"| {name} | {np.mean(means):.3f} | {min(gains):+.3f} | "
            f"{wins}/{len(shown) * len(data)} |",
            flush=True,
        )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kinds", default=",".join(KINDS), help="kinds of images (%(default)s)")
    p.add_argument("--per-kind", type=int, default=240, help="images per kind (%(default)s)")
    p.add_argument(
        "--seeds", default="3", help="seeds of the drawn sets, one set a kind each (%(default)s)"
    )
    p.add_argument(
        "--weights",
        default=HED_WEIGHTS if os.path.isfile(HED_WEIGHTS) else "none",
        help="VGG16 weights: a .weights.h5 file or 'none' (default: %(default)s)",
    )
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--per-round", type=int, default=20, help="images looked at a round")
    p.add_argument("--random-runs", type=int, default=5, help="draws of the random arm")
    p.add_argument("--embed-only", action="store_true", help="make the features and stop")
    p.add_argument("--alternatives", action="store_true", help="also score the methods not chosen")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--cache",
        default=os.path.join(tempfile.gettempdir(), "featclust-curation"),
        help="folder of the generated sets and their features",
    )
    args = p.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    args.seeds = [int(x) for x in args.seeds.split(",") if x]
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
        for seed in args.seeds:
            paths, truth = kind_set(args.cache, kind, args.per_kind, seed)
            X = features(args.cache, kind, paths, model, spec, log)
            data[(kind, seed)] = draft(X, len(set(truth))) + (truth,)
    log(f"features ready: {time.perf_counter() - t0:.0f} s")
    if args.embed_only:
        return 0
    from featclust.relabel import resort_labels

    print(describe())
    print(
        f"weights: {weights_label(args.weights)}; {args.per_kind} images a kind, sets drawn "
        f"with seeds {args.seeds}; {args.per_round} images a round"
    )
    results = {}
    for (kind, _), (Z, labels, truth) in data.items():
        got = arms(Z, labels, truth, args, resort_labels)
        for arm, aris in got.items():
            results.setdefault(kind, {}).setdefault(arm, []).append(aris)
    results = {
        kind: {arm: np.mean(v, axis=0) for arm, v in by_arm.items()}
        for kind, by_arm in results.items()
    }
    print_table(results, args.rounds)
    if args.alternatives:
        compare(data, args)
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
