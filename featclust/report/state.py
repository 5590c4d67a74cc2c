"""What the report shows of a sorted folder as it is now: its clusters, names, features, flags.

Read fresh every time, so a report written after edits of the folder (images
moved, clusters merged, split, renamed, set aside) or after ``assign --place``
describes the folder as it is, not as the sort left it:

* :func:`cluster_names`: every cluster's name and folder;
* :func:`read_features`: the images' features from the store, the placed
  images' found by their content;
* :func:`make_clusters`: the :class:`~featclust.report.page.Cluster` list;
* :func:`flag_clusters`: the doubtful clusters (:data:`featclust.flags.FLAGS`),
  judged on the current members.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FeatclustError, FeaturesUnavailableError, UsageError
from ..fileio import read_csv
from ..flags import cluster_table
from ..output import MODEL_NPZ, RunRecord, SortedFolder
from ..scores import cluster_silhouettes
from ..sort import cluster_dir_name
from ..store import FeatureStore
from . import page
from .render import montage_ranks

#: The map's method and random state, beside ``map.csv``, so that a refresh
#: of the report can keep the map.
MAP_JSON = "map.json"


def cluster_names(sorted_folder: SortedFolder) -> tuple[list[str], list[str]]:
    """``(names, folders)``: every cluster's name and its folder in the output folder.

    A cluster that was never renamed is named by its folder (``cluster_03``);
    a renamed one by the name a person gave it, its folder following it
    (``03-rings``), as the folder's edits record them
    (:meth:`featclust.output.SortedFolder.clusters`).
    """
    k = sorted_folder.n_clusters
    if not sorted_folder.record.curation:  # as sorted: nothing to read back
        folders = [cluster_dir_name(c, k) for c in range(k)]
        return list(folders), folders
    infos = sorted_folder.clusters()
    return [i.name or i.folder for i in infos], [i.folder for i in infos]


def set_aside_count(sorted_folder: SortedFolder) -> int:
    """How many images a person set aside (in no cluster, so in no ``labels.csv`` row)."""
    if not sorted_folder.record.curation:
        return 0
    return len(sorted_folder.set_aside_images())


def read_features(
    record: RunRecord, paths: list, copies: dict[str, str] | None = None
) -> np.ndarray:
    """The features of ``paths`` from the store the sort recorded.

    Parameters
    ----------
    record : featclust.output.RunRecord
    paths : list of str
        ``labels.csv``'s paths.
    copies : dict of str to str, optional
        Path -> its file in the output folder: an image placed there from
        elsewhere (``assign --place``) is not in the image folder's index,
        and its row is found by the copy's content.

    Raises
    ------
    FeaturesUnavailableError
        Saying why they are not there.
    """
    if not (record.image_dir and record.feature_settings):
        raise FeaturesUnavailableError("featclust.json does not say where the features are stored")
    store = FeatureStore(record.image_dir, record.feature_settings, record.store_root)
    return store.read_features(paths, copies=copies)


def make_clusters(paths, labels, dists, names, folders):
    """One :class:`~featclust.report.page.Cluster` per cluster, members closest first.

    Images with a negative label (set aside: in no cluster) are in none.
    """
    clusters = []
    for label, (name, folder) in enumerate(zip(names, folders)):
        idx = np.flatnonzero(labels == label)
        idx = idx[np.argsort(dists[idx], kind="stable")]
        clusters.append(
            page.Cluster(
                label,
                folder,
                [paths[i] for i in idx],
                dists[idx],
                montage_ranks(len(idx)),
                order=idx,
                name=name,
            )
        )
    return clusters


def add_silhouettes(clusters, Z, labels, random_state):
    """Set each cluster's ``silhouette`` (images set aside are left out)."""
    keep = labels >= 0
    if keep.all():
        Zk, lk = Z, labels
    else:
        Zk, lk = Z[keep], labels[keep]
    for c, s in zip(
        clusters, cluster_silhouettes(Zk, lk, len(clusters), random_state=random_state)
    ):
        c.silhouette = s


def flag_clusters(clusters, labels, dists, outliers, record):
    """Set each cluster's ``flags`` and ``reasons`` from its members now.

    Tiny, loose, low silhouette and outliers are judged on the current
    members (:func:`featclust.flags.cluster_table`); a cluster's stability
    is the sort's (``scores["cluster_stability"]`` of ``featclust.json``),
    which needs new k-means runs to measure again.
    """
    keep = labels >= 0
    recorded = (record.scores or {}).get("cluster_stability")
    stabilities = (
        recorded
        if isinstance(recorded, list)
        and len(recorded) == len(clusters)
        and all(v is None or isinstance(v, (int, float)) for v in recorded)
        else None
    )
    rows = cluster_table(
        labels[keep],
        dists[keep],
        len(clusters),
        silhouettes=[c.silhouette for c in clusters],
        stabilities=stabilities,
        outliers=None if outliers is None else np.asarray(outliers)[keep],
    )
    for c, r in zip(clusters, rows):
        c.flags, c.reasons = r["flags"], r["reasons"]
    return rows


@dataclass
class Now:
    """The sorted folder as it is now: images, clusters, outlier flags, features.

    Made by :meth:`read`; images set aside (a negative label) are left out
    and counted in ``n_aside``.
    """

    record: Any
    paths: list
    labels: np.ndarray
    dists: np.ndarray
    outliers: np.ndarray | None
    Z: np.ndarray | None
    names: list
    folders: list
    warnings: list
    n_aside: int = 0

    @classmethod
    def read(cls, sorted_folder, features, model, clustering):
        """Read labels.csv (or take the sort's ``clustering``), names, features, model."""
        record = sorted_folder.record
        if clustering is not None:
            paths, labels, dists, outliers = (
                clustering.paths,
                clustering.labels,
                clustering.distances,
                clustering.outliers,
            )
            model = clustering.model
        else:
            paths, labels, dists, outliers = sorted_folder.labels(outliers=True)
        labels, dists = np.asarray(labels), np.asarray(dists)
        names, folders = cluster_names(sorted_folder)
        warnings: list[str] = []
        if features is None:
            copies = {
                p: os.path.join(sorted_folder.path, folders[c], *p.split("/"))
                for p, c in zip(paths, labels)
                if 0 <= c < len(folders)
            }
            try:
                features = read_features(record, paths, copies)
            except FeaturesUnavailableError as e:
                warnings.append(f"{e}; the report has no 2-D map and no silhouette scores")
        elif len(features) != len(paths):
            raise UsageError(
                f"features has {len(features)} rows but labels.csv lists {len(paths)} images"
            )
        if model is None and (sorted_folder.path / MODEL_NPZ).is_file():
            try:
                model = sorted_folder.model
            except FeatclustError:
                if features is not None:
                    raise
        if features is not None and model is not None and model.n_features_in_ != features.shape[1]:
            model = None
        Z = None
        if features is not None and len(paths) > 0:
            Z = reduced(features, model, handed=clustering is not None)
        now = cls(record, list(paths), labels, dists, outliers, Z, names, folders, warnings)
        keep = labels >= 0
        if not keep.all():  # images set aside: in no cluster, on no page
            now = now.subset(keep)
        now.n_aside = int((~keep).sum()) + set_aside_count(sorted_folder)
        return now

    def subset(self, rows):
        """The same, for the images of the boolean mask ``rows`` only."""
        pick = np.flatnonzero(rows)
        return Now(
            self.record,
            [self.paths[i] for i in pick],
            self.labels[pick],
            self.dists[pick],
            None if self.outliers is None else np.asarray(self.outliers)[pick],
            None if self.Z is None else self.Z[pick],
            self.names,
            self.folders,
            self.warnings,
            self.n_aside,
        )


def earlier_map(sorted_folder):
    """``(method, random_state, {path: (x, y)})`` of the report in the folder, or ``None``
    when there is none to keep (no report, or no record of its map)."""
    files = set(sorted_folder.record.files)
    r = page.REPORT_DIR
    if f"{r}/index.html" not in files or f"{r}/{MAP_JSON}" not in files:
        return None
    try:
        info = json.loads((sorted_folder.path / r / MAP_JSON).read_text(encoding="utf-8"))
        method, seed = info["method"], info["random_state"]
        if method not in (None, "tsne", "pca") or not isinstance(seed, int):
            return None
        xy = {}
        if method is not None:
            for row in read_csv(sorted_folder.path / r / "map.csv", required=page.MAP_HEADER):
                xy[row["path"]] = (float(row["x"]), float(row["y"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return method, seed, xy


def reduced(features, model, handed=False):
    """The features in the space the clustering ran in: the model's own rows
    (``reduced_``, kept by the fit) when the sort that fitted it on these
    features ``handed`` it over, else reduced now."""
    if model is None:
        return np.asarray(features, np.float32)
    reduced = getattr(model, "reduced_", None) if handed else None
    if reduced is not None and len(reduced) == len(features):
        return reduced
    return model.reduce(features)
