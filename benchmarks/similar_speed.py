"""Speed and memory of `similar` and `duplicates` on 32,000 x 512 synthetic features.

The features are written to an .npy file and memory-mapped, as the store
serves them. Each measurement runs in a fresh subprocess, so its peak RSS
(``ru_maxrss``) is its own; the matrix itself is 62.5 MB, paged in from the
file. Measured:

* ``top_similar``: 1, 100 and all 32,000 queries, top 10 (featclust.search),
* ``near_duplicate_groups``: every pair (what `duplicates` runs),
* for comparison, scikit-learn's ``NearestNeighbors(metric="cosine",
  algorithm="brute")`` (exact) and, when importable, FAISS exact
  (``IndexFlatIP``) and approximate (``IndexHNSWFlat``, with its recall@10
  against the exact answer).

Synthetic features: 3,200 cluster centres (ReLU of Gaussians, as pooled CNN
features are non-negative), 10 rows around each, plus 200 planted near-copies.

Usage::

    python benchmarks/similar_speed.py [--rows 32000] [--dim 512]
    PYTHONPATH=/tmp/faiss python benchmarks/similar_speed.py   # with faiss-cpu

Prints the CPU flags first.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from machine import describe

CASES = (
    "top1",
    "top100",
    "top_all",
    "duplicates",
    "sklearn_top100",
    "sklearn_top_all",
    "faiss_flat_top_all",
    "faiss_hnsw_top_all",
)


def make_features(path, n, d, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.maximum(rng.standard_normal((n // 10, d)), 0).astype(np.float32)
    F = centres[np.arange(n) % len(centres)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    F = np.maximum(F, 0)
    copies = rng.choice(n, 400, replace=False)
    F[copies[:200]] = F[copies[200:]] + 0.001 * rng.standard_normal((200, d)).astype(np.float32)
    np.save(path, F)


def run_case(case, path, top=10):
    """One measurement (in its own process): seconds, and extra values."""
    F = np.load(path, mmap_mode="r")
    n = len(F)
    queries = {"top1": 1, "top100": 100, "sklearn_top100": 100}.get(case, n)
    Q = np.asarray(F[:queries])
    extra = {}
    if case.startswith("top") or case == "duplicates":
        from featclust.search import near_duplicate_groups, top_similar
    elif case.startswith("sklearn"):
        from sklearn.neighbors import NearestNeighbors
    else:
        import faiss
    t = time.perf_counter()
    if case.startswith("top") or case == "duplicates":
        if case == "duplicates":
            groups = near_duplicate_groups(F)
            extra["groups"] = len(groups)
        else:
            idx, _ = top_similar(F, Q, top)
            np.save(path + f".{case}.npy", idx)
    elif case.startswith("sklearn"):
        nn = NearestNeighbors(n_neighbors=top, metric="cosine", algorithm="brute").fit(F)
        nn.kneighbors(Q)
    else:
        X = np.asarray(F, dtype=np.float32).copy()
        faiss.normalize_L2(X)
        Qn = X[:queries].copy()
        if case == "faiss_flat_top_all":
            index = faiss.IndexFlatIP(X.shape[1])
        else:
            index = faiss.IndexHNSWFlat(X.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.add(X)
        extra["build_s"] = round(time.perf_counter() - t, 2)
        _, idx = index.search(Qn, top)
        exact = path + ".top_all.npy"
        if os.path.exists(exact):
            ref = np.load(exact)
            extra["recall@10"] = round(
                float(np.mean([len(set(a) & set(b)) / top for a, b in zip(idx, ref)])), 4
            )
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "seconds": round(seconds, 3), "peak_rss_mb": round(rss), **extra}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.path)))
        return 0
    print(describe() + " (figures scale with it: compare as ratios within one run)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "features.npy")
        make_features(path, args.rows, args.dim)
        print(
            f"{args.rows} x {args.dim} float32 features, memory-mapped "
            f"({os.path.getsize(path) / 2**20:.1f} MiB)"
        )
        base = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import json, resource, numpy, featclust.search; print("
                    "json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        print(f"baseline RSS of a process that imported numpy and featclust.search: {base:.0f} MB")
        for case in CASES:
            proc = subprocess.run(
                [sys.executable, __file__, "--case", case, "--path", path],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{case:20s} skipped: {last}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rest = {k: v for k, v in r.items() if k not in ("case", "seconds", "peak_rss_mb")}
            print(
                f"{case:20s} {r['seconds']:8.3f} s   peak RSS {r['peak_rss_mb']:5d} MB   "
                f"{rest if rest else ''}"
            )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
