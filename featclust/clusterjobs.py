"""The jobs that cluster a folder: scan k (:func:`scan_folder`) and sort it (:func:`sort_folder`).

Both embed through :func:`featclust.pipeline.embed_folder`; the clustering's
parameters and defaults are those of :class:`~featclust.cluster.FeatureKMeans`
(and :class:`~featclust.kscan.KScan` for the scan).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import cluster, kscan, scores
from .checks import check_bool, check_choice
from .cluster import FeatureKMeans
from .distributed import check_dask, connect, labeller
from .embed import Embedder
from .errors import FeatclustError, UsageError
from .kscan import KScan, choose_k
from .output import (
    BAD_FILES_CSV,
    CLUSTERS_CSV,
    KSCAN_CSV,
    KSCAN_PNG,
    LABELS_CSV,
    MODEL_NPZ,
    TRUTH_CSV,
    Journal,
    OutputFolder,
    RunRecord,
    kscan_info,
    read_record,
    recover,
    save_kscan,
    write_kscan,
)
from .pipeline import EmbedResult, embed_folder, make_embedder
from .progress import bar_factory
from .report import Clustering, check_map_method, write_report
from .report.render import kscan_png
from .search import exact_duplicate_groups
from .sort import MODES, destinations, in_place, sort_into_folders
from .tables import bad_files_csv, clusters_csv, labels_csv, truth_csv

#: The clustering's parameters and defaults (see :data:`featclust.cluster.DEFAULTS`).
CLUSTER_DEFAULTS = cluster.DEFAULTS
KSCAN_DEFAULTS = kscan.DEFAULTS


@dataclass
class ScanResult:
    """What :func:`scan_folder` did.

    Attributes
    ----------
    embed : EmbedResult
    kscan : featclust.kscan.KScan
        The fitted scan: ``scores_``, ``suggested_k_``, ``reason_``.
    left_out : list of int
        The ks asked for that were not tried (k-means needs more images than clusters).
    written : list of pathlib.Path
        ``kscan.csv`` and ``kscan.png`` in ``out_dir`` (empty without it).
    """

    embed: EmbedResult
    kscan: KScan
    left_out: list = field(default_factory=list)
    written: list = field(default_factory=list)


def scan_folder(
    image_dir: str | os.PathLike,
    *,
    ks: Iterable[int] = KSCAN_DEFAULTS["ks"],
    embedder: Embedder | None = None,
    store: str | os.PathLike | None = None,
    pca: int | None = KSCAN_DEFAULTS["pca"],
    normalize: bool = KSCAN_DEFAULTS["normalize"],
    random_state: Any = KSCAN_DEFAULTS["random_state"],
    fit_sample: int | None = KSCAN_DEFAULTS["fit_sample"],
    out_dir: str | os.PathLike | None = None,
    progress: Any = None,
    dask: Any = None,
    **embedder_params: Any,
) -> ScanResult:
    """Embed what is missing and score k-means for each k of ``ks`` (``featclust scan-k``).

    Parameters
    ----------
    image_dir : path-like
    ks : iterable of int
        The ks to try (each at least 2; those not below the number of images are left out).
    embedder, store, progress, dask, embedder_params
        As in :func:`embed_folder`.
    pca, normalize, random_state, fit_sample
        As in :class:`featclust.kscan.KScan`.
    out_dir : path-like, optional
        Write ``kscan.csv`` and ``kscan.png`` there: a new or empty folder, or
        a featclust output such as a sorted folder (see
        :func:`featclust.output.save_kscan`). Checked before anything is embedded.

    Returns
    -------
    ScanResult

    Raises
    ------
    UsageError
        For an invalid parameter.
    UnsafeOutputError
        For an ``out_dir`` that is not safe to write (see :class:`featclust.output.OutputFolder`).
    NoImagesError
        If the folder holds no usable image.
    """
    scan = KScan(
        ks=ks, pca=pca, normalize=normalize, random_state=random_state, fit_sample=fit_sample
    )
    wanted = scan.check_params()
    embedder = make_embedder(embedder, embedder_params)
    if out_dir is not None:
        OutputFolder(out_dir, image_dir)  # refuse an unsafe folder before embedding
    emb = embed_folder(
        image_dir,
        embedder=embedder,
        store=store,
        exclude=[out_dir] if out_dir is not None else (),
        progress=progress,
        dask=dask,
    )
    scan.fit(emb.features)
    written = []
    if out_dir is not None:
        record = RunRecord(
            command="scan-k",
            status="writing",
            image_dir=os.path.abspath(image_dir),
            feature_settings=emb.settings,
        )
        written = save_kscan(
            out_dir, scan, record, image_dir, png=kscan_png(scan.scores_, scan.suggested_k_)
        )
    return ScanResult(emb, scan, sorted(set(wanted) - {int(k) for k in scan.ks_}), written)


@dataclass
class SortResult:
    """What :func:`sort_folder` did.

    Attributes
    ----------
    embed : EmbedResult
    model : featclust.cluster.FeatureKMeans
    out_dir : pathlib.Path
    destinations : list of str
        Where each image of ``embed.paths`` went, relative to ``out_dir``.
    report : featclust.report.ReportResult or None
        The report written into ``out_dir/report/`` (``None`` with ``report=False``).
    judgement : featclust.scores.Judgement
        Scores, cluster sizes and flags, agreement with known classes.
    kscan : featclust.kscan.KScan or None
        The scan that chose k (with ``n_clusters="auto"``).
    kept : list of str
        Files featclust wrote in an earlier run that were changed since (by a
        person, say): left as they are, not replaced and not removed.
    record : featclust.output.RunRecord
        What ``featclust.json`` records (``record.counts["identical_groups"]``:
        groups of byte-identical images, found by their content hashes;
        :func:`featclust.similarity.find_duplicates` lists them and the
        near-duplicates).
    """

    embed: EmbedResult
    model: FeatureKMeans
    out_dir: Path
    destinations: list
    report: object = None
    judgement: object = None
    kscan: object = None
    record: object = None
    kept: list = field(default_factory=list)


def sort_folder(
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n_clusters: int | str = CLUSTER_DEFAULTS["n_clusters"],
    embedder: Embedder | None = None,
    store: str | os.PathLike | None = None,
    pca: int | None = CLUSTER_DEFAULTS["pca"],
    whiten: bool = CLUSTER_DEFAULTS["whiten"],
    normalize: bool = CLUSTER_DEFAULTS["normalize"],
    random_state: Any = CLUSTER_DEFAULTS["random_state"],
    n_init: int = CLUSTER_DEFAULTS["n_init"],
    method: str = CLUSTER_DEFAULTS["method"],
    fit_sample: int | None = CLUSTER_DEFAULTS["fit_sample"],
    mode: str = "copy",
    progress: Any = None,
    report: bool = True,
    map_method: str = "auto",
    truth: dict | None = None,
    dask: Any = None,
    discard_edits: bool = False,
    **embedder_params: Any,
) -> SortResult:
    """Embed what is missing, cluster, and copy images into cluster folders.

    A re-sort into the same folder leaves every image already in its place
    as it is and moves those that change cluster (see
    :func:`featclust.sort.in_place`): it copies only images it does not hold.

    Parameters
    ----------
    image_dir, out_dir : path-like
        The two folders must not contain one another; ``out_dir`` must be new,
        empty or an earlier featclust output.
    n_clusters : int or "auto"
        ``"auto"``: the k suggested by a scan of k = 2..30 (see
        :class:`featclust.kscan.KScan`); its table goes to ``kscan.csv``.
    embedder, store, progress, embedder_params
        As in :func:`embed_folder`.
    pca, whiten, normalize, random_state, n_init, method, fit_sample
        The clustering's parameters, with their defaults: see
        :class:`featclust.cluster.FeatureKMeans`. With ``fit_sample`` the
        scan of ``"auto"`` is fitted on the same sample.
    mode : {"copy", "symlink", "hardlink"}
    report : bool
        Write montages, a 2-D map and ``index.html`` into ``out_dir/report/``
        (see :func:`featclust.report.write_report`).
    map_method : {"auto", "tsne", "pca"}
        How the report's map is made.
    truth : dict, optional
        Known classes of some images (relative path to label): adjusted
        Rand index, NMI and a contingency table (``truth.csv``) are reported.
    dask : distributed.Client, str or None
        Embed on a Dask cluster, as in :func:`embed_folder`; clustering,
        sorting and the report run in this process.
    discard_edits : bool
        Sort into a folder a person edited (see
        :meth:`featclust.output.SortedFolder.move` and the other edits),
        throwing their edits away; without it such a folder is refused.
    **embedder_params
        The embedder's parameters when ``embedder`` is not given (see
        :func:`embed_folder`).

    Returns
    -------
    SortResult
    """
    out = OutputFolder(out_dir, image_dir)
    if out.record is not None and out.record.command == "sort" and recover(out_dir):
        out = OutputFolder(out_dir, image_dir)  # an interrupted edit finished first
    check_bool("discard_edits", discard_edits)
    edits = int(((out.record.curation if out.record else None) or {}).get("edits") or 0)
    if edits and not discard_edits:
        raise UsageError(
            f"{str(out_dir)!r} holds {edits} edit{'s' if edits != 1 else ''} a person made "
            "(moves, merges, names ...); sorting into it would throw them away: sort into "
            "another folder, or give discard_edits=True (--discard-edits) to throw them away"
        )
    auto = isinstance(n_clusters, str) and n_clusters == "auto"
    k: Any = 2 if auto else n_clusters  # any other value is FeatureKMeans's to refuse
    model = FeatureKMeans(
        n_clusters=k,
        pca=pca,
        whiten=whiten,
        normalize=normalize,
        random_state=random_state,
        n_init=n_init,
        method=method,
        fit_sample=fit_sample,
    )
    model.check_params()
    dask = check_dask(dask)
    check_choice("mode", mode, MODES)
    if report:
        check_map_method(map_method)
    embedder = make_embedder(embedder, embedder_params)
    progress = bar_factory(progress)
    parent = _parent_sort(image_dir)
    with connect(dask) as client:
        emb = embed_folder(
            image_dir,
            embedder=embedder,
            store=store,
            exclude=[out_dir],
            progress=progress,
            dask=client,
        )
        scan = None
        if auto:
            scan = choose_k(
                emb.features,
                pca=pca,
                normalize=normalize,
                random_state=random_state,
                fit_sample=fit_sample,
            )
            model.set_params(n_clusters=scan.suggested_k_)
        # On a cluster every row is labelled by Dask tasks, block by block.
        model.fit(emb.features, labeller=labeller(client) if client is not None else None)
    k = model.n_clusters
    judged = scores.judge(model, emb.features, emb.paths, truth, model.seed_)
    dests = destinations(emb.paths, model.labels_, k)
    own = [LABELS_CSV, MODEL_NPZ, BAD_FILES_CSV, CLUSTERS_CSV]
    if judged.truth is not None:
        own.append(TRUTH_CSV)
    if scan is not None:
        own += [KSCAN_CSV, KSCAN_PNG]
    out.check_free(dests + own)
    held = in_place(out, image_dir, emb.paths, dests, mode)
    out.clear(keep=held.values())
    record = _record(image_dir, emb, model, embedder, mode, store, judged, scan, parent)
    record.counts["identical_groups"] = len(exact_duplicate_groups(emb.hashes))
    out.claim(dests + own, record, status="writing")
    bar = progress("copying", len(dests)) if progress else None
    vanished: list = []
    try:
        written = sort_into_folders(
            image_dir,
            out,
            emb.paths,
            model.labels_,
            k,
            mode,
            bar.update if bar else None,
            skipped=vanished,
            held=held,
        )
    finally:
        if bar:
            bar.close()
    if vanished:
        out.release(sorted(set(dests) - set(written)))
        emb.bad_files = sorted(emb.bad_files + vanished, key=lambda b: b.path)
        now = out.record or record
        now.counts = {**(now.counts or {}), "bad_files": len(emb.bad_files)}
    outliers = model.outliers(model.labels_, model.distances_)
    out.write_text(LABELS_CSV, labels_csv(emb.paths, model.labels_, model.distances_, outliers))
    out.write_text(BAD_FILES_CSV, bad_files_csv(emb.bad_files))
    out.write_text(CLUSTERS_CSV, clusters_csv(judged.clusters))
    if judged.truth is not None:
        out.write_text(TRUTH_CSV, truth_csv(judged.truth))
    if scan is not None:
        write_kscan(out, scan, kscan_png(scan.scores_, scan.suggested_k_))
    buf = io.BytesIO()
    model.save(buf, extra={"feature_settings": emb.settings, "embedder": record.embedder})
    out.write_bytes(MODEL_NPZ, buf.getvalue())
    out.write_marker(None, status="complete")
    Journal(out.path).discard()  # a new sort: nothing before it can be undone
    written_report = None
    if report:
        clustering = Clustering(emb.paths, model.labels_, model.distances_, outliers, model)
        written_report = write_report(
            out.path,
            features=emb.features,
            map_method=map_method,
            random_state=model.seed_,
            progress=progress,
            clustering=clustering,
        )
    return SortResult(
        emb, model, out.path, written, written_report, judged, scan, out.record, list(out.changed)
    )


def _parent_sort(image_dir):
    """``{"out_dir", "cluster"}`` when ``image_dir`` is a cluster folder of an earlier sort."""
    folder = Path(os.path.realpath(image_dir))
    try:
        record = read_record(folder.parent)
    except FeatclustError:
        return None
    if (
        record is None
        or record.command != "sort"
        or record.clustering is None
        or not any(f.startswith(folder.name + "/") for f in record.files)
    ):
        return None
    return {"out_dir": str(folder.parent), "cluster": folder.name}


def _record(image_dir, emb, model, embedder, mode, store, judged, scan, parent=None):
    params = embedder.get_params()
    if params["weights"] not in ("imagenet", "none"):
        params["weights"] = os.path.abspath(params["weights"])
    sizes = np.bincount(model.labels_, minlength=model.n_clusters)
    return RunRecord(
        command="sort",
        image_dir=os.path.abspath(image_dir),
        store=str(emb.store_path),
        store_root=str(Path(store).resolve()) if store is not None else None,
        mode=mode,
        embedder=params,
        feature_settings=emb.settings,
        clustering={**model.get_params(), "pca_components": model.n_components_},
        counts={
            "images": len(emb.paths),
            "embedded": emb.n_embedded,
            "reused": emb.n_reused,
            "bad_files": len(emb.bad_files),
            "cluster_sizes": [int(s) for s in sizes],
        },
        kscan=kscan_info(scan) if scan is not None else None,
        parent=parent,
        **judged.info(),
    )
