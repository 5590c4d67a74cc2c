"""Judging a clustering: compactness, separation, reproducibility, agreement with known classes.

The scores follow scikit-learn's definitions (``inertia``, ``silhouette_score``,
``davies_bouldin_score``, ``calinski_harabasz_score``, ``adjusted_rand_score``,
``normalized_mutual_info_score``). Inertia, Davies-Bouldin and
Calinski-Harabasz are computed here from the cluster means in one pass over the
features; the silhouette is computed on a fixed random sample, so no
N x N matrix is ever built.

:func:`judge` is what ``sort`` records about its clustering (scores, flagged
clusters, agreement with known classes); the CSV files of those are
formatted by :mod:`featclust.tables`. No TensorFlow here: this module works
on arrays only.

Over 500 lines: all judging is one module, as sort, the k scan and the report must score alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import (
    adjusted_rand_score,
    normalized_mutual_info_score,
    pairwise_distances,
    silhouette_samples,
    silhouette_score,
)

from .cluster import FIT_SAMPLE
from .errors import UsageError
from .fileio import norm_relpath
from .flags import FLAGS, cluster_table
from .labelling import sample_rows, subsample_kmeans
from .reduce import MAX_IN_MEMORY_BYTES, blocks, check_features, fitting_space

#: Images in the one sample every silhouette is computed on (the scores of a
#: clustering, the k scan, and the per-cluster silhouettes of the report).
SILHOUETTE_SAMPLE = 2000


class SilhouetteSample:
    """Silhouette score on a fixed random sample of the rows.

    The sample's pairwise distances are computed once, so scoring many
    clusterings of the same features (one per k) costs little, and every
    clustering is judged on the same images.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_features), or ReducedRows
        (of which only the sample's rows are read)
    size : int
        Largest sample; all rows are used when there are fewer.
    random_state : int
        Random state of the sample.

    Attributes
    ----------
    index : ndarray
        The rows in the sample, sorted.
    """

    def __init__(self, Z, size=SILHOUETTE_SAMPLE, random_state=0):
        n = len(Z)
        if n > size:
            self.index = np.sort(np.random.default_rng(random_state).choice(n, size, replace=False))
        else:
            self.index = np.arange(n)
        rows = Z.take(self.index) if isinstance(Z, ReducedRows) else np.asarray(Z)[self.index]
        self._dist = pairwise_distances(rows).astype(np.float32)
        np.fill_diagonal(self._dist, 0.0)

    def score(self, labels: np.ndarray) -> float:
        """Mean silhouette of the sample under ``labels`` (labels of all rows).

        Returns NaN where the silhouette is undefined (fewer than 2 clusters in
        the sample, or every sampled image alone in its cluster).
        """
        sub = self._defined(labels)
        if sub is None:
            return math.nan
        return float(silhouette_score(self._dist, sub, metric="precomputed"))

    def per_cluster(self, labels: np.ndarray, n_clusters: int) -> list[float | None]:
        """Mean silhouette of each cluster's sampled members.

        Returns
        -------
        list of float or None
            One per cluster; ``None`` for a cluster without sampled members,
            and for all when the silhouette is undefined (see :meth:`score`).
        """
        sub = self._defined(labels)
        if sub is None:
            return [None] * n_clusters
        s = silhouette_samples(self._dist, sub, metric="precomputed")
        return [float(s[sub == c].mean()) if np.any(sub == c) else None for c in range(n_clusters)]

    def _defined(self, labels):
        """The sample's labels, or None where the silhouette is undefined."""
        sub = np.asarray(labels)[self.index]
        n_labels = len(np.unique(sub))
        return None if n_labels < 2 or n_labels > len(sub) - 1 else sub


def cluster_silhouettes(
    Z: Any,
    labels: np.ndarray,
    n_clusters: int,
    sample_size: int = SILHOUETTE_SAMPLE,
    random_state: int = 0,
) -> list[float | None]:
    """Mean silhouette of every cluster, on one fixed random sample of the rows.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_features)
        The features in the clustering space (``model.reduce(X)``).
    labels : ndarray of shape (n_samples,)
    n_clusters : int
    sample_size : int
        Largest sample (the sample :func:`cluster_scores` uses by default).
    random_state : int

    Returns
    -------
    list of float or None
        One per cluster (see :meth:`SilhouetteSample.per_cluster`).
    """
    return SilhouetteSample(Z, sample_size, random_state).per_cluster(labels, n_clusters)


def cluster_scores(
    Z: Any, labels: np.ndarray, silhouette: SilhouetteSample | None = None
) -> dict[str, float]:
    """Inertia, silhouette, Davies-Bouldin and Calinski-Harabasz of one clustering.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_features), or ReducedRows
        The features in the space the clustering was made in. A
        :class:`ReducedRows` is read block by block (two passes), so memory
        holds one block and per-cluster sums, whatever the number of rows.
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
    if isinstance(Z, ReducedRows):
        parts = Z.blocks
    else:
        Z = np.asarray(Z, dtype=np.float32)

        def parts():  # in memory already: one block
            return [Z]

    labels = np.asarray(labels)
    n = len(labels)
    clusters = np.unique(labels)
    sums: dict = {}
    sizes: Any = {}  # a dict per cluster, then an array
    total: Any = 0.0
    start = 0
    for block in parts():  # pass 1: cluster means, overall mean
        part = labels[start : start + len(block)]
        start += len(block)
        total = total + block.sum(axis=0, dtype=np.float64)
        for c in np.unique(part):
            members = block[part == c]
            sums[c] = sums.get(c, 0.0) + members.sum(axis=0, dtype=np.float64)
            sizes[c] = sizes.get(c, 0) + len(members)
    means: Any = {c: sums[c] / sizes[c] for c in clusters}
    squares, dists, start = dict.fromkeys(clusters, 0.0), dict.fromkeys(clusters, 0.0), 0
    for block in parts():  # pass 2: distances to the cluster means
        part = labels[start : start + len(block)]
        start += len(block)
        for c in np.unique(part):
            dist = np.linalg.norm(block[part == c] - means[c].astype(np.float32), axis=1).astype(
                np.float64
            )
            squares[c] += float(np.sum(dist**2))
            dists[c] += float(np.sum(dist))
    inertia = 0.0
    for c in clusters:
        inertia += squares[c]
    means = np.array([means[c] for c in clusters])
    sizes = np.array([sizes[c] for c in clusters])
    spread = np.array([dists[c] / sizes[i] for i, c in enumerate(clusters)])
    k = len(means)
    scores = {
        "inertia": inertia,
        "silhouette": math.nan,
        "davies_bouldin": math.nan,
        "calinski_harabasz": math.nan,
    }
    if not 1 < k < n:
        return scores
    between = float(np.sum(sizes * np.sum((means - total / n) ** 2, axis=1)))
    scores["calinski_harabasz"] = 1.0 if inertia == 0 else between * (n - k) / (inertia * (k - 1))
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


class ReducedRows:
    """The rows of a feature matrix in a model's reduced space, computed when read.

    What :func:`model_scores` judges a large (memory-mapped) matrix through:
    only a block, or the rows asked for, are ever reduced at a time.

    Parameters
    ----------
    reducer : featclust.reduce.Reducer
        Fitted.
    X : ndarray of shape (n_samples, n_features)
        Checked features (float32, finite), e.g. memory-mapped.
    """

    def __init__(self, reducer, X):
        self.reducer, self.X = reducer, X

    def __len__(self):
        return len(self.X)

    def blocks(self) -> Iterator[np.ndarray]:
        """The reduced rows, one block of :func:`featclust.reduce.blocks` at a time."""
        for block in blocks(self.X):
            yield self.reducer.transform_checked(block)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The reduced rows ``rows`` (sorted indices), as one array."""
        return self.reducer.transform_checked(self.X, np.asarray(rows))


def stability(label_runs: list[np.ndarray]) -> float:
    """Mean adjusted Rand index over all pairs of clusterings of the same rows.

    1 means every run found the same partition; near 0, the partitions agree
    no more than chance.

    Parameters
    ----------
    label_runs : list of ndarray
        At least two label vectors of equal length.
    """
    pairs = [(a, b) for i, a in enumerate(label_runs) for b in label_runs[i + 1 :]]
    if not pairs:
        return math.nan
    return float(np.mean([adjusted_rand_score(a, b) for a, b in pairs]))


def cluster_stabilities(
    labels: np.ndarray, label_runs: list[np.ndarray], n_clusters: int
) -> list[float | None]:
    """How well repeated clusterings find each cluster again (Hennig's cluster-wise stability).

    For each cluster of ``labels``: the Jaccard index with the most similar
    cluster of each run, averaged over the runs. 1: every run has it exactly;
    below about 0.6 it is not found again.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
    label_runs : list of ndarray of shape (n_samples,)
        Other clusterings of the same rows (any number of clusters).
    n_clusters : int

    Returns
    -------
    list of float or None
        One per cluster; ``None`` for a cluster with no member among the
        rows, and for all when there is no run.
    """
    labels = np.asarray(labels)
    if not label_runs:
        return [None] * n_clusters
    total = np.zeros(n_clusters)
    sizes = np.bincount(labels, minlength=n_clusters)[:n_clusters]
    for run in label_runs:
        run = np.asarray(run)
        k_run = int(run.max()) + 1 if len(run) else 1
        table = np.zeros((n_clusters, k_run))
        np.add.at(table, (labels, run), 1)
        union = sizes[:, None] + np.bincount(run, minlength=k_run)[None, :] - table
        with np.errstate(invalid="ignore", divide="ignore"):
            total += np.nan_to_num(table / union).max(axis=1)
    return [float(t / len(label_runs)) if sizes[c] else None for c, t in enumerate(total)]


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

    def summary(self) -> dict[str, Any]:
        """Scores as a JSON-able dict."""
        return {
            "ari": self.ari,
            "nmi": self.nmi,
            "n_labelled": self.n_labelled,
            "n_unknown": self.n_unknown,
        }


def compare_with_truth(
    paths: Sequence[str], labels: np.ndarray, truth: dict[str, str], n_clusters: int | None = None
) -> TruthComparison:
    """Adjusted Rand index, NMI and contingency table against known classes.

    Parameters
    ----------
    paths : list of str
        Relative paths of the clustered images.
    labels : ndarray of shape (len(paths),)
    truth : dict
        Path to known class (see :func:`featclust.tables.read_truth_csv`);
        paths are compared after :func:`featclust.fileio.norm_relpath`; images without an entry
        are left out.
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
    labels = np.asarray(labels)
    truth = {norm_relpath(p): v for p, v in truth.items()}
    pairs = [(truth[p], int(c)) for p, c in zip(paths, labels) if p in truth]
    if not pairs:
        raise UsageError(
            f"none of the {len(truth)} paths of the truth file is a clustered "
            "image; paths must be relative to the image folder, as in labels.csv"
        )
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
        n_labelled=len(pairs),
        n_unknown=len(truth) - len(pairs),
        classes=classes,
        contingency=table,
    )


# -- judging a fitted model ------------------------------------------------------------


def model_scores(
    model: Any,
    X: Any,
    random_state: int = 0,
    n_runs: int = 3,
    n_init: int = 3,
    sample_size: int = SILHOUETTE_SAMPLE,
    fit_size: int = 5000,
    fit_dims: int = 64,
) -> dict[str, float]:
    """The k scan's scores for a fitted model, on the features it was fitted on.

    Parameters
    ----------
    model : featclust.cluster.FeatureKMeans
        Fitted on ``X``.
    X : array-like of shape (n_samples, n_features)
    random_state, n_runs, n_init, sample_size, fit_size, fit_dims
        As in :class:`featclust.kscan.KScan`: the stability comes from
        ``n_runs`` new k-means runs at the model's k, made as the scan makes
        them.

    Returns
    -------
    dict
        Keys :data:`featclust.kscan.COLUMNS`; NaN where a score is undefined.

    Notes
    -----
    The rows are not reduced again when the model keeps them (its
    ``reduced_``, from :meth:`FeatureKMeans.fit` on these ``X``). Otherwise
    a matrix larger than :data:`featclust.reduce.MAX_IN_MEMORY_BYTES` is
    never reduced whole: the scores are computed block by block over all
    rows (:class:`ReducedRows`). Either way the stability of a large matrix
    comes from a random sample of at most ``model.fit_sample`` rows
    (:data:`featclust.cluster.FIT_SAMPLE` when that is None), so memory
    stays flat in the number of rows.
    """
    return _scored(model, X, random_state, n_runs, n_init, sample_size, fit_size, fit_dims)[0]


def _scored(
    model,
    X,
    random_state,
    n_runs=3,
    n_init=3,
    sample_size=SILHOUETTE_SAMPLE,
    fit_size=5000,
    fit_dims=64,
):
    """:func:`model_scores`, with each cluster's silhouette and stability (one per cluster)."""
    k = model.n_clusters
    small = (X.nbytes if hasattr(X, "nbytes") else np.asarray(X).nbytes) <= MAX_IN_MEMORY_BYTES
    reduced = getattr(model, "reduced_", None)
    rows = None
    if reduced is not None and len(reduced) == len(X):
        Z = Zs = reduced
        if not small:
            rows = sample_rows(
                len(X), getattr(model, "fit_sample", None) or FIT_SAMPLE, random_state
            )
            Zs = Z if rows is None else Z[rows]
    elif small:
        Z = Zs = model.reduce(X)
    else:
        X = check_features(model, X, reset=False)
        Z = ReducedRows(model.reducer_, X)
        rows = sample_rows(len(X), getattr(model, "fit_sample", None) or FIT_SAMPLE, random_state)
        Zs = Z.take(rows if rows is not None else np.arange(len(X)))
    sample = SilhouetteSample(Z, sample_size, random_state)
    scores = cluster_scores(Z, model.labels_, sample)
    stab, stabilities = math.nan, [None] * k
    if 2 <= k <= len(Zs) - 1:
        rng = np.random.default_rng(random_state)
        F = fitting_space(Zs, fit_dims, fit_size, rng, random_state)
        runs = subsample_kmeans(F, k, n_runs, n_init, fit_size, rng)[1]
        stab = stability(runs)
        labels = np.asarray(model.labels_)
        stabilities = cluster_stabilities(labels if rows is None else labels[rows], runs, k)
    silhouettes = sample.per_cluster(model.labels_, k)
    return {"k": k, **scores, "stability": stab}, silhouettes, stabilities


@dataclass
class Judgement:
    """How good a clustering looks: scores, per-cluster sizes and flags, known classes.

    Attributes
    ----------
    scores : dict
        As :func:`model_scores` returns.
    clusters : list of dict
        As :func:`cluster_table` returns.
    truth : TruthComparison or None
    """

    scores: dict
    clusters: list
    truth: TruthComparison | None = None

    @property
    def tiny(self) -> list[int]:
        """Clusters flagged tiny."""
        return [r["cluster"] for r in self.clusters if r["tiny"]]

    @property
    def loose(self) -> list[int]:
        """Clusters flagged loose (members far from the centre)."""
        return [r["cluster"] for r in self.clusters if r["loose"]]

    def flagged(self) -> dict[str, list[int]]:
        """Every flag of :data:`FLAGS` -> the clusters that get it."""
        return {f: [r["cluster"] for r in self.clusters if f in r["flags"]] for f in FLAGS}

    def info(self) -> dict[str, Any]:
        """What the output folder's record keeps: scores (NaN as None), flags, truth summary.

        Returns
        -------
        dict
            ``{"scores": ..., "flags": {"tiny": [...], "loose": [...], ...},
            "truth": ... or None}`` (every flag of :data:`FLAGS`), JSON-able;
            ``scores["cluster_stability"]`` holds each cluster's stability
            (``None`` where unknown) when one is known.
        """
        scores = {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in self.scores.items()
        }
        stabilities = [r.get("stability") for r in self.clusters]
        if any(v is not None for v in stabilities):
            scores["cluster_stability"] = stabilities  # the report's "unstable", later
        return {
            "scores": scores,
            "flags": self.flagged(),
            "truth": self.truth.summary() if self.truth is not None else None,
        }


def judge(
    model: Any,
    X: Any,
    paths: list[str] | None = None,
    truth: dict | None = None,
    random_state: int = 0,
) -> Judgement:
    """Score a fitted model, size and flag its clusters, compare with known classes.

    Parameters
    ----------
    model : featclust.cluster.FeatureKMeans
        Fitted on ``X``. Its ``reduced_`` (the rows of ``X`` as the fit
        reduced them) is used when present: the features are not reduced
        again.
    X : array-like of shape (n_samples, n_features)
    paths : list of str, optional
        Relative paths of the rows; needed with ``truth``.
    truth : dict, optional
        Path to known class (see :func:`featclust.tables.read_truth_csv`).
    random_state : int

    Returns
    -------
    Judgement
    """
    scores, silhouettes, stabilities = _scored(model, X, random_state)
    outliers = model.distances_ > model.thresholds_[model.labels_]
    table = cluster_table(
        model.labels_,
        model.distances_,
        model.n_clusters,
        silhouettes=silhouettes,
        stabilities=stabilities,
        outliers=outliers,
    )
    compared = None
    if truth is not None:
        compared = compare_with_truth(paths or [], model.labels_, truth, model.n_clusters)
    return Judgement(scores, table, compared)
