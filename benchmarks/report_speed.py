"""How long the report takes for a large set.

The 2-D map before (scikit-learn) and after (openTSNE).

Makes N synthetic 512-d features (a mixture of K Gaussian groups), N tiny
dot images (64x64 PNGs, drawn with featclust.samples), an output folder as
``sort`` leaves it (labels.csv, model.npz, featclust.json), then times:

* the 2-D map alone for a range of sizes: PCA, the map before (scikit-learn's
  Barnes-Hut t-SNE after PCA to 50 dimensions, as featclust 0.x made it) and
  after (openTSNE with FFT-accelerated gradients, :func:`featclust.report.embed_2d`),
  each with how well the map keeps the structure: the share of every point's
  10 nearest neighbours in feature space that are among its 10 nearest on the
  map ("kNN kept"), and how often a point's 10 nearest map neighbours vote
  for its true group ("10-NN acc.");
* the whole report (montages, overview, both maps, index.html) for all N,
  with the PCA map and (unless --no-full-tsne) with the t-SNE map;
* optionally (--embed-sample M) the VGG16 forward pass on M images with
  random weights, extrapolated to N, for the ratio report / embedding.

Usage::

    python benchmarks/report_speed.py                      # N=32000, K=20
    python benchmarks/report_speed.py --n 5000 --no-full-tsne --embed-sample 64
    python benchmarks/report_speed.py --maps-only --n 32000 --map-sizes 2000,5000,10000,32000 \
        --before-max 10000                                 # the before/after table only

Measured (2-core AMD EPYC, flags fma sse4_1 sse4_2 avx sse4a avx2, no AVX-512; the machine
was shared with other jobs, load average 5-7 on 2 cores, for all rows but the last, so
compare ratios and CPU seconds), 20 groups, 512-d::

      n    pca        before: sklearn t-SNE          after: openTSNE          speed-up
                 wall s (CPU s)  kNN kept/10-NN acc  wall s (CPU s)  kNN kept/10-NN acc
   2000   1.04     61.2 ( 34.4)  0.212/1.000           34.5 ( 22.9)  0.210/1.000   1.8x
   5000   0.66    106.2 ( 64.5)  0.100/1.000           50.0 ( 38.0)  0.100/1.000   2.1x
  10000   3.14    302.3 (137.4)  0.057/1.000          144.3 ( 49.0)  0.059/1.000   2.1x (2.8x CPU)
  32000   3.63    not run (17 min in issue 12)        154.6 ( 90.7)  0.021/1.000   (loaded)
  32000   1.20                                         44.7 ( 70.3)  0.021/1.000   (load 1.5)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import describe

from featclust import report, samples
from featclust.cluster import FeatureKMeans
from featclust.output import LABELS_CSV, MODEL_NPZ, OutputFolder, RunRecord
from featclust.tables import labels_csv


def synthetic_features(n, k, seed=0):
    """``(X, truth)``: N ReLU-like 512-d features in K Gaussian groups."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, 512)).astype(np.float32) * 3
    truth = rng.integers(0, k, n)
    X = (centres[truth] + rng.normal(0, 1, (n, 512))).astype(np.float32)
    return np.maximum(X, 0), truth  # ReLU-like, as pooled VGG16 features are


def make_output(root, n, k, seed=0):
    """A sort-like output folder for N synthetic images; returns (out, features, model)."""
    X, truth = synthetic_features(n, k, seed)

    image_dir = root / "images"
    image_dir.mkdir()
    fams = samples.DOT_FAMILIES
    t = time.perf_counter()
    paths = []
    for i in range(n):
        img = samples.draw_dots(fams[truth[i] % len(fams)], np.random.default_rng(i), size=64)
        rel = f"img_{i:05d}.png"
        img.save(image_dir / rel)
        paths.append(rel)
    print(f"wrote {n} 64x64 images in {time.perf_counter() - t:.1f} s")

    model = FeatureKMeans(n_clusters=k, random_state=seed, n_init=1).fit(X)
    out = OutputFolder(root / "out", image_dir)
    record = RunRecord(
        command="sort",
        created="benchmark",
        image_dir=str(image_dir),
        feature_settings={},
        clustering=model.get_params(),
        embedder={"weights": "synthetic", "pooling": "avg"},
        counts={"images": n, "bad_files": 0},
    )
    out.claim([LABELS_CSV, MODEL_NPZ], record)
    outliers = model.distances_ > model.thresholds_[model.labels_]
    out.write_text(LABELS_CSV, labels_csv(paths, model.labels_, model.distances_, outliers))
    buf = io.BytesIO()
    model.save(buf)
    out.write_bytes(MODEL_NPZ, buf.getvalue())
    out.write_marker(None, "complete")
    return out.path, X, model


def timed(fn, *args, **kwargs):
    """``(value, wall seconds)``; the CPU seconds of the call go to ``timed.cpu``."""
    t, c = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    timed.cpu = time.process_time() - c
    return value, time.perf_counter() - t


def tsne_before(Z, random_state=0):
    """The map as featclust made it before openTSNE: scikit-learn's Barnes-Hut t-SNE."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    Z = np.asarray(Z, np.float32)
    n = len(Z)
    dims = min(50, n, Z.shape[1])
    Z50 = PCA(dims, random_state=random_state).fit_transform(Z) if Z.shape[1] > dims else Z
    tsne = TSNE(
        2,
        perplexity=min(30.0, (n - 1) / 3),
        init="pca",
        learning_rate="auto",
        random_state=random_state,
    )
    with threadpool_limits(1 if n < report.layout.SMALL_MAP else None):
        return tsne.fit_transform(Z50).astype(np.float32)


def _neighbours(A, k):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(A)
    return nn.kneighbors(A, return_distance=False)[:, 1:]


def map_quality(Z, xy, truth, k=10):
    """``(kNN kept, 10-NN accuracy)`` of the map ``xy`` of features ``Z``."""
    high, low = _neighbours(np.asarray(Z, np.float32), k), _neighbours(xy, k)
    kept = np.mean([len(np.intersect1d(a, b, assume_unique=True)) / k for a, b in zip(high, low)])
    votes = truth[low]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float(kept), float(np.mean(pred == truth))


def compare_maps(n_max, k, sizes, before_max):
    """The before/after table of the 2-D map alone, on synthetic features."""
    X, truth = synthetic_features(n_max, k)
    print(
        "\n2-D map alone, before (scikit-learn t-SNE) and after (openTSNE, FFT) "
        "(seconds, CPU seconds of all threads in brackets; kNN kept / 10-NN acc.):"
    )
    print(f"{'n':>7} {'pca':>6} {'before: sklearn':>28} {'after: openTSNE':>28} {'speed-up':>8}")
    for size in sizes:
        idx = np.random.default_rng(1).choice(n_max, size, replace=False)
        Z, t = X[idx], truth[idx]
        _, t_pca = timed(report.embed_2d, Z, "pca")
        row = f"{size:>7} {t_pca:>6.2f}"
        t_before = None
        if size <= before_max:
            xy, t_before = timed(tsne_before, Z)
            cpu = timed.cpu
            kept, acc = map_quality(Z, xy, t)
            row += f" {t_before:>7.1f} ({cpu:6.1f}) {kept:.3f}/{acc:.3f}"
        else:
            row += f" {'not run':>28}"
        xy, t_after = timed(report.embed_2d, Z, "tsne")
        cpu = timed.cpu
        kept, acc = map_quality(Z, xy, t)
        row += f" {t_after:>7.1f} ({cpu:6.1f}) {kept:.3f}/{acc:.3f}"
        row += f" {t_before / t_after:>7.1f}x" if t_before else ""
        print(row, flush=True)


def embed_rate(m):
    from featclust.embed import Embedder

    emb = Embedder(weights="none")
    gray = np.full((m, 224, 224), 255, np.uint8)
    emb.embed(gray[: emb.batch])  # build and trace once
    _, s = timed(emb.embed, gray)
    return m / s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument(
        "--map-sizes",
        default="2000,5000,10000,32000",
        help="sizes at which the map alone is timed (comma-separated)",
    )
    ap.add_argument(
        "--before-max",
        type=int,
        default=10000,
        help="largest size the scikit-learn map (before) is timed at; it took "
        "17 min for 32,000 images on 2 cores",
    )
    ap.add_argument(
        "--maps-only", action="store_true", help="only the before/after table of the map alone"
    )
    ap.add_argument(
        "--no-full-tsne", action="store_true", help="skip the whole report with the t-SNE map at N"
    )
    ap.add_argument(
        "--embed-sample",
        type=int,
        default=0,
        help="time the VGG16 forward pass on this many images (0: skip)",
    )
    args = ap.parse_args()
    print(
        f"CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, "
        f"report.TSNE_MAX_IMAGES = {report.TSNE_MAX_IMAGES}"
    )
    print(describe())
    sizes = [int(s) for s in args.map_sizes.split(",") if s and int(s) <= args.n]
    compare_maps(args.n, args.k, sizes, args.before_max)
    if args.maps_only:
        return

    with tempfile.TemporaryDirectory(prefix="featclust-report-bench-") as tmp:
        out, X, model = make_output(Path(tmp), args.n, args.k)
        Z = model.reduce(X)

        big = Z[: min(args.n, report.TSNE_MAX_IMAGES)]
        cache = Path(tmp) / "maps"
        _, t_first = timed(report.cached_2d, big, "tsne", 0, cache)
        _, t_again = timed(report.cached_2d, big, "tsne", 0, cache)
        print(
            f"\nt-SNE map of {len(big)} images through the cache: first {t_first:.1f} s, "
            f"again (another k, same features) {t_again:.2f} s",
            flush=True,
        )

        print(f"\nwhole report, {args.n} images, {args.k} clusters:")
        res, t_pca_report = timed(
            report.write_report, out, features=X, model=model, map_method="pca"
        )
        files = sum((out / f).stat().st_size for f in res.files)
        print(
            f"  map=pca : {t_pca_report:7.1f} s (CPU {timed.cpu:.1f} s; {len(res.files)} files, "
            f"{files / 1e6:.1f} MB)",
            flush=True,
        )
        t_tsne_report = None
        if not args.no_full_tsne:
            res, t_tsne_report = timed(
                report.write_report, out, features=X, model=model, map_method="tsne"
            )
            print(f"  map=tsne: {t_tsne_report:7.1f} s (CPU {timed.cpu:.1f} s)", flush=True)
        marker = json.loads((out / "featclust.json").read_text())
        assert all(f in marker["files"] for f in res.files)

    if args.embed_sample:
        rate = embed_rate(args.embed_sample)
        embed_s = args.n / rate
        print(
            f"\nVGG16 forward pass (random weights, {args.embed_sample} images): "
            f"{rate:.1f} images/s -> {embed_s / 60:.1f} min for {args.n} images"
        )
        print(f"report (pca) / embedding: {t_pca_report / embed_s:.4f}")
        if t_tsne_report is not None:
            print(f"report (tsne) / embedding: {t_tsne_report / embed_s:.4f}")


if __name__ == "__main__":
    main()
