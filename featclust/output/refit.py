"""The model of a sorted folder re-fitted after an edit: centres from the members.

:func:`refit` is what every edit of :mod:`featclust.output.edits` calls, so
that ``assign`` and ``assign --place`` follow a person's decisions.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..labelling import outlier_thresholds, outliers
from .curation import Curation


def refit(
    features: Any, model: Any, new: Curation, old: Curation, order: np.ndarray | None = None
) -> tuple:
    """The model re-fitted to ``new``'s clusters, and every image's distance and
    outlier flag.

    ``features``: the :class:`~featclust.output.edits.Editor`, which reads the
    images' features once and keeps them.

    The centres of the clusters whose members changed are the means of their
    members' features in the model's reduced space (and before the PCA, where
    distances are measured), and their members' distances are measured
    again; every other cluster keeps its centre and its members their
    distances, so an edit costs what it changes. A cluster without members
    keeps its centre. The outlier thresholds are the 95th percentile of the
    members' distances again.
    """
    k = new.n_clusters
    if order is not None:  # a merge: the centre of each cluster's new number
        first = {int(n): c for c, n in reversed(list(enumerate(order)))}
        keep = [first.get(c, c) for c in range(k)]
    else:
        keep = list(range(k))
    changed = _changed(old, new, keep)
    again = features.has_features(new.paths) & np.isin(new.labels, changed)
    Z, F = features.views(model, [p for p, a in zip(new.paths, again) if a])
    labels = new.labels[again]
    refitted = copy.deepcopy(model)
    refitted.set_params(n_clusters=k)
    refitted.cluster_centers_ = _means(Z, labels, _carried(model.cluster_centers_, keep))
    if model.feature_centers_ is not None and F is not None:
        carried = _carried(model.feature_centers_, keep)
        refitted.feature_centers_ = _means(F, labels, carried)
        dist = np.linalg.norm(F - refitted.feature_centers_[labels], axis=1)
    else:
        dist = np.linalg.norm(Z - refitted.cluster_centers_[labels], axis=1)
    distances = np.array(new.distances, np.float64)
    distances[again] = dist
    refitted.thresholds_ = outlier_thresholds(new.labels, distances, k)
    return refitted, distances, outliers(refitted.thresholds_, new.labels, distances)


def _changed(old: Curation, new: Curation, keep: list) -> list:
    """The clusters of ``new`` whose members differ from those of the cluster they were."""

    def members(state: Curation) -> dict:
        found: dict = {}
        for p, c in zip(state.paths, state.labels):
            found.setdefault(int(c), set()).add(p)
        return found

    before, after = members(old), members(new)
    return [c for c in range(new.n_clusters) if after.get(c, set()) != before.get(keep[c], set())]


def _carried(old: np.ndarray, keep: list) -> np.ndarray:
    """Each new cluster's centre as it was (``old[keep[c]]``; zeros for a new number)."""
    out = np.zeros((len(keep), old.shape[1]), np.float64)
    for c, was in enumerate(keep):
        if was < len(old):
            out[c] = old[was]
    return out


def _means(A: np.ndarray, labels: np.ndarray, carried: np.ndarray) -> np.ndarray:
    """Each cluster's mean of its rows of ``A``; ``carried`` where it has none."""
    k = len(carried)
    counts = np.bincount(labels, minlength=k)
    order = np.argsort(labels, kind="stable")
    out = carried.copy()
    present = np.flatnonzero(counts)
    if len(present):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[present]
        sums = np.add.reduceat(A[order], starts, axis=0)
        out[present] = sums / counts[present][:, None]
    return out.astype(np.float32)
