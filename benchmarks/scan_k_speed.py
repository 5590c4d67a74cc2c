"""How long ``featclust scan-k --k 2:30`` takes at the motivating scale.

And whether the fast path keeps the answer.

Usage::

    python benchmarks/scan_k_speed.py                      # 32,000 x 512, 12 groups, k = 2..30
    python benchmarks/scan_k_speed.py --reference 2,12,30  # also time plain k-means at these k
    python benchmarks/scan_k_speed.py --features F.npy     # your own stored features

The synthetic features are Gaussian blobs (scikit-learn ``make_blobs``) whose
groups overlap a good deal in 512 dimensions (silhouette about 0.08), so a
wrong k is easy to pick. The scan is :class:`featclust.kscan.KScan` with its
defaults, exactly what ``featclust scan-k`` runs on the stored features.

``--reference`` times, in the same run and on the same features, the plain
recipe for a few k: scikit-learn ``KMeans(n_init=3)`` on all rows and all 512
dimensions, then ``silhouette_score(sample_size=2000)``,
``davies_bouldin_score`` and ``calinski_harabasz_score``; and prints how
closely the scan's clustering at that k agrees with it (adjusted Rand index).
"""

import argparse
import os
import time

import numpy as np


def blobs(n, dim, groups, seed):
    from sklearn.datasets import make_blobs

    X, y = make_blobs(
        n_samples=n,
        n_features=dim,
        centers=groups,
        cluster_std=6.0,
        center_box=(-5.0, 5.0),
        random_state=seed,
    )
    return X.astype(np.float32), y


def reference(X, k, seed):
    from sklearn.cluster import KMeans
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score, silhouette_score

    t = time.perf_counter()
    labels = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(X)
    sil = silhouette_score(X, labels, sample_size=2000, random_state=seed)
    davies_bouldin_score(X, labels)
    calinski_harabasz_score(X, labels)
    return labels, sil, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=32000, help="rows (default 32000)")
    p.add_argument("--dim", type=int, default=512, help="feature length (default 512)")
    p.add_argument("--groups", type=int, default=12, help="true number of groups (default 12)")
    p.add_argument("--k", default="2:30", help="k range (default 2:30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--features", help="a .npy file of features to scan instead of blobs")
    p.add_argument(
        "--reference",
        default="",
        metavar="K,K,...",
        help="also time plain full k-means and scores at these k",
    )
    args = p.parse_args()

    from sklearn.metrics import adjusted_rand_score

    from featclust.kscan import KScan, parse_k_range
    from featclust.tables import kscan_table

    if args.features:
        X, y = np.load(args.features).astype(np.float32), None
    else:
        X, y = blobs(args.n, args.dim, args.groups, args.seed)
    ks = parse_k_range(args.k)
    print(
        f"features: {X.shape[0]} x {X.shape[1]}"
        + (f", {args.groups} true groups" if y is not None else "")
        + f"; k = {ks[0]}..{ks[-1]} ({len(ks)} values); {os.cpu_count()} CPUs; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )

    t = time.perf_counter()
    scan = KScan(ks=ks, random_state=args.seed).fit(X)
    elapsed = time.perf_counter() - t
    print(kscan_table(scan.scores_, scan.suggested_k_), end="")
    print(f"suggested k = {scan.suggested_k_}: {scan.reason_}")
    if y is not None:
        ari = adjusted_rand_score(y, scan.scan_labels_[scan.ks_.index(scan.suggested_k_)])
        print(
            f"  true k = {args.groups}; ARI of the scan's clustering at the suggestion "
            f"vs the true groups: {ari:.3f}"
        )
    print(
        f"scan time: {elapsed:.1f} s for {len(scan.ks_)} k ({elapsed / len(scan.ks_):.2f} s "
        f"per k); load average after: {os.getloadavg()[0]:.2f}"
    )

    ref_ks = [int(k) for k in args.reference.split(",") if k.strip()]
    if ref_ks:
        total = 0.0
        print("reference: KMeans(n_init=3) on all rows and dimensions + sklearn scores")
        for k in ref_ks:
            labels, sil, dt = reference(X, k, args.seed)
            total += dt
            row = {c: v[list(scan.scores_["k"]).index(k)] for c, v in scan.scores_.items()}
            agree = adjusted_rand_score(labels, scan.scan_labels_[scan.ks_.index(k)])
            print(
                f"  k={k:3d}: {dt:6.1f} s; silhouette {sil:.4f} (scan {row['silhouette']:.4f}); "
                f"ARI reference vs scan clustering {agree:.3f}"
                + (
                    f"; reference vs truth {adjusted_rand_score(y, labels):.3f}"
                    if y is not None
                    else ""
                )
            )
        per_k = total / len(ref_ks)
        print(
            f"reference: {per_k:.1f} s per k on average, i.e. about {per_k * len(scan.ks_):.0f} s "
            f"for {len(scan.ks_)} k without any stability runs "
            f"({per_k * len(scan.ks_) / elapsed:.0f}x the scan; measured in this run)"
        )


if __name__ == "__main__":
    main()
