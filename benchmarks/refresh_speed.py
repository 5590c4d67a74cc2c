"""How long bringing a report up to date takes, against writing it again: 32,000 images.

Usage::

    python benchmarks/refresh_speed.py                 # N=32000, K=20, 200 images placed
    python benchmarks/refresh_speed.py --n 5000 --no-tsne

Builds the sort-like folder of benchmarks/report_speed.py (N synthetic 512-d
features in K groups, N 64x64 dot images, labels.csv, model.npz), writes the
whole report once (t-SNE map, as ``sort`` does by default below 200,000
images; and with the PCA map), then places ``--placed`` new images into the
cluster folders as ``assign --place`` leaves them (files, labels.csv rows) and
times :func:`featclust.report.refresh_report` against :func:`write_report`
with each map. The features are handed over in every call, so the feature
store's read (the same for both) is not in the figures.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from machine import describe
from report_speed import make_output, synthetic_features, timed

from featclust import report, samples
from featclust.output import LABELS_CSV, OutputFolder, open_sorted
from featclust.tables import labels_csv


def place(out, model, n_new, k, seed=1):
    """Put ``n_new`` new images into their clusters' folders and rows into labels.csv."""
    X_new, truth = synthetic_features(n_new, k, seed)
    labels, dists = model.predict_with_distance(X_new)
    folder = open_sorted(out)
    paths, old_labels, old_dists, outliers = folder.labels(outliers=True)
    folders = [report.state.cluster_names(folder)[1][c] for c in labels]
    files = [f"{f}/new_{i:05d}.png" for i, f in enumerate(folders)]
    o = OutputFolder(out)
    o.claim(files)
    fams = samples.DOT_FAMILIES
    for i, rel in enumerate(files):
        buf = io.BytesIO()
        samples.draw_dots(fams[truth[i] % len(fams)], np.random.default_rng(10**6 + i), 64).save(
            buf, format="PNG"
        )
        o.write_bytes(rel, buf.getvalue())
    paths = list(paths) + [f.split("/", 1)[1] for f in files]
    o.write_text(
        LABELS_CSV,
        labels_csv(
            paths,
            np.concatenate([old_labels, labels]),
            np.concatenate([old_dists, dists]),
            np.concatenate([outliers, model.outliers(labels, dists)]),
        ),
    )
    o.write_marker(None, "complete")
    return X_new


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--placed", type=int, default=200)
    ap.add_argument("--no-tsne", action="store_true", help="skip the report with the t-SNE map")
    args = ap.parse_args()
    print(describe())
    with tempfile.TemporaryDirectory(prefix="featclust-refresh-bench-") as tmp:
        out, X, model = make_output(Path(tmp), args.n, args.k)
        rows = []
        methods = ["pca"] + ([] if args.no_tsne else ["tsne"])
        for method in methods:
            _, t_full = timed(report.write_report, out, features=X, model=model, map_method=method)
            rows.append((f"write_report, {method} map, {args.n} images", t_full, timed.cpu))
        X_all = np.concatenate([X, place(out, model, args.placed, args.k)])
        res, t_refresh = timed(report.refresh_report, out, features=X_all)
        rows.append((f"refresh_report after {args.placed} placed", t_refresh, timed.cpu))
        assert "joined" in (res.map_note or "")
        _, t_again = timed(report.refresh_report, out, features=X_all)
        rows.append(("refresh_report again (nothing new)", t_again, timed.cpu))
    print(f"\n{'what':<48} {'wall s':>8} {'CPU s':>8}")
    for what, wall, cpu in rows:
        print(f"{what:<48} {wall:8.1f} {cpu:8.1f}")
    for what, wall, _ in rows[: len(methods)]:
        print(f"refresh / {what}: {t_refresh / wall:.2f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
