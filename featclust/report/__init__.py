"""The report of a sorted folder: montages, an overview, a 2-D map and ``index.html``.

Everything goes into ``OUT_DIR/report/``, never into the cluster folders::

    report/index.html                  static page, relative links only
    report/clusters/cluster_XX.html    every member of a cluster: thumbnail, name, distance
    report/overview.png                the most central images of every cluster
    report/map.png, map.csv            2-D map of all images, coloured by cluster
    report/map.json                    how the map was made, for refresh_report
    report/map_thumbnails.png          the same map with small thumbnails
    report/kscan.png                   the k-scan plot, when scan-k has been run
    report/summary.csv                 size, distances, silhouette and flags of every cluster
    report/montages/cluster_XX.png     up to 64 members, closest to the centre first
    report/montages/cluster_XX.csv     those members, in the montage's order

:func:`write_report` writes it all, the map made (or taken from the map
cache); :func:`refresh_report` writes it again for the folder as it is now
(after edits or ``assign --place``), keeping the earlier map.

This module only orchestrates; the work is done by

* :mod:`~featclust.report.state`: the folder as it is now (clusters, names,
  features, flags);
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

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import check_choice, check_random_state
from ..errors import FeatclustError, UsageError
from ..output import OutputFolder, SortedFolder, open_sorted
from ..progress import bar_factory
from ..store import default_root
from . import layout, page, render, state
from .gallery import duplicates_html, gallery_html
from .layout import (
    TSNE_MAX_IMAGES,
    cached_2d,
    embed_2d,
    make_map,
    map_plan,
    map_thumbnail_picks,
)
from .markup import plural
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
MAP_JSON = state.MAP_JSON
#: A new image is drawn on a kept map at the mean position of this many of its
#: nearest mapped images in feature space.
NEW_POINT_NEIGHBOURS = 5


@dataclass
class ReportResult:
    """What :func:`write_report` (or :func:`refresh_report`) wrote.

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
        a set too large for ``"auto"``), or which images a kept map places
        (:func:`refresh_report`); also shown on the page.
    flags : list of list of str
        Each cluster's flags (:data:`featclust.flags.FLAGS`), judged on its
        members when the report was written.
    """

    index: Path
    files: list
    map_method: str | None
    members: dict
    warnings: list = field(default_factory=list)
    map_note: str | None = None
    flags: list = field(default_factory=list)


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
    if clustering is not None and model is not None:
        raise UsageError("give either model or clustering (which holds the model), not both")
    now = state.Now.read(sorted_folder, features, model, clustering)
    map_method_used = map_note = xy = None
    if now.Z is not None and len(now.paths) > 0:
        map_method_used, map_note = map_plan(now.Z, map_method)
        if map_method_used is not None:
            cache = layout.map_cache_dir(now.record.store_root or default_root())
            xy = cached_2d(now.Z, map_method_used, random_state, cache)
    return _write(
        sorted_folder, out_dir, now, xy, map_method_used, map_note, random_state, progress
    )


def refresh_report(
    out_dir: str | os.PathLike,
    *,
    features: np.ndarray | None = None,
    progress: Any = None,
) -> ReportResult:
    """Bring the report of ``out_dir`` up to date with the folder as it is now, keeping its map.

    After edits of the folder (images moved, clusters merged, split, renamed,
    set aside) or ``assign --place``: every count, montage, gallery, flag and
    silhouette describes the current members, and the map is the earlier
    report's (``map.csv``), not made again. An image the map does not have
    (placed or split off since) is put at the mean position of its
    :data:`NEW_POINT_NEIGHBOURS` nearest mapped images in feature space;
    without features it is left off the map, and the page says how many are.
    Images no longer sorted leave the map; the colours follow the current
    clusters. A folder without an earlier report (or with one made before
    the map was written down) gets :func:`write_report`'s full report.

    Parameters
    ----------
    out_dir : path-like
        An output folder written by :func:`featclust.sort_folder`; the page's
        ready commands name it as given here.
    features : numpy.ndarray, optional
        Features of the images in ``labels.csv`` order; read from the feature
        store when not given.
    progress : bool, None or tqdm class
        As for :func:`write_report`.

    Returns
    -------
    ReportResult

    Raises
    ------
    UsageError, OutputFormatError, UnsafeOutputError, OutputError
        As :func:`write_report`.
    """
    sorted_folder = open_sorted(out_dir)
    earlier = state.earlier_map(sorted_folder)
    if earlier is None:
        return write_report(out_dir, features=features, progress=progress)
    method, random_state, old_xy = earlier
    now = state.Now.read(sorted_folder, features, None, None)
    xy, note = None, None
    if old_xy:
        rows = np.array([p in old_xy for p in now.paths], bool)
        xy = np.full((len(now.paths), 2), np.nan, np.float32)
        if rows.any():
            xy[rows] = np.array([old_xy[p] for p, r in zip(now.paths, rows) if r], np.float32)
        n_new = int((~rows).sum())
        if n_new and now.Z is not None and rows.any():
            xy[~rows] = layout.place_new_points(
                now.Z[rows], xy[rows], now.Z[~rows], NEW_POINT_NEIGHBOURS
            )
            note = (
                f"the map was made before {plural(n_new, 'image')} joined: each is drawn at "
                f"the mean position of its {NEW_POINT_NEIGHBOURS} nearest mapped images in "
                "feature space (featclust report makes a new map)"
            )
        elif n_new:
            note = (
                f"the map was made before {plural(n_new, 'image')} joined, and they are not "
                "on it: their features could not be read"
            )
    return _write(sorted_folder, out_dir, now, xy, method, note, random_state, progress)


def _write(sorted_folder, out_dir, now, xy, method, map_note, random_state, progress):
    """Write every file of the report for the folder as ``now`` describes it, with map ``xy``."""
    record, paths, labels, n_clusters = now.record, now.paths, now.labels, len(now.folders)
    warnings = list(now.warnings)
    if now.n_aside:
        warnings.append(f"{plural(now.n_aside, 'image')} set aside: in no cluster, not shown")
    kscan_scores = _kscan_scores(sorted_folder, warnings)
    clusters = state.make_clusters(paths, labels, now.dists, now.names, now.folders)
    if now.Z is not None and len(paths) > 0:
        state.add_silhouettes(clusters, now.Z, labels, random_state)
    state.flag_clusters(clusters, labels, now.dists, now.outliers, record)
    on_map = None if xy is None else np.isfinite(xy).all(axis=1)
    has_map = method is not None and on_map is not None and bool(on_map.any())
    if has_map and not on_map.all():  # images a kept map does not have
        map_paths = [p for p, on in zip(paths, on_map) if on]
        map_labels, xy = labels[on_map], xy[on_map]
    else:
        map_paths, map_labels = paths, labels
    files = _planned_files(clusters, has_map, kscan_scores is not None)
    out = OutputFolder(sorted_folder.path)
    old = [rel for rel in out.files if rel.split("/", 1)[0] == REPORT_DIR]
    if old:
        out.release(old)
    out.claim(files, status=out.status or "complete")

    r = REPORT_DIR
    outliers = now.outliers
    progress = bar_factory(progress)
    bar = progress("report", len(clusters) + 3 + has_map, unit="step") if progress else None
    tick = bar.update if bar else (lambda n: None)
    try:
        thumbs = render.Thumbnails(
            sorted_folder.path, record.image_dir, {p: c.folder for c in clusters for p in c.paths}
        )
        out.write_text(
            f"{r}/{MAP_JSON}",
            json.dumps({"method": method if has_map else None, "random_state": random_state}),
        )
        if has_map:
            out.write_bytes(f"{r}/map.png", render.map_png(xy, map_labels, n_clusters, method))
            out.write_text(f"{r}/map.csv", page.map_csv(map_paths, map_labels, xy))
            out.write_bytes(
                f"{r}/map_thumbnails.png",
                render.map_thumbnails_png(
                    xy, map_labels, map_paths, n_clusters, thumbs, random_state, method
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
                    None if outliers is None else np.asarray(outliers)[c.order],
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
                method if has_map else None,
                kscan_scores is not None,
                warnings,
                out_dir=sorted_folder.path,
                map_note=map_note,
                galleries=True,
                split_dir=os.fspath(out_dir),
            ),
        )
        out.write_marker(None, out.status or "complete")  # with the size/time of each file
        tick(1)
    finally:
        if bar:
            bar.close()
    return ReportResult(
        index,
        files,
        method if has_map else None,
        {c.label: c.shown for c in clusters},
        warnings,
        map_note,
        [c.flags for c in clusters],
    )


def _int_or_none(value):
    return (
        int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None
    )


def _kscan_scores(sorted_folder: SortedFolder, warnings: list) -> dict | None:
    try:
        return sorted_folder.kscan_scores()
    except FeatclustError as e:
        warnings.append(f"{e}; the report has no k-scan plot")
        return None


def _planned_files(clusters, has_map, has_kscan):
    r = REPORT_DIR
    files = [f"{r}/index.html", f"{r}/overview.png", f"{r}/summary.csv", f"{r}/{MAP_JSON}"]
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
    "refresh_report",
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
