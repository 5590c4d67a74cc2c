"""How long the report takes for a large set, and where t-SNE stops being affordable.

Makes N synthetic 512-d features (a mixture of K Gaussian groups), N tiny
dot images (64x64 PNGs, drawn with featclust.samples), an output folder as
``sort`` leaves it (labels.csv, model.npz, featclust.json), then times:

* the 2-D map alone, PCA and t-SNE, for a range of sizes;
* the whole report (montages, overview, both maps, index.html) for all N,
  with the PCA map and (unless --no-full-tsne) with the t-SNE map;
* optionally (--embed-sample M) the VGG16 forward pass on M images with
  random weights, extrapolated to N, for the ratio report / embedding.

Usage::

    python benchmarks/report_speed.py                      # N=32000, K=20
    python benchmarks/report_speed.py --n 5000 --no-full-tsne --embed-sample 64
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

from featclust import report, samples
from featclust.cluster import FeatureKMeans
from featclust.output import LABELS_CSV, MODEL_NPZ, OutputFolder, RunRecord
from featclust.tables import labels_csv


def make_output(root, n, k, seed=0):
    """A sort-like output folder for N synthetic images; returns (out, features, model)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (k, 512)).astype(np.float32) * 3
    truth = rng.integers(0, k, n)
    X = (centres[truth] + rng.normal(0, 1, (n, 512))).astype(np.float32)
    X = np.maximum(X, 0)  # ReLU-like, as pooled VGG16 features are

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
    record = RunRecord(command="sort", created="benchmark", image_dir=str(image_dir),
                       feature_settings={}, clustering=model.get_params(),
                       embedder={"weights": "synthetic", "pooling": "avg"},
                       counts={"images": n, "bad_files": 0})
    out.claim([LABELS_CSV, MODEL_NPZ], record)
    out.write_text(LABELS_CSV, labels_csv(paths, model.labels_, model.distances_))
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


def embed_rate(m):
    from featclust.embed import Embedder

    emb = Embedder(weights="none")
    gray = np.full((m, 224, 224), 255, np.uint8)
    emb.embed(gray[:emb.batch])  # build and trace once
    _, s = timed(emb.embed, gray)
    return m / s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--map-sizes", default="2000,5000,10000,20000",
                    help="sizes at which the map alone is timed (comma-separated)")
    ap.add_argument("--no-full-tsne", action="store_true",
                    help="skip the whole report with the t-SNE map at N")
    ap.add_argument("--embed-sample", type=int, default=0,
                    help="time the VGG16 forward pass on this many images (0: skip)")
    args = ap.parse_args()
    print(f"CPUs: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}, "
          f"report.TSNE_MAX_IMAGES = {report.TSNE_MAX_IMAGES}")

    with tempfile.TemporaryDirectory(prefix="featclust-report-bench-") as tmp:
        out, X, model = make_output(Path(tmp), args.n, args.k)
        Z = model.reduce(X)

        print("\n2-D map alone (seconds; CPU seconds of all threads in brackets):")
        print(f"{'n':>7} {'pca':>8} {'tsne':>18}")
        for size in [int(s) for s in args.map_sizes.split(",") if s]:
            if size > args.n:
                continue
            sub = Z[np.random.default_rng(1).choice(args.n, size, replace=False)]
            _, t_pca = timed(report.embed_2d, sub, "pca")
            _, t_tsne = timed(report.embed_2d, sub, "tsne")
            print(f"{size:>7} {t_pca:>8.2f} {t_tsne:>9.1f} ({timed.cpu:6.1f})", flush=True)

        big = Z[: min(args.n, report.TSNE_MAX_IMAGES)]
        cache = Path(tmp) / "maps"
        _, t_first = timed(report.cached_2d, big, "tsne", 0, cache)
        _, t_again = timed(report.cached_2d, big, "tsne", 0, cache)
        print(f"\nt-SNE map of {len(big)} images through the cache: first {t_first:.1f} s, "
              f"again (another k, same features) {t_again:.2f} s", flush=True)

        print(f"\nwhole report, {args.n} images, {args.k} clusters:")
        res, t_pca_report = timed(report.write_report, out, X, model, "pca")
        files = sum((out / f).stat().st_size for f in res.files)
        print(f"  map=pca : {t_pca_report:7.1f} s (CPU {timed.cpu:.1f} s; {len(res.files)} files, "
              f"{files / 1e6:.1f} MB)", flush=True)
        t_tsne_report = None
        if not args.no_full_tsne:
            res, t_tsne_report = timed(report.write_report, out, X, model, "tsne")
            print(f"  map=tsne: {t_tsne_report:7.1f} s (CPU {timed.cpu:.1f} s)", flush=True)
        marker = json.loads((out / "featclust.json").read_text())
        assert all(f in marker["files"] for f in res.files)

    if args.embed_sample:
        rate = embed_rate(args.embed_sample)
        embed_s = args.n / rate
        print(f"\nVGG16 forward pass (random weights, {args.embed_sample} images): "
              f"{rate:.1f} images/s -> {embed_s / 60:.1f} min for {args.n} images")
        print(f"report (pca) / embedding: {t_pca_report / embed_s:.4f}")
        if t_tsne_report is not None:
            print(f"report (tsne) / embedding: {t_tsne_report / embed_s:.4f}")


if __name__ == "__main__":
    main()
