"""Do the cluster flags point at the clusters a person should look at? Measured on labelled sets.

Usage::

    python benchmarks/flag_thresholds.py [--weights PATH] [--n-per-family 25] [--cache DIR]

For every kind of :mod:`featclust.samples` (dots, silhouettes, glyphs,
textures, lines) a labelled set is drawn and embedded with featclust's
default feature settings (``--weights``: the weights file, e.g. the HED
weights of benchmarks/HED_WEIGHTS.md; ImageNet's need the network). Each set
is clustered by :class:`featclust.FeatureKMeans` at the true k and at k - 2 and
k + 2 (too few clusters: some clusters are mixtures; too many: some classes
split), 3 random states each, and judged as ``sort`` judges it
(:func:`featclust.scores.judge`). A cluster is *mixed* when fewer than 80% of
its members share one class (what a person would want to split).

Printed: for thresholds of the per-cluster silhouette and of the
per-cluster stability, how many mixed clusters fall below (recall) and how
many of the clusters below are mixed (precision); and the same for the
shipped flags. The thresholds in :mod:`featclust.scores`
(``LOW_SILHOUETTE``, ``UNSTABLE_BELOW``) were chosen from this table.

Measured (HED weights, benchmarks/HED_WEIGHTS.md; 2-core AMD EPYC, AVX2;
324 clusters, 177 mixed)::

    silhouette < 0.1    flagged  48  precision 0.96  recall 0.26
    silhouette < 0.15   flagged 103  precision 0.85  recall 0.50   (shipped)
    silhouette < 0.2    flagged 155  precision 0.80  recall 0.70
    stability < 0.5     flagged  39  precision 0.87  recall 0.19
    stability < 0.6     flagged  74  precision 0.78  recall 0.33   (shipped)
    stability < 0.7     flagged 114  precision 0.75  recall 0.48
    any flag (shipped)  flagged 129  precision 0.78  recall 0.57
    by kind, flagged / of them mixed: dots 41/38, silhouettes 17/14, glyphs 27/15,
    textures 6/2, lines 38/32
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from featclust import FeatureKMeans, embed_folder  # noqa: E402
from featclust.embed import Embedder  # noqa: E402
from featclust.flags import FLAGS, LOW_SILHOUETTE, UNSTABLE_BELOW  # noqa: E402
from featclust.samples import FAMILIES, make_image_set, write_truth_csv  # noqa: E402
from featclust.scores import judge  # noqa: E402
from featclust.tables import read_truth_csv  # noqa: E402

MIXED_BELOW = 0.8


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--n-per-family", type=int, default=25)
    ap.add_argument("--cache", default=None, help="folder for the sets and the store")
    ap.add_argument("--kinds", default=",".join(FAMILIES), help="comma-separated kinds")
    args = ap.parse_args(argv)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="flag-thresholds-"))
    embedder = Embedder(weights=args.weights)
    rows = []  # (kind, k, true_k, silhouette, stability, mixed, flags)
    t0 = time.perf_counter()
    kinds = args.kinds.split(",")
    for kind in kinds:
        families = FAMILIES[kind]
        image_dir = cache / kind
        truth_csv = cache / f"{kind}-truth.csv"
        if not truth_csv.is_file():
            write_truth_csv(
                make_image_set(image_dir, args.n_per_family, kind=kind, seed=1), truth_csv
            )
        emb = embed_folder(image_dir, embedder=embedder, store=cache / "store")
        truth = read_truth_csv(truth_csv)
        classes = np.array([truth[p] for p in emb.paths])
        k_true = len(families)
        for k in (k_true - 2, k_true, k_true + 2):
            for seed in range(3):
                model = FeatureKMeans(n_clusters=k, random_state=seed).fit(emb.features)
                judged = judge(model, emb.features, random_state=seed)
                for r in judged.clusters:
                    members = classes[model.labels_ == r["cluster"]]
                    if not len(members):
                        continue
                    purity = np.unique(members, return_counts=True)[1].max() / len(members)
                    rows.append(
                        (
                            kind,
                            k,
                            k_true,
                            r["silhouette"],
                            r["stability"],
                            purity < MIXED_BELOW,
                            r["flags"],
                        )
                    )
        print(f"{kind}: {len(emb.paths)} images, {time.perf_counter() - t0:.0f} s", flush=True)
    mixed = np.array([r[5] for r in rows])
    print(f"\n{len(rows)} clusters, {mixed.sum()} mixed (largest class < {MIXED_BELOW:.0%})")

    def line(name, below):
        hit = below & mixed
        prec = hit.sum() / max(below.sum(), 1)
        rec = hit.sum() / max(mixed.sum(), 1)
        print(f"  {name:<28} flagged {below.sum():4d}  precision {prec:.2f}  recall {rec:.2f}")

    sil = np.array([np.nan if r[3] is None else r[3] for r in rows])
    stab = np.array([np.nan if r[4] is None else r[4] for r in rows])
    print("per-cluster silhouette below t:")
    for t in (0.0, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25):
        line(f"silhouette < {t}", sil < t)
    print("per-cluster stability (Jaccard) below t:")
    for t in (0.5, 0.6, 0.7, 0.8):
        line(f"stability < {t}", stab < t)
    print(f"shipped flags (LOW_SILHOUETTE {LOW_SILHOUETTE}, UNSTABLE_BELOW {UNSTABLE_BELOW}):")
    for f in FLAGS:
        line(f, np.array([f in r[6] for r in rows]))
    line("any flag", np.array([bool(r[6]) for r in rows]))
    print("by kind (any flag):")
    for kind in kinds:
        sel = np.array([r[0] == kind for r in rows])
        fl = np.array([bool(r[6]) for r in rows])
        print(
            f"  {kind:<12} clusters {sel.sum():3d} mixed {(mixed & sel).sum():3d} "
            f"flagged {(fl & sel).sum():3d} flagged&mixed {(fl & sel & mixed).sum():3d}"
        )
    print(f"cache: {cache}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
