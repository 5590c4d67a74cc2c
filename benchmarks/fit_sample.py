"""How large must ``fit_sample`` be? Sampled fits vs the full fit on planted clusters.

For each number of rows, a synthetic matrix of planted clusters (unequal sizes,
overlapping, ``--dim`` wide, float32) is written to a file and memory-mapped,
as the store hands features to clustering. ``FeatureKMeans`` is fitted on all
rows (``fit_sample=None``) and on samples of several sizes, each fit in its own
process; printed per fit: wall time, the peak of numpy/Python allocations
(tracemalloc; the memory-mapped pages are file cache, not counted), the peak
RSS (counts the mapped pages read), the ARI of the labels against the full
fit's labels and against the planted truth. The CPU flags and the load are
printed first: the machine is shared.

    .venv/bin/python benchmarks/fit_sample.py --rows 32000 200000 \\
        --samples 10000 25000 50000 100000

One fit alone: ``--one FILE N SAMPLE`` (used by the above).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from machine import describe

K = 20


def planted(path, n, d, k, spread, alpha=2.0, seed=0, chunk=20000):
    """Write ``n`` x ``d`` rows of ``k`` planted clusters to ``path``; return the truth."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (k, d)).astype(np.float32)
    weights = rng.dirichlet(np.full(k, alpha))
    truth = rng.choice(k, n, p=weights)
    with open(path, "wb") as f:
        for a in range(0, n, chunk):
            t = truth[a : a + chunk]
            (centers[t] + rng.normal(0, 1, (len(t), d)).astype(np.float32)).tofile(f)
    return truth


def one(path, n, d, sample, n_init):
    import resource
    import tracemalloc

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from featclust.cluster import FeatureKMeans

    X = np.memmap(path, np.float32, "r", shape=(n, d))
    tracemalloc.start()
    t = time.perf_counter()
    model = FeatureKMeans(n_clusters=K, n_init=n_init, fit_sample=None if sample == 0 else sample)
    model.fit(X)
    wall = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.save(path + f".labels{sample}.npy", model.labels_)
    print(
        json.dumps(
            {
                "n": n,
                "sample": sample,
                "wall_s": round(wall, 2),
                "peak_alloc_mb": round(peak / 2**20, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[32000, 200000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--samples", type=int, nargs="+", default=[10000, 25000, 50000, 100000])
    ap.add_argument(
        "--spread",
        type=float,
        default=0.12,
        help="sd of the planted centres; the noise has sd 1 (default 0.12: "
        "neighbouring clusters overlap a little)",
    )
    ap.add_argument(
        "--alpha",
        type=float,
        default=2.0,
        help="Dirichlet concentration of the cluster sizes (default 2: unequal; 50: about equal)",
    )
    ap.add_argument("--n-init", type=int, default=4)
    ap.add_argument("--dir", default=None, help="where the matrices go (default: a temp dir)")
    ap.add_argument("--one", nargs=3, metavar=("FILE", "N", "SAMPLE"))
    args = ap.parse_args()
    if args.one:
        return one(args.one[0], int(args.one[1]), args.dim, int(args.one[2]), args.n_init)

    from sklearn.metrics import adjusted_rand_score

    print(describe())
    print(f"k={K}, dim={args.dim}, spread={args.spread}, alpha={args.alpha}, n_init={args.n_init}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.rows:
            path = os.path.join(tmp, f"X{n}.f32")
            truth = planted(path, n, args.dim, K, args.spread, args.alpha)
            full = None
            for sample in [0] + [s for s in args.samples if s < n]:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--dim",
                        str(args.dim),
                        "--n-init",
                        str(args.n_init),
                        "--one",
                        path,
                        str(n),
                        str(sample),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                row = json.loads(out.stdout.strip().splitlines()[-1])
                labels = np.load(path + f".labels{sample}.npy")
                if sample == 0:
                    full = labels
                row["ari_vs_full"] = round(adjusted_rand_score(full, labels), 4)
                row["ari_vs_truth"] = round(adjusted_rand_score(truth, labels), 4)
                row["load"] = round(os.getloadavg()[0], 2)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
