"""Judging a clustering: compactness, separation, reproducibility, agreement with known classes.

The scores follow scikit-learn's definitions (``inertia``, ``silhouette_score``,
``davies_bouldin_score``, ``calinski_harabasz_score``, ``adjusted_rand_score``,
``normalized_mutual_info_score``). Inertia, Davies-Bouldin and
Calinski-Harabasz are computed here from the cluster means in one pass over the
features; the silhouette is computed on a fixed random sample, so no
N x N matrix is ever built.

No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass

import numpy as np

from .errors import UsageError

#: Images in the sample the silhouette is computed on.
SILHOUETTE_SAMPLE = 2000
#: A cluster is tiny when it has fewer members than this ...
TINY_MIN_SIZE = 3
#: ... or fewer than this share of the average cluster size.
TINY_SHARE = 0.1
#: A cluster is loose when its members' mean distance to the centre exceeds
#: this multiple of the median over all clusters.
LOOSE_FACTOR = 1.5


class SilhouetteSample:
    """Silhouette score on a fixed random sample of the rows.

    The sample's pairwise distances are computed once, so scoring many
    clusterings of the same features (one per k) costs little, and every
    clustering is judged on the same images.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_features)
    size : int
        Largest sample; all rows are used when there are fewer.
    seed : int
        Random state of the sample.

    Attributes
    ----------
    index : ndarray
        The rows in the sample, sorted.
    """

    def __init__(self, Z, size=SILHOUETTE_SAMPLE, seed=0):
        from sklearn.metrics import pairwise_distances

        n = len(Z)
        if n > size:
            self.index = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        else:
            self.index = np.arange(n)
        self._dist = pairwise_distances(np.asarray(Z)[self.index]).astype(np.float32)
        np.fill_diagonal(self._dist, 0.0)

    def score(self, labels):
        """Mean silhouette of the sample under ``labels`` (labels of all rows).

        Returns NaN where the silhouette is undefined (fewer than 2 clusters in
        the sample, or every sampled image alone in its cluster).
        """
        from sklearn.metrics import silhouette_score

        sub = np.asarray(labels)[self.index]
        n_labels = len(np.unique(sub))
        if n_labels < 2 or n_labels > len(sub) - 1:
            return math.nan
        return float(silhouette_score(self._dist, sub, metric="precomputed"))


def cluster_scores(Z, labels, silhouette=None):
    """Inertia, silhouette, Davies-Bouldin and Calinski-Harabasz of one clustering.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_features)
        The features in the space the clustering was made in.
    labels : ndarray of shape (n_samples,)
    silhouette : SilhouetteSample, optional
        Built from ``Z`` when not given.

    Returns
    -------
    dict
        ``inertia`` (sum of squared distances to the cluster means; lower is
        tighter), ``silhouette`` (-1 to 1, higher is better),
        ``davies_bouldin`` (0 or more, lower is better) and
        ``calinski_harabasz`` (higher is better). A score that is undefined
        for this clustering (one cluster, say) is NaN.
    """
    Z = np.asarray(Z, dtype=np.float32)
    labels = np.asarray(labels)
    n = len(Z)
    means, spread, sizes, inertia = [], [], [], 0.0
    for c in np.unique(labels):
        members = Z[labels == c]
        mu = members.mean(axis=0, dtype=np.float64)
        dist = np.linalg.norm(members - mu.astype(np.float32), axis=1).astype(np.float64)
        inertia += float(np.sum(dist ** 2))
        means.append(mu)
        spread.append(float(dist.mean()))
        sizes.append(len(members))
    means, spread, sizes = np.array(means), np.array(spread), np.array(sizes)
    k = len(means)
    scores = {"inertia": inertia, "silhouette": math.nan, "davies_bouldin": math.nan,
              "calinski_harabasz": math.nan}
    if not 1 < k < n:
        return scores
    between = float(np.sum(sizes * np.sum((means - Z.mean(axis=0, dtype=np.float64)) ** 2,
                                          axis=1)))
    scores["calinski_harabasz"] = (1.0 if inertia == 0 else
                                   between * (n - k) / (inertia * (k - 1)))
    gaps = np.linalg.norm(means[:, None, :] - means[None, :, :], axis=2)
    if np.allclose(spread, 0) or np.allclose(gaps, 0):
        scores["davies_bouldin"] = 0.0
    else:
        gaps[gaps == 0] = np.inf
        ratio = (spread[:, None] + spread[None, :]) / gaps
        np.fill_diagonal(ratio, -np.inf)
        scores["davies_bouldin"] = float(np.mean(np.max(ratio, axis=1)))
    scores["silhouette"] = (silhouette or SilhouetteSample(Z)).score(labels)
    return scores


def stability(label_runs):
    """Mean adjusted Rand index over all pairs of clusterings of the same rows.

    1 means every run found the same partition; near 0, the partitions agree
    no more than chance.

    Parameters
    ----------
    label_runs : list of ndarray
        At least two label vectors of equal length.
    """
    from sklearn.metrics import adjusted_rand_score

    pairs = [(a, b) for i, a in enumerate(label_runs) for b in label_runs[i + 1:]]
    if not pairs:
        return math.nan
    return float(np.mean([adjusted_rand_score(a, b) for a, b in pairs]))


def cluster_table(labels, distances, n_clusters):
    """Size and spread of every cluster, with the clusters that look wrong flagged.

    A cluster is *tiny* when it has fewer than :data:`TINY_MIN_SIZE` members
    or fewer than :data:`TINY_SHARE` of the average cluster size; it is
    *loose* when its members' mean distance to the centre is more than
    :data:`LOOSE_FACTOR` times the median of that figure over all clusters.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
    distances : ndarray of shape (n_samples,)
        Distance of every image to its cluster centre.
    n_clusters : int

    Returns
    -------
    list of dict
        One per cluster: ``cluster``, ``size``, ``mean_distance``,
        ``p95_distance``, ``max_distance`` (NaN for an empty cluster),
        ``tiny``, ``loose`` (bool).
    """
    labels, distances = np.asarray(labels), np.asarray(distances, dtype=np.float64)
    n = len(labels)
    rows = []
    for c in range(n_clusters):
        d = distances[labels == c]
        stats = (d.mean(), np.percentile(d, 95), d.max()) if len(d) else (math.nan,) * 3
        rows.append({"cluster": c, "size": len(d), "mean_distance": float(stats[0]),
                     "p95_distance": float(stats[1]), "max_distance": float(stats[2])})
    tiny_below = max(TINY_MIN_SIZE, TINY_SHARE * n / max(n_clusters, 1))
    spreads = [r["mean_distance"] for r in rows if r["size"] >= 2]
    median = float(np.median(spreads)) if spreads else math.nan
    for r in rows:
        r["tiny"] = r["size"] < tiny_below
        r["loose"] = bool(r["size"] >= 2 and median > 0
                          and r["mean_distance"] > LOOSE_FACTOR * median)
    return rows


def cluster_table_csv(rows):
    """The text of ``clusters.csv``: one row per cluster, flags as ``tiny``/``loose``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["cluster", "size", "mean_distance", "p95_distance", "max_distance", "flags"])
    for r in rows:
        flags = ";".join(f for f in ("tiny", "loose") if r[f])
        w.writerow([r["cluster"], r["size"], _fmt(r["mean_distance"]),
                    _fmt(r["p95_distance"]), _fmt(r["max_distance"]), flags])
    return buf.getvalue()


def _fmt(x):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def json_safe(scores):
    """``scores`` with NaN replaced by ``None`` (JSON has no NaN)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in scores.items()}


# -- known classes ---------------------------------------------------------------------

@dataclass
class TruthComparison:
    """How a clustering agrees with known classes.

    Attributes
    ----------
    ari : float
        Adjusted Rand index (1 is perfect agreement, about 0 is chance).
    nmi : float
        Normalised mutual information (0 to 1).
    n_labelled : int
        Clustered images that have a known class.
    n_unknown : int
        Entries of the truth file that name no clustered image.
    classes : list of str
        Row names of ``contingency``, sorted.
    contingency : ndarray of shape (len(classes), n_clusters)
        Images of each class in each cluster.
    """

    ari: float
    nmi: float
    n_labelled: int
    n_unknown: int
    classes: list
    contingency: np.ndarray

    def csv(self):
        """The contingency table as CSV: ``label,cluster_0,...,total``."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        k = self.contingency.shape[1]
        w.writerow(["label"] + [f"cluster_{c}" for c in range(k)] + ["total"])
        for name, row in zip(self.classes, self.contingency):
            w.writerow([name] + [int(x) for x in row] + [int(row.sum())])
        w.writerow(["total"] + [int(x) for x in self.contingency.sum(axis=0)]
                   + [int(self.contingency.sum())])
        return buf.getvalue()

    def summary(self):
        """Scores as a JSON-able dict."""
        return {"ari": self.ari, "nmi": self.nmi, "n_labelled": self.n_labelled,
                "n_unknown": self.n_unknown}


def _norm_path(p):
    return os.path.normpath(p.strip().replace("\\", "/")).replace(os.sep, "/")


def read_truth_csv(path):
    """Read a file of known classes: CSV with columns ``path,label``.

    Paths are relative to the image folder, as in ``labels.csv``.

    Returns
    -------
    dict
        Path to label.

    Raises
    ------
    UsageError
        If the file cannot be read, lacks the two columns, or names a path twice
        with different labels.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise UsageError(f"truth file {str(path)!r} must have the columns path,label "
                                 f"(found {','.join(reader.fieldnames or [])!r})")
            truth = {}
            for row in reader:
                if not row["path"]:
                    continue
                p, label = _norm_path(row["path"]), (row["label"] or "").strip()
                if truth.get(p, label) != label:
                    raise UsageError(f"truth file {str(path)!r} gives {p!r} two labels: "
                                     f"{truth[p]!r} and {label!r}")
                truth[p] = label
    except OSError as e:
        raise UsageError(f"cannot read truth file {str(path)!r}: {e.strerror or e}") from None
    except csv.Error as e:
        raise UsageError(f"truth file {str(path)!r} is not valid CSV: {e}") from None
    return truth


def compare_with_truth(paths, labels, truth, n_clusters=None):
    """Adjusted Rand index, NMI and contingency table against known classes.

    Parameters
    ----------
    paths : list of str
        Relative paths of the clustered images.
    labels : ndarray of shape (len(paths),)
    truth : dict
        Path to known class (see :func:`read_truth_csv`); images without an
        entry are left out.
    n_clusters : int, optional
        Columns of the table; default ``labels.max() + 1``.

    Returns
    -------
    TruthComparison

    Raises
    ------
    UsageError
        If no path of ``truth`` is a clustered image.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    truth = {_norm_path(p): v for p, v in truth.items()}
    pairs = [(truth[p], int(c)) for p, c in zip(paths, labels) if p in truth]
    if not pairs:
        raise UsageError(f"none of the {len(truth)} paths of the truth file is a clustered "
                         "image; paths must be relative to the image folder, as in labels.csv")
    known, clusters = zip(*pairs)
    classes = sorted(set(known))
    k = int(n_clusters if n_clusters is not None else labels.max() + 1)
    table = np.zeros((len(classes), k), dtype=np.int64)
    row = {name: i for i, name in enumerate(classes)}
    for name, c in pairs:
        table[row[name], c] += 1
    return TruthComparison(
        ari=float(adjusted_rand_score(known, clusters)),
        nmi=float(normalized_mutual_info_score(known, clusters)),
        n_labelled=len(pairs), n_unknown=len(truth) - len(pairs), classes=classes,
        contingency=table)
