"""The report of a sorted folder: montages, an overview, a 2-D map and ``index.html``.

Everything goes into ``OUT_DIR/report/``, never into the cluster folders::

    report/index.html                  static page, relative links only
    report/clusters/cluster_XX.html    every member of a cluster: thumbnail, name, distance
    report/overview.png                the most central images of every cluster
    report/map.png, map.csv            2-D map of all images, coloured by cluster
    report/map_thumbnails.png          the same map with small thumbnails
    report/kscan.png                   the k-scan plot, when scan-k has been run
    report/summary.csv                 size, distances and silhouette of every cluster
    report/montages/cluster_XX.png     up to 64 members, closest to the centre first
    report/montages/cluster_XX.csv     those members, in the montage's order

This module only orchestrates; the work is done by

* :mod:`~featclust.report.layout`: the 2-D map and its cache;
* :mod:`~featclust.report.render`: the pictures (montages, overview, maps, k-scan plot);
* :mod:`~featclust.report.page`: ``index.html`` and the CSV tables;
* :mod:`~featclust.report.gallery`: the cluster galleries, and the near-duplicates
  page (:func:`duplicates_html`, written by the caller);
* :mod:`~featclust.report.markup`: what the pages share (escaping, links, words, style).

The sorted folder is read through :func:`featclust.output.open_sorted`, the
features through the feature store's own API, the silhouettes come from
:func:`featclust.scores.cluster_silhouettes` and the thumbnails from
:func:`featclust.images.thumbnail`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_choice, check_random_state
from ..errors import FeatclustError, FeaturesUnavailableError, UsageError
from ..output import MODEL_NPZ, OutputFolder, RunRecord, SortedFolder, open_sorted
from ..progress import bar_factory
from ..scores import cluster_silhouettes
from ..sort import cluster_dir_name
from ..store import FeatureStore, default_root
from . import layout, page, render
from .gallery import duplicates_html, gallery_html
from .layout import (
    TSNE_MAX_IMAGES,
    cached_2d,
    embed_2d,
    make_map,
    map_plan,
    map_thumbnail_picks,
)
from .page import GALLERY_DIR
from .render import (
    MONTAGE_MAX,
    MONTAGE_TILE,
    cluster_colors,
    kscan_png,
    montage_ranks,
    montage_tile_box,
    plot_kscan,
)

REPORT_DIR = page.REPORT_DIR
MAP_METHODS = ("auto", "tsne", "pca")


@dataclass
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    index : pathlib.Path
        The ``index.html`` page.
    files : list of str
        Every file written, relative to the output folder.
    map_method : str or None
        ``"tsne"`` or ``"pca"``; ``None`` when there is no map (features not
        available, or all identical).
    members : dict of int to list of str
        The images shown in each cluster's montage, in montage order.
    warnings : list of str
        What was left out, and why (for example a feature store that is gone).
    map_note : str or None
        Why the map is not the t-SNE map, or left out (degenerate features,
        a set too large for ``"auto"``); also shown on the page.
    """

    index: Path
    files: list
    map_method: str | None
    members: dict
    warnings: list = field(default_factory=list)
    map_note: str | None = None


@dataclass
class Clustering:
    """A sort's result in memory, handed to :func:`write_report` by the sort that
    just wrote it, so the report reads nothing back from the folder.

    Attributes
    ----------
    paths : list of str
        The images, in ``labels.csv`` order.
    labels : numpy.ndarray of int
    distances : numpy.ndarray of float
        To the own cluster's centre, in the space k-means ran in.
    outliers : numpy.ndarray of bool or None
        Farther from the centre than the cluster's outlier threshold.
    model : featclust.cluster.FeatureKMeans
        Fitted; its ``reduced_`` (the rows in the space of its centres), when
        it has them, spares the report reducing the features again.
    """

    paths: list
    labels: np.ndarray
    distances: np.ndarray
    outliers: np.ndarray | None
    model: Any


def check_map_method(map_method: str) -> str:
    """Return ``map_method`` if it is one of :data:`MAP_METHODS`, or raise :class:`UsageError`."""
    return check_choice("map_method", map_method, MAP_METHODS)


def write_report(
    out_dir: str | os.PathLike,
    *,
    features: np.ndarray | None = None,
    model: Any = None,
    map_method: str = "auto",
    random_state: int = 0,
    progress: Any = None,
    clustering: Clustering | None = None,
) -> ReportResult:
    """Write (or re-write) ``OUT_DIR/report/`` for a folder made by ``sort``.

    Files of an earlier report are removed first; every new file is recorded
    in the folder's marker before it is written, so files put there by
    anyone else are never touched.

    Parameters
    ----------
    out_dir : path-like
        An output folder written by :func:`featclust.sort_folder`.
    features : numpy.ndarray, optional
        Features of the images in ``labels.csv`` order. Read from the feature
        store recorded in ``featclust.json`` when not given; without them
        the report has no map and no silhouette scores (see ``warnings``).
    model : featclust.FeatureKMeans, optional
        The fitted model; read from ``model.npz`` when not given. Its
        ``reduce`` maps the features into the clustering space.
    map_method : {"auto", "tsne", "pca"}
        ``"tsne"``: PCA to 50 dimensions, then t-SNE (openTSNE); ``"pca"``:
        PCA to 2 dimensions, much faster for very large sets; ``"auto"``:
        t-SNE up to :data:`TSNE_MAX_IMAGES` images, PCA above. Degenerate
        features fall back (see :func:`featclust.report.layout.map_plan`):
        fewer than 5 distinct vectors get PCA, identical ones no map, with a
        note on the page.
    random_state : int
        Random state of t-SNE and of the samples (silhouettes, map thumbnails).
    progress : bool, None or tqdm class
        Progress bar (see :mod:`featclust.progress`); a factory
        ``progress(description, total)`` returning an object with
        ``update(n)`` and ``close()`` (a ``tqdm`` does).
    clustering : Clustering, optional
        The result of the sort that just wrote ``out_dir``: its labels,
        distances, outlier flags and model are used as they are, and
        ``labels.csv`` and ``model.npz`` are not read back (``model`` must
        then not be given).

    Returns
    -------
    ReportResult

    Raises
    ------
    UsageError
        If ``out_dir`` is not a complete featclust output, or a parameter is
        not valid.
    OutputFormatError
        If its record is of another format version.
    UnsafeOutputError
        If a report file would overwrite a file featclust did not write.
    OutputError
        If a file cannot be written.
    """
    check_map_method(map_method)
    random_state = check_random_state("random_state", random_state)
    sorted_folder = open_sorted(out_dir)
    record = sorted_folder.record
    n_clusters = sorted_folder.n_clusters
    if clustering is not None:
        if model is not None:
            raise UsageError("give either model or clustering (which holds the model), not both")
        paths, labels, dists, outliers = (
            clustering.paths,
            clustering.labels,
            clustering.distances,
            clustering.outliers,
        )
        model = clustering.model
    else:
        paths, labels, dists, outliers = sorted_folder.labels(outliers=True)
    warnings: list[str] = []
    if features is None:
        try:
            features = _read_features(record, paths)
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
    kscan_scores = _kscan_scores(sorted_folder, warnings)

    clusters = _clusters(paths, labels, dists, n_clusters, cluster_dir_name)
    Z = map_method_used = map_note = None
    if features is not None and len(paths) > 0:
        Z = _reduced(features, model, handed=clustering is not None)
        map_method_used, map_note = map_plan(Z, map_method)
    has_map = map_method_used is not None
    files = _planned_files(clusters, has_map, kscan_scores is not None)
    out = OutputFolder(sorted_folder.path)
    old = [rel for rel in out.files if rel.split("/", 1)[0] == REPORT_DIR]
    if old:
        out.release(old)
    out.claim(files, status=out.status or "complete")

    r = REPORT_DIR
    progress = bar_factory(progress)
    bar = progress("report", len(clusters) + 3 + 2 * has_map, unit="step") if progress else None
    tick = bar.update if bar else (lambda n: None)
    try:
        thumbs = render.Thumbnails(
            sorted_folder.path, record.image_dir, {p: c.folder for c in clusters for p in c.paths}
        )
        method = map_method_used
        if Z is not None:
            _add_silhouettes(clusters, Z, labels, n_clusters, random_state)
        if Z is not None and method is not None:  # a map
            xy = cached_2d(
                Z, method, random_state, layout.map_cache_dir(record.store_root or default_root())
            )
            tick(1)
            out.write_bytes(f"{r}/map.png", render.map_png(xy, labels, n_clusters, method))
            out.write_text(f"{r}/map.csv", page.map_csv(paths, labels, xy))
            out.write_bytes(
                f"{r}/map_thumbnails.png",
                render.map_thumbnails_png(
                    xy, labels, paths, n_clusters, thumbs, random_state, method
                ),
            )
            tick(1)
        for i, c in enumerate(clusters):
            png = render.montage_png(c.label, len(c.paths), c.shown, n_clusters, thumbs)
            out.write_bytes(f"{r}/montages/{c.folder}.png", png)
            out.write_text(f"{r}/montages/{c.folder}.csv", page.members_csv(c))
            neighbours = (
                clusters[i - 1] if i > 0 else None,
                clusters[i + 1] if i + 1 < len(clusters) else None,
            )
            out.write_text(
                f"{r}/{GALLERY_DIR}/{c.folder}.html",
                gallery_html(
                    record,
                    c,
                    n_clusters,
                    None if outliers is None else outliers[c.order],
                    neighbours,
                ),
            )
            tick(1)
        out.write_bytes(
            f"{r}/overview.png",
            render.overview_png(
                [(c.label, len(c.paths), c.paths) for c in clusters], n_clusters, thumbs
            ),
        )
        tick(1)
        if kscan_scores is not None:
            kscan = record.kscan if isinstance(record.kscan, dict) else {}
            out.write_bytes(
                f"{r}/kscan.png", kscan_png(kscan_scores, _int_or_none(kscan.get("suggested_k")))
            )
        out.write_text(f"{r}/summary.csv", page.summary_csv(clusters, len(paths)))
        tick(1)
        index = out.write_text(
            f"{r}/index.html",
            page.index_html(
                record,
                clusters,
                len(paths),
                method,
                kscan_scores is not None,
                warnings,
                out_dir=sorted_folder.path,
                map_note=map_note,
                galleries=True,
            ),
        )
        out.write_marker(None, out.status or "complete")  # with the size/time of each file
        tick(1)
    finally:
        if bar:
            bar.close()
    return ReportResult(
        index, files, method, {c.label: c.shown for c in clusters}, warnings, map_note
    )


def _int_or_none(value):
    return (
        int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None
    )


def _reduced(features, model, handed=False):
    """The features in the space the clustering ran in: the model's own rows
    (``reduced_``, kept by the fit) when the sort that fitted it on these
    features ``handed`` it over, else reduced now."""
    if model is None:
        return np.asarray(features, np.float32)
    reduced = getattr(model, "reduced_", None) if handed else None
    if reduced is not None and len(reduced) == len(features):
        return reduced
    return model.reduce(features)


def _read_features(record: RunRecord, paths: list) -> np.ndarray:
    """The features of ``paths`` from the store the sort recorded; raises
    :class:`FeaturesUnavailableError` saying why they are not there."""
    if not (record.image_dir and record.feature_settings):
        raise FeaturesUnavailableError("featclust.json does not say where the features are stored")
    store = FeatureStore(record.image_dir, record.feature_settings, record.store_root)
    return store.read_features(paths)


def _kscan_scores(sorted_folder: SortedFolder, warnings: list) -> dict | None:
    try:
        return sorted_folder.kscan_scores()
    except FeatclustError as e:
        warnings.append(f"{e}; the report has no k-scan plot")
        return None


def _clusters(paths, labels, dists, n_clusters, folder_name):
    clusters = []
    for label in range(n_clusters):
        idx = np.flatnonzero(labels == label)
        idx = idx[np.argsort(dists[idx], kind="stable")]
        clusters.append(
            page.Cluster(
                label,
                folder_name(label, n_clusters),
                [paths[i] for i in idx],
                dists[idx],
                montage_ranks(len(idx)),
                order=idx,
            )
        )
    return clusters


def _add_silhouettes(clusters, Z, labels, n_clusters, random_state):
    for c, s in zip(
        clusters, cluster_silhouettes(Z, labels, n_clusters, random_state=random_state)
    ):
        c.silhouette = s


def _planned_files(clusters, has_map, has_kscan):
    r = REPORT_DIR
    files = [f"{r}/index.html", f"{r}/overview.png", f"{r}/summary.csv"]
    if has_map:
        files += [f"{r}/map.png", f"{r}/map.csv", f"{r}/map_thumbnails.png"]
    if has_kscan:
        files.append(f"{r}/kscan.png")
    for c in clusters:
        files += [
            f"{r}/montages/{c.folder}.png",
            f"{r}/montages/{c.folder}.csv",
            f"{r}/{GALLERY_DIR}/{c.folder}.html",
        ]
    return files


__all__ = [
    "Clustering",
    "ReportResult",
    "write_report",
    "check_map_method",
    "embed_2d",
    "cached_2d",
    "make_map",
    "map_plan",
    "gallery_html",
    "duplicates_html",
    "GALLERY_DIR",
    "montage_ranks",
    "montage_tile_box",
    "map_thumbnail_picks",
    "cluster_colors",
    "plot_kscan",
    "kscan_png",
    "MAP_METHODS",
    "REPORT_DIR",
    "TSNE_MAX_IMAGES",
    "MONTAGE_MAX",
    "MONTAGE_TILE",
]
