"""Choosing k: k-means for every k of a range, scored, with a suggestion and its reason.

How the scan stays fast at 32,000 x 512 (see benchmarks/scan_k_speed.py):

* The features are reduced exactly as :class:`~featclust.cluster.FeatureKMeans`
  would (``pca``, ``normalize``): the scores describe the space ``sort``
  clusters in.
* k-means itself runs on at most ``fit_dims`` PCA components of that space
  (PCA fitted on ``fit_size`` rows), with ``n_init`` k-means++ starts per
  run, on a random subsample of ``fit_size`` rows; every row is then given its
  nearest centre. These small fits run on one thread, several times faster
  than OpenMP and BLAS threads contending on a busy machine. The top components hold the between-cluster directions (at most
  k - 1 of them), so the partitions found there are the ones found in the
  full space, at a fraction of the cost.
* ``n_runs`` such runs per k, each on another subsample with another seed:
  their mean pairwise adjusted Rand index is the stability score, and the
  run of lowest inertia is the clustering that is scored.
* The scores are computed on all rows in the reduced space, from the cluster
  means, except the silhouette, which uses one fixed random sample (its
  distance matrix computed once for all k).

No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from .cluster import FeatureKMeans, check_int
from .errors import UsageError
from .scores import (SILHOUETTE_SAMPLE, SilhouetteSample, cluster_scores, cluster_table,
                     cluster_table_csv, compare_with_truth, json_safe, stability)

DEFAULT_KS = range(2, 31)
#: A k counts as reproducible when its stability reaches this.
MIN_STABILITY = 0.8
COLUMNS = ("k", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz", "stability")
#: Files a scan writes into an output folder.
KSCAN_CSV = "kscan.csv"
KSCAN_PNG = "kscan.png"


def parse_k_range(text, step=1):
    """The ks of ``"A:B"`` (A to B inclusive, every ``step``) or of a single ``"K"``.

    Raises
    ------
    UsageError
        Naming the text received.
    """
    try:
        parts = [int(p) for p in str(text).split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or parts[0] < 2 or parts[1] < parts[0]:
        raise UsageError(f"k range {text!r} must be A:B with 2 <= A <= B, or one k >= 2")
    if not isinstance(step, int) or step < 1:
        raise UsageError(f"step={step!r} must be a positive integer")
    return list(range(parts[0], parts[1] + 1, step))


class KScan:
    """Fit k-means for every k of a range and score each clustering.

    Parameters
    ----------
    ks : iterable of int, default range(2, 31)
        The numbers of clusters to try (each at least 2). Those larger than
        the number of images minus one are left out (see ``ks_``).
    pca, normalize : as in :class:`~featclust.cluster.FeatureKMeans`
        The space the scores are computed in (the one ``sort`` clusters in).
    seed : int, default 0
    n_runs : int, default 3
        k-means runs per k; their agreement is the stability.
    n_init : int, default 3
        k-means++ starts per run; the best inertia wins.
    sample_size : int, default 2000
        Rows the silhouette is computed on.
    fit_size : int, default 5000
        Rows each k-means run (and the PCA below) is fitted on.
    fit_dims : int, default 64
        PCA components k-means runs on, when the space has more.
    min_stability : float, default 0.8
        Stability a k needs to count as reproducible.

    Attributes
    ----------
    ks_ : list of int
        The ks scanned.
    scores_ : list of dict
        One per k, keys :data:`COLUMNS`; NaN where a score is undefined.
    suggested_k_ : int
    reason_ : str
        Why ``suggested_k_`` was chosen, in words.
    labels_ : dict
        k to the labels of the scored clustering.

    Examples
    --------
    >>> scan = KScan(ks=range(2, 11)).fit(features)        # doctest: +SKIP
    >>> scan.suggested_k_, scan.reason_                     # doctest: +SKIP
    """

    def __init__(self, ks=DEFAULT_KS, pca=None, normalize=False, seed=0, n_runs=3, n_init=3,
                 sample_size=SILHOUETTE_SAMPLE, fit_size=5000, fit_dims=64,
                 min_stability=MIN_STABILITY):
        self.ks = ks
        self.pca = pca
        self.normalize = normalize
        self.seed = seed
        self.n_runs = n_runs
        self.n_init = n_init
        self.sample_size = sample_size
        self.fit_size = fit_size
        self.fit_dims = fit_dims
        self.min_stability = min_stability

    def check_params(self):
        """Validate the parameters; returns the sorted ks.

        Raises
        ------
        UsageError
            Naming the parameter and the value received.
        """
        try:
            ks = sorted({int(k) for k in self.ks})
        except (TypeError, ValueError):
            raise UsageError(f"ks={self.ks!r} must be integers") from None
        if not ks or ks[0] < 2:
            raise UsageError(f"ks={self.ks!r} must be integers of at least 2")
        for name in ("n_runs", "n_init", "sample_size", "fit_size", "fit_dims"):
            check_int(name, getattr(self, name), low=2 if name in ("n_runs", "sample_size") else 1)
        if not 0 <= self.min_stability <= 1:
            raise UsageError(f"min_stability={self.min_stability!r} must be between 0 and 1")
        return ks

    def fit(self, X):
        """Scan the ks on features ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        self

        Raises
        ------
        UsageError
            If a parameter is invalid or there are too few images for the
            smallest k.
        """
        ks = self.check_params()
        n = len(X)
        self.ks_ = [k for k in ks if k <= n - 1]
        if not self.ks_:
            raise UsageError(f"k={ks[0]} needs at least {ks[0] + 1} images; there are {n}")
        Z = FeatureKMeans(n_clusters=1, pca=self.pca, normalize=self.normalize,
                          seed=self.seed).fit_reduce(X)
        rng = np.random.default_rng(self.seed)
        F = _fitting_space(Z, self.fit_dims, self.fit_size, rng, self.seed)
        sil = SilhouetteSample(Z, self.sample_size, self.seed)
        self.scores_, self.labels_ = [], {}
        for k in self.ks_:
            labels, stab = _runs(F, k, self.n_runs, self.n_init, self.fit_size, rng)
            row = {"k": k, **cluster_scores(Z, labels, sil), "stability": stab}
            self.scores_.append(row)
            self.labels_[k] = labels
        self.suggested_k_, self.reason_ = suggest_k(self.scores_, self.min_stability)
        return self


def _fitting_space(Z, fit_dims, fit_size, rng, seed):
    from sklearn.decomposition import PCA

    n, d = Z.shape
    if d <= fit_dims:
        return Z
    rows = rng.choice(n, fit_size, replace=False) if n > fit_size else slice(None)
    pca = PCA(n_components=min(fit_dims, len(Z[rows])), random_state=seed).fit(Z[rows])
    return pca.transform(Z).astype(np.float32)


def _runs(F, k, n_runs, n_init, fit_size, rng):
    """``n_runs`` k-means fits on subsamples; labels of the best, and their stability."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    n = len(F)
    sq = np.sum(F ** 2, axis=1)
    runs, inertias = [], []
    for _ in range(n_runs):
        rows = np.sort(rng.choice(n, fit_size, replace=False)) if n > fit_size else slice(None)
        km = KMeans(n_clusters=k, n_init=n_init, random_state=int(rng.integers(2 ** 31)))
        # One thread: on a few thousand rows, syncing threads costs more than it
        # saves (3-10 times slower on a busy 2-core machine).
        with threadpool_limits(1):
            km.fit(F[rows])
        centers = km.cluster_centers_.astype(np.float32)
        d2 = sq[:, None] - 2 * (F @ centers.T) + np.sum(centers ** 2, axis=1)[None, :]
        labels = np.argmin(d2, axis=1)
        runs.append(labels)
        inertias.append(float(np.sum(np.maximum(d2[np.arange(n), labels], 0))))
    return runs[int(np.argmin(inertias))], stability(runs)


def suggest_k(rows, min_stability=MIN_STABILITY):
    """Pick k from scan rows: the best silhouette among the reproducible ks.

    Parameters
    ----------
    rows : list of dict
        As in :attr:`KScan.scores_`.
    min_stability : float

    Returns
    -------
    k : int
    reason : str
    """
    scored = [r for r in rows if not math.isnan(r["silhouette"])]
    if not scored:
        best = min(rows, key=lambda r: r["k"])
        return best["k"], "no k has a defined silhouette; the smallest k is suggested"
    stable = [r for r in scored if r["stability"] >= min_stability]
    if stable:
        best = max(stable, key=lambda r: r["silhouette"])
        return best["k"], (f"highest silhouette ({best['silhouette']:.3f}) among the k whose "
                           f"clusterings are reproducible (stability >= {min_stability:g}; "
                           f"{len(stable)} of {len(rows)} k)")
    best = max(scored, key=lambda r: r["silhouette"])
    top = max(scored, key=lambda r: r["stability"])
    return best["k"], (f"highest silhouette ({best['silhouette']:.3f}); but no k is "
                       f"reproducible (best stability {top['stability']:.2f} at k={top['k']}, "
                       f"below {min_stability:g}): the images may not fall into clear groups")


def _fmt(x, digits=4):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.{digits}g}"


def kscan_csv(rows, suggested_k):
    """The text of ``kscan.csv``: one row per k, ``suggested`` is 1 on the suggestion."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*COLUMNS, "suggested"])
    for r in rows:
        w.writerow([r["k"]] + [_fmt(r[c], 6) for c in COLUMNS[1:]]
                   + [int(r["k"] == suggested_k)])
    return buf.getvalue()


def kscan_table(rows, suggested_k):
    """The scan as an aligned text table, the suggestion marked with ``<-``."""
    head = ["k", "inertia", "silhouette", "davies-bouldin", "calinski-harabasz", "stability"]
    lines = [[str(r["k"]), _fmt(r["inertia"], 5), _fmt(r["silhouette"], 3),
              _fmt(r["davies_bouldin"], 3), _fmt(r["calinski_harabasz"], 5),
              _fmt(r["stability"], 3)] for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    for r, line in zip(rows, lines):
        mark = "  <- suggested" if r["k"] == suggested_k else ""
        out.append("  ".join(x.rjust(w) for x, w in zip(line, widths)) + mark)
    return "\n".join(out) + "\n"


def plot_kscan(rows, suggested_k, fh):
    """Draw every score against k, the suggestion marked, as PNG into ``fh``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    titles = {"inertia": "inertia (lower: tighter)", "silhouette": "silhouette (higher better)",
              "davies_bouldin": "Davies-Bouldin (lower better)",
              "calinski_harabasz": "Calinski-Harabasz (higher better)",
              "stability": "stability, ARI (higher better)"}
    ks = [r["k"] for r in rows]
    fig = Figure(figsize=(15, 3.2), dpi=100)
    for i, name in enumerate(COLUMNS[1:]):
        ax = fig.add_subplot(1, len(COLUMNS) - 1, i + 1)
        ax.plot(ks, [r[name] for r in rows], "o-", markersize=3)
        ax.axvline(suggested_k, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(titles[name], fontsize=9)
        ax.set_xlabel("k")
        ax.tick_params(labelsize=8)
    fig.suptitle(f"suggested k = {suggested_k}", fontsize=10)
    fig.tight_layout()
    fig.savefig(fh, format="png")


def write_kscan_files(out, scan):
    """Write ``kscan.csv`` and ``kscan.png`` into an output folder that claimed them."""
    import io

    out.write_text(KSCAN_CSV, kscan_csv(scan.scores_, scan.suggested_k_))
    png = io.BytesIO()
    plot_kscan(scan.scores_, scan.suggested_k_, png)
    out.write_bytes(KSCAN_PNG, png.getvalue())


def kscan_info(scan):
    """What the marker records about a scan."""
    return {"ks": list(scan.ks_), "suggested_k": scan.suggested_k_, "reason": scan.reason_}


def save_kscan(out_dir, scan, image_dir=None, info=None):
    """Write ``kscan.csv`` and ``kscan.png`` into ``out_dir``, claimed in its marker first.

    ``out_dir`` may be new, empty or any featclust output (a sorted folder,
    say: ``featclust report`` then shows the plot); a file there that
    featclust did not write is never overwritten.

    Parameters
    ----------
    out_dir : path-like
    scan : KScan
        Fitted.
    image_dir : path-like, optional
        The scanned folder; ``out_dir`` must not overlap it.
    info : dict, optional
        Recorded in the marker of a new folder.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    UnsafeOutputError
        If the folders overlap or a file would be overwritten.
    """
    from .sort import OutputFolder

    out = OutputFolder(out_dir, image_dir)
    data = dict(out.previous or info or {})
    data["kscan"] = kscan_info(scan)
    status = out.previous.get("status", "complete")
    files = [KSCAN_CSV, KSCAN_PNG]
    out.claim(files, data, status="writing" if not out.previous else status)
    write_kscan_files(out, scan)
    out.write_marker(None, status)
    return [out.path / f for f in files]


def choose_k(X, ks=DEFAULT_KS, pca=None, normalize=False, seed=0):
    """Run the scan for ``sort -k auto``; returns the fitted :class:`KScan`."""
    return KScan(ks=ks, pca=pca, normalize=normalize, seed=seed).fit(X)


def model_scores(model, X, seed=0, n_runs=3, n_init=3, sample_size=SILHOUETTE_SAMPLE,
                 fit_size=5000, fit_dims=64):
    """The scan's scores for a fitted model, on the features it was fitted on.

    Parameters
    ----------
    model : featclust.cluster.FeatureKMeans
        Fitted on ``X``.
    X : array-like of shape (n_samples, n_features)
    seed, n_runs, n_init, sample_size, fit_size, fit_dims : as in :class:`KScan`
        The stability comes from ``n_runs`` new k-means runs at the model's
        k, made as the scan makes them.

    Returns
    -------
    dict
        Keys :data:`COLUMNS`; NaN where a score is undefined.
    """
    Z = model.reduce(X)
    k = model.n_clusters
    scores = cluster_scores(Z, model.labels_, SilhouetteSample(Z, sample_size, seed))
    stab = math.nan
    if 2 <= k <= len(Z) - 1:
        rng = np.random.default_rng(seed)
        F = _fitting_space(Z, fit_dims, fit_size, rng, seed)
        stab = _runs(F, k, n_runs, n_init, fit_size, rng)[1]
    return {"k": k, **scores, "stability": stab}


@dataclass
class Judgement:
    """How good a clustering looks: scores, per-cluster sizes and flags, known classes.

    Attributes
    ----------
    scores : dict
        As :func:`model_scores` returns.
    clusters : list of dict
        As :func:`featclust.scores.cluster_table` returns.
    truth : featclust.scores.TruthComparison or None
    """

    scores: dict
    clusters: list
    truth: object = None

    CLUSTERS_CSV = "clusters.csv"
    TRUTH_CSV = "truth.csv"

    @property
    def tiny(self):
        """Clusters flagged tiny."""
        return [r["cluster"] for r in self.clusters if r["tiny"]]

    @property
    def loose(self):
        """Clusters flagged loose (members far from the centre)."""
        return [r["cluster"] for r in self.clusters if r["loose"]]

    def files(self):
        """The files :meth:`write` writes, relative to the output folder."""
        return [self.CLUSTERS_CSV] + ([self.TRUTH_CSV] if self.truth is not None else [])

    def info(self):
        """What the marker records: scores, flags and agreement with known classes."""
        data = {"scores": json_safe(self.scores),
                "flags": {"tiny": self.tiny, "loose": self.loose}}
        if self.truth is not None:
            data["truth"] = self.truth.summary()
        return data

    def write(self, out):
        """Write ``clusters.csv`` (and ``truth.csv``) into an output folder that claimed them."""
        out.write_text(self.CLUSTERS_CSV, cluster_table_csv(self.clusters))
        if self.truth is not None:
            out.write_text(self.TRUTH_CSV, self.truth.csv())


def judge(model, X, paths=None, truth=None, seed=0):
    """Score a fitted model, size and flag its clusters, compare with known classes.

    Parameters
    ----------
    model : featclust.cluster.FeatureKMeans
        Fitted on ``X``.
    X : array-like of shape (n_samples, n_features)
    paths : list of str, optional
        Relative paths of the rows; needed with ``truth``.
    truth : dict, optional
        Path to known class (see :func:`featclust.scores.read_truth_csv`).
    seed : int

    Returns
    -------
    Judgement
    """
    table = cluster_table(model.labels_, model.distances_, model.n_clusters)
    compared = None
    if truth is not None:
        compared = compare_with_truth(paths, model.labels_, truth, model.n_clusters)
    return Judgement(model_scores(model, X, seed), table, compared)
