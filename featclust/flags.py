"""Which clusters look wrong, and why: the flags of a clustering and their thresholds.

:func:`cluster_table` gives every cluster its size, spread and flags (tiny,
loose, low silhouette, unstable, outliers), each with the figure and the
threshold behind it; :func:`flag_lines` and :func:`unstable_clustering` say
them in words. The thresholds are declared here once; ``sort``, the edits of a
sorted folder, the report and the command line all flag alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .fileio import fmt_num
from .labelling import OUTLIER_PERCENTILE

#: A cluster is tiny when it has fewer members than this ...
TINY_MIN_SIZE = 3
#: ... or fewer than this share of the average cluster size.
TINY_SHARE = 0.1
#: A cluster is loose when its members' mean distance to the centre exceeds
#: this multiple of the median over all clusters.
LOOSE_FACTOR = 1.5
#: A cluster whose members' mean silhouette is below this is flagged
#: ``low_silhouette``: its members lie about as close to another cluster as to
#: their own. Measured (benchmarks/flag_thresholds.py, 324 clusters of the five
#: sample kinds at k and k +- 2, 55% of them mixed): below 0.1, 96% of the
#: flagged clusters were mixed but only 26% of the mixed ones flagged; below
#: 0.15, 85% and 50%; below 0.2, 80% and 70%.
LOW_SILHOUETTE = 0.15
#: A cluster that repeated k-means runs find again with a mean Jaccard index
#: below this is flagged ``unstable`` (Hennig, 2007: below 0.6 a cluster is
#: not found again). Measured as above: 78% of the clusters below it mixed,
#: 33% of the mixed ones below it (87% and 19% below 0.5).
UNSTABLE_BELOW = 0.6
#: A cluster with more than this share of its members farther from the centre
#: than its outlier threshold is flagged ``outliers``. The threshold is the
#: members' 95th percentile when the model is fitted, so about 5% are beyond it
#: then; more means images placed or moved there since that do not fit.
OUTLIER_SHARE = 0.15
#: The flags a cluster can get, in the order tables show them, each with what
#: it means; the thresholds are the constants above.
FLAGS = {
    "tiny": "far fewer members than the average cluster",
    "loose": "members far from the centre compared with the other clusters",
    "low_silhouette": "members about as close to another cluster as to their own",
    "unstable": "repeated k-means runs do not find the cluster again",
    "outliers": "many members farther from the centre than the outlier threshold",
}


def cluster_table(
    labels: np.ndarray,
    distances: np.ndarray,
    n_clusters: int,
    *,
    silhouettes: Sequence[float | None] | None = None,
    stabilities: Sequence[float | None] | None = None,
    outliers: np.ndarray | None = None,
) -> list[dict]:
    """Size and spread of every cluster, with the clusters that look wrong flagged.

    The flags (:data:`FLAGS`), each with the figure and threshold behind it:

    * ``tiny``: fewer than :data:`TINY_MIN_SIZE` members or fewer than
      :data:`TINY_SHARE` of the average cluster size;
    * ``loose``: the members' mean distance to the centre is more than
      :data:`LOOSE_FACTOR` times the median of that figure over all clusters;
    * ``low_silhouette``: the members' mean silhouette is below :data:`LOW_SILHOUETTE`;
    * ``unstable``: repeated k-means runs find it again with a mean Jaccard
      index below :data:`UNSTABLE_BELOW` (see :func:`featclust.scores.cluster_stabilities`);
    * ``outliers``: more than :data:`OUTLIER_SHARE` of its members lie beyond
      its outlier threshold.

    A figure that is not given (``None``) raises no flag.

    Parameters
    ----------
    labels : ndarray of shape (n_samples,)
    distances : ndarray of shape (n_samples,)
        Distance of every image to its cluster centre.
    n_clusters : int
    silhouettes, stabilities : list of float or None, optional
        One per cluster (:func:`featclust.scores.cluster_silhouettes`,
        :func:`featclust.scores.cluster_stabilities`).
    outliers : ndarray of bool, optional
        Per image: beyond its cluster's outlier threshold.

    Returns
    -------
    list of dict
        One per cluster: ``cluster``, ``size``, ``mean_distance``,
        ``p95_distance``, ``max_distance`` (NaN for an empty cluster),
        ``silhouette``, ``stability``, ``n_outliers`` (``None`` when unknown),
        ``flags`` (the names of :data:`FLAGS` it gets, in that order),
        ``reasons`` (flag name to a sentence with the figures, for people),
        and ``tiny``, ``loose`` (bool).
    """
    labels, distances = np.asarray(labels), np.asarray(distances, dtype=np.float64)
    n = len(labels)
    rows = []
    for c in range(n_clusters):
        member = labels == c
        d = distances[member]
        stats = (
            (d.mean(), np.percentile(d, OUTLIER_PERCENTILE), d.max()) if len(d) else (math.nan,) * 3
        )
        rows.append(
            {
                "cluster": c,
                "size": len(d),
                "mean_distance": float(stats[0]),
                "p95_distance": float(stats[1]),
                "max_distance": float(stats[2]),
                "silhouette": _finite_or_none(silhouettes, c),
                "stability": _finite_or_none(stabilities, c),
                "n_outliers": None if outliers is None else int(np.sum(outliers[member])),
            }
        )
    tiny_below = max(TINY_MIN_SIZE, TINY_SHARE * n / max(n_clusters, 1))
    spreads = [r["mean_distance"] for r in rows if r["size"] >= 2]
    median = float(np.median(spreads)) if spreads else math.nan
    for r in rows:
        r["reasons"] = _reasons(r, n, tiny_below, median)
        r["flags"] = [f for f in FLAGS if f in r["reasons"]]
        r["tiny"], r["loose"] = "tiny" in r["reasons"], "loose" in r["reasons"]
    return rows


def flag_rules() -> dict[str, str]:
    """Every flag of :data:`FLAGS` -> what it means, with its threshold, for people."""
    return {
        "tiny": f"{FLAGS['tiny']}: fewer than {TINY_MIN_SIZE} members, or fewer than "
        f"{TINY_SHARE:.0%} of the average cluster size",
        "loose": f"{FLAGS['loose']}: a mean distance to the centre over {LOOSE_FACTOR:g} "
        "times the median of the clusters'",
        "low_silhouette": f"{FLAGS['low_silhouette']}: a silhouette below {LOW_SILHOUETTE:g}",
        "unstable": f"{FLAGS['unstable']}: a Jaccard index below {UNSTABLE_BELOW:g} between "
        "it and its best match in each run, on average (measured by the sort)",
        "outliers": f"{FLAGS['outliers']}: more than {OUTLIER_SHARE:.0%} of its members "
        "(about 5% are when the clusters are made)",
    }


_PHRASES = {
    "tiny": "is tiny",
    "loose": "is loose",
    "low_silhouette": "has a low silhouette",
    "unstable": "is unstable",
    "outliers": "has many outliers",
}


def flag_lines(rows: list[dict]) -> list[str]:
    """One sentence per flag raised in :func:`cluster_table` rows, for people.

    ``"cluster 3 has a low silhouette (silhouette 0.08, below 0.1: ...)"``.
    """
    return [
        f"cluster {r['cluster']} {_PHRASES[f]} ({r['reasons'][f]})"
        for r in rows
        for f in r.get("flags", ())
    ]


def unstable_clustering(scores: dict, min_stability: float) -> str | None:
    """What to say when the clustering as a whole is not reproducible, or ``None``.

    Parameters
    ----------
    scores : dict
        With ``stability`` (:func:`featclust.scores.model_scores`; NaN or ``None``
        when unknown).
    min_stability : float
        Below this the clustering is called unstable (the k scan's
        :data:`featclust.kscan.MIN_STABILITY`).
    """
    stab = scores.get("stability")
    if not isinstance(stab, (int, float)) or not math.isfinite(stab) or stab >= min_stability:
        return None
    return (
        f"the clustering is unstable: repeated k-means runs agree with an adjusted Rand "
        f"index of only {stab:.2f} ({min_stability:g} or more is stable); the clusters "
        "flagged unstable change from run to run, and another k may fit better "
        "(featclust scan-k)"
    )


def _finite_or_none(values, i):
    if values is None or i >= len(values) or values[i] is None:
        return None
    v = float(values[i])
    return v if math.isfinite(v) else None


def _reasons(r, n, tiny_below, median):
    """Flag name -> why, in words with the figures, for the flags cluster row ``r`` gets."""
    size, why = r["size"], {}
    if size < tiny_below:
        why["tiny"] = f"{size} of {n} images, fewer than {fmt_num(tiny_below, 3)}"
    if size >= 2 and median > 0 and r["mean_distance"] > LOOSE_FACTOR * median:
        why["loose"] = (
            f"mean distance to the centre {fmt_num(r['mean_distance'], 4)}, more than "
            f"{LOOSE_FACTOR:g} times the median over the clusters ({fmt_num(median, 4)})"
        )
    if r["silhouette"] is not None and r["silhouette"] < LOW_SILHOUETTE:
        why["low_silhouette"] = (
            f"silhouette {fmt_num(r['silhouette'], 3)}, below {LOW_SILHOUETTE:g}: its members lie "
            "about as close to another cluster as to their own"
        )
    if r["stability"] is not None and r["stability"] < UNSTABLE_BELOW:
        why["unstable"] = (
            f"repeated k-means runs find it again with a Jaccard index of only "
            f"{fmt_num(r['stability'], 3)} (below {UNSTABLE_BELOW:g})"
        )
    k_out = r["n_outliers"]
    if k_out is not None and size and k_out > OUTLIER_SHARE * size:
        why["outliers"] = (
            f"{k_out} of {size} members ({k_out / size:.0%}) lie farther from the centre "
            f"than its outlier threshold (more than {OUTLIER_SHARE:.0%})"
        )
    return why
