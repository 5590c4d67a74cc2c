"""Choosing k: k-means for every k of a range, scored, with a suggestion and its reason.

How the scan stays fast at 32,000 x 512 (see benchmarks/scan_k_speed.py):

* A folder of more than ``fit_sample`` images (100,000 by default) is
  scanned on a random sample of that many rows, read block by block from
  the (memory-mapped) matrix: the scores are estimates from the sample, and
  memory does not grow with the folder.
* The features are reduced by the :class:`~featclust.reduce.Reducer` that
  :class:`~featclust.cluster.FeatureKMeans` uses (``pca``, ``normalize``):
  the scores describe the space ``sort`` clusters in.
* k-means itself runs on at most ``fit_dims`` PCA components of that space
  (PCA fitted on ``fit_size`` rows), with ``n_init`` k-means++ starts per
  run, on a random subsample of ``fit_size`` rows; every row is then given its
  nearest centre (:func:`featclust.labelling.subsample_kmeans`). These small
  fits run on one thread, several times faster than OpenMP and BLAS threads
  contending on a busy machine. The top components hold the between-cluster
  directions (at most k - 1 of them), so the partitions found there are the
  ones found in the full space, at a fraction of the cost.
* ``n_runs`` such runs per k, each on another subsample with another seed:
  their mean pairwise adjusted Rand index is the stability score, and the
  run of lowest inertia is the clustering that is scored.
* The scores are computed on all rows in the reduced space, from the cluster
  means, except the silhouette, which uses one fixed random sample (its
  distance matrix computed once for all k).

Judging one fitted model is :mod:`featclust.scores`; the scan's files
(``kscan.csv``, ``kscan.png``) are written by :mod:`featclust.output`.
No TensorFlow here: this module works on arrays only.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from .checks import check_bool, check_float, check_int, check_random_state
from .cluster import DEFAULT_NORMALIZE, DEFAULT_PCA, FIT_SAMPLE
from .errors import UsageError
from .labelling import checked_sample, subsample_kmeans
from .reduce import count_distinct, fitting_space, reduced_sample
from .scores import SILHOUETTE_SAMPLE, SilhouetteSample, cluster_scores, stability
from .tables import KSCAN_COLUMNS

DEFAULT_KS = range(2, 31)
#: A k counts as reproducible when its stability reaches this.
MIN_STABILITY = 0.8
#: Keys of :attr:`KScan.scores_`, in the order tables show them (owned by
#: :mod:`featclust.tables`, which writes them).
COLUMNS = KSCAN_COLUMNS


def parse_k_range(text: str, step: int = 1) -> list[int]:
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


class KScan(BaseEstimator):
    """Fit k-means for every k of a range and score each clustering.

    Parameters
    ----------
    ks : iterable of int, default range(2, 31)
        The numbers of clusters to try (each at least 2). Those larger than
        the number of images minus one, or than the number of distinct
        images (identical feature vectors count once), are left out (see
        ``ks_``).
    pca, normalize : as in :class:`~featclust.cluster.FeatureKMeans`
        The space the scores are computed in (the one ``sort`` clusters in,
        made by the same :class:`~featclust.reduce.Reducer`).
    random_state : int, None or numpy.random.RandomState, default 0
        As in :class:`~featclust.cluster.FeatureKMeans`.
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
    fit_sample : int or None, default :data:`featclust.cluster.FIT_SAMPLE`
        Scan a random sample of at most this many rows (drawn with
        ``random_state``, read block by block; see ``sample_index_``): the
        scores are those of the sample, and memory does not grow with the
        number of images. ``None``, or a value of at least the number of
        rows, scans every row (exactly as without a sample). As in
        :class:`~featclust.cluster.FeatureKMeans`.

    Attributes
    ----------
    ks_ : list of int
        The ks scanned.
    scores_ : dict of str to ndarray
        A table: one 1-D array per key of :data:`COLUMNS`, one entry per k
        (``scores_["k"]`` is ``ks_``); NaN where a score is undefined.
        ``pandas.DataFrame(scan.scores_)`` shows it.
    suggested_k_ : int
    reason_ : str
        Why ``suggested_k_`` was chosen, in words.
    scan_labels_ : ndarray of shape (len(ks_), len(sample_index_)), int64
        The labels of the scored clustering of each k: row ``i`` belongs to
        ``ks_[i]`` (and ``scores_["k"][i]``), one column per row of
        ``sample_index_``.
    sample_index_ : ndarray of int
        The rows scanned, sorted (all rows when there are at most
        ``fit_sample``).
    seed_ : int
        The int seed of this scan (``random_state`` when it is an int).
    n_features_in_ : int

    Examples
    --------
    >>> scan = KScan(ks=range(2, 11)).fit(features)        # doctest: +SKIP
    >>> scan.suggested_k_, scan.reason_                     # doctest: +SKIP
    """

    def __init__(
        self,
        ks: Iterable[int] = DEFAULT_KS,
        pca: int | None = DEFAULT_PCA,
        normalize: bool = DEFAULT_NORMALIZE,
        random_state: Any = 0,
        n_runs: int = 3,
        n_init: int = 3,
        sample_size: int = SILHOUETTE_SAMPLE,
        fit_size: int = 5000,
        fit_dims: int = 64,
        min_stability: float = MIN_STABILITY,
        fit_sample: int | None = FIT_SAMPLE,
    ) -> None:
        self.ks = ks
        self.pca = pca
        self.normalize = normalize
        self.random_state = random_state
        self.n_runs = n_runs
        self.n_init = n_init
        self.sample_size = sample_size
        self.fit_size = fit_size
        self.fit_dims = fit_dims
        self.min_stability = min_stability
        self.fit_sample = fit_sample

    def check_params(self) -> list[int]:
        """Validate the parameters (:meth:`fit` does too); returns the sorted ks.

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
        check_int("pca", self.pca, none_ok=True)
        check_bool("normalize", self.normalize)
        check_random_state("random_state", self.random_state, seed=False)
        for name in ("n_runs", "n_init", "sample_size", "fit_size", "fit_dims"):
            check_int(name, getattr(self, name), low=2 if name in ("n_runs", "sample_size") else 1)
        check_float("min_stability", self.min_stability, low=0, high=1)
        check_int("fit_sample", self.fit_sample, low=2, none_ok=True)
        return ks

    def fit(self, X: Any, y: Any = None) -> KScan:
        """Scan the ks on features ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        UsageError
            If a parameter is invalid, there are too few images (or too few
            distinct images) for the smallest k, or all images are identical.
        """
        ks = self.check_params()
        for name in (
            "scan_labels_",
            "ks_",
            "scores_",
            "suggested_k_",
            "reason_",
            "sample_index_",
            "seed_",
        ):  # of an earlier fit
            self.__dict__.pop(name, None)
        seed = check_random_state("random_state", self.random_state)
        X, sample = checked_sample(self, X, self.fit_sample, seed)
        n = len(X) if sample is None else len(sample)
        fitted_ks = [k for k in ks if k <= n - 1]
        if not fitted_ks:
            raise UsageError(
                f"k={ks[0]} needs at least {ks[0] + 1} images; there are {n}"
                + ("" if sample is None else f" in the fit sample (fit_sample={self.fit_sample})")
            )
        # A k above the number of distinct images would leave clusters empty.
        distinct = count_distinct(X, stop=fitted_ks[-1], rows=sample)
        if distinct < 2:
            raise UsageError(
                f"all {n} images have identical features (the same image "
                f"{n} times?): there are no groups to find; k-means needs at "
                "least 2 distinct images"
            )
        fitted_ks = [k for k in fitted_ks if k <= distinct]
        if not fitted_ks:
            raise UsageError(
                f"k={ks[0]} is larger than the number of distinct images: the "
                f"{n} images have only {distinct} distinct feature vectors"
            )
        # The reduced sample (gathered block by block), as FeatureKMeans reduces it.
        _, Z = reduced_sample(X, sample, self.pca, False, self.normalize, seed)
        rng = np.random.default_rng(seed)
        F = fitting_space(Z, self.fit_dims, self.fit_size, rng, seed)
        sil = SilhouetteSample(Z, self.sample_size, seed)
        rows = []
        self.scan_labels_ = np.empty((len(fitted_ks), n), np.int64)
        for i, k in enumerate(fitted_ks):
            labels, runs = subsample_kmeans(F, k, self.n_runs, self.n_init, self.fit_size, rng)
            rows.append({"k": k, **cluster_scores(Z, labels, sil), "stability": stability(runs)})
            self.scan_labels_[i] = labels
        self.seed_ = seed
        self.ks_ = fitted_ks
        self.sample_index_ = np.arange(n) if sample is None else sample
        self.scores_ = {
            c: np.array([r[c] for r in rows], dtype=np.int64 if c == "k" else np.float64)
            for c in COLUMNS
        }
        self.suggested_k_, self.reason_ = suggest_k(self.scores_, self.min_stability)
        return self


def suggest_k(scores: dict, min_stability: float = MIN_STABILITY) -> tuple[int, str]:
    """Pick k from a scan: the best silhouette among the reproducible ks.

    Parameters
    ----------
    scores : dict of str to 1-D array
        As :attr:`KScan.scores_` (at least ``k``, ``silhouette`` and
        ``stability``).
    min_stability : float

    Returns
    -------
    k : int
    reason : str
    """
    ks = np.asarray(scores["k"])
    sil = np.asarray(scores["silhouette"], dtype=np.float64)
    stab = np.asarray(scores["stability"], dtype=np.float64)
    scored = np.flatnonzero(~np.isnan(sil))
    if not len(scored):
        return int(ks.min()), "no k has a defined silhouette; the smallest k is suggested"
    stable = scored[stab[scored] >= min_stability]
    if len(stable):
        best = stable[np.argmax(sil[stable])]
        return int(ks[best]), (
            f"highest silhouette ({sil[best]:.3f}) among the k whose "
            f"clusterings are reproducible (stability >= {min_stability:g}; "
            f"{len(stable)} of {len(ks)} k)"
        )
    best = scored[np.argmax(sil[scored])]
    top = scored[np.argmax(stab[scored])]
    return int(ks[best]), (
        f"highest silhouette ({sil[best]:.3f}); but no k is "
        f"reproducible (best stability {stab[top]:.2f} at k={ks[top]}, "
        f"below {min_stability:g}): the images may not fall into clear groups"
    )


def choose_k(
    X: Any,
    ks: Iterable[int] = DEFAULT_KS,
    pca: int | None = DEFAULT_PCA,
    normalize: bool = DEFAULT_NORMALIZE,
    random_state: Any = 0,
    fit_sample: int | None = FIT_SAMPLE,
) -> KScan:
    """Run the scan for ``sort`` with ``n_clusters="auto"``; returns the fitted :class:`KScan`."""
    return KScan(
        ks=ks, pca=pca, normalize=normalize, random_state=random_state, fit_sample=fit_sample
    ).fit(X)


#: The parameters of :class:`KScan` and their defaults, read from its signature.
DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(KScan).parameters.items()
}
