"""Over 500 lines: four jobs, each short, with their result types and numpy-style docstrings.

The main jobs, composed from the modules: embed a folder or a list of files, scan k for a
folder, sort a folder.
"""

from __future__ import annotations

import collections
import functools
import inspect
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import images, scores
from .checks import check_choice
from .cluster import FeatureKMeans
from .decoding import iter_features
from .distributed import check_dask, connect, labeller, update_store
from .embed import Embedder
from .errors import FeatclustError, NoImagesError, UsageError
from .fileio import inside
from .kscan import KScan, choose_k
from .output import (
    BAD_FILES_CSV,
    CLUSTERS_CSV,
    KSCAN_CSV,
    KSCAN_PNG,
    LABELS_CSV,
    MODEL_NPZ,
    TRUTH_CSV,
    OutputFolder,
    RunRecord,
    kscan_info,
    read_record,
    save_kscan,
    write_kscan,
)
from .progress import bar_factory
from .report import Clustering, check_map_method, write_report
from .report.render import kscan_png
from .sort import MODES, destinations, in_place, sort_into_folders
from .store import FeatureStore, check_root
from .tables import bad_files_csv, clusters_csv, labels_csv, truth_csv

#: The parameters of :class:`~featclust.cluster.FeatureKMeans` and their defaults, read from its
#: signature (the one place they are declared).
CLUSTER_DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(FeatureKMeans).parameters.items()
}
#: The same for :class:`~featclust.kscan.KScan`.
KSCAN_DEFAULTS: dict[str, Any] = {
    name: p.default for name, p in inspect.signature(KScan).parameters.items()
}


@dataclass
class EmbedResult:
    """What :func:`embed_folder` found and computed.

    Attributes
    ----------
    paths : list of str
        Relative paths of the usable images, sorted.
    features : numpy.ndarray
        ``(len(paths), dim)`` float32, row ``i`` belongs to ``paths[i]``.
    n_embedded, n_reused : int
        Images embedded in this run, and served from the store.
    bad_files : list of featclust.images.BadFile
        Files skipped, with the reason.
    store_path : pathlib.Path
    settings : dict
        The feature settings (the store's key).
    problems : list of str
        Store problems that were repaired (corrupted chunks and the like).
    hashes : list of str
        Content hash of each image of ``paths``.
    """

    paths: list
    features: np.ndarray
    n_embedded: int
    n_reused: int
    bad_files: list
    store_path: Path
    settings: dict
    problems: list = field(default_factory=list)
    hashes: list = field(default_factory=list)


def make_embedder(embedder: Embedder | None, params: dict[str, Any]) -> Embedder:
    """``embedder``, or an :class:`~featclust.embed.Embedder` built from ``params``.

    Raises
    ------
    UsageError
        If both are given, or a parameter is invalid.
    """
    if embedder is not None:
        if params:
            raise UsageError(
                f"give either embedder or embedder parameters "
                f"({', '.join(sorted(params))}), not both"
            )
        return embedder
    return Embedder(**params)


def embed_folder(
    image_dir: str | os.PathLike,
    *,
    embedder: Embedder | None = None,
    store: str | os.PathLike | None = None,
    exclude: Iterable = (),
    progress: Any = None,
    dask: Any = None,
    **embedder_params: Any,
) -> EmbedResult:
    """Fill the feature store for ``image_dir`` and return the features.

    Only images that are new or changed since the last run are embedded;
    rows of deleted images are dropped.

    Parameters
    ----------
    image_dir : path-like
    embedder : featclust.embed.Embedder, optional
        Built from ``embedder_params`` (the parameters of
        :class:`~featclust.embed.Embedder`: ``weights``, ``pooling`` ...)
        when not given.
    store : path-like, optional
        Store root; default under the user's cache folder.
    exclude : iterable of path-like
        Folders to leave out of the scan.
    progress : bool, None or tqdm class
        Progress bars: ``None`` (default) shows them where a person is
        watching (a terminal or a notebook); see :mod:`featclust.progress`.
    dask : distributed.Client, str or None
        Embed on a Dask cluster (see :mod:`featclust.distributed`): a client,
        a scheduler address (``"tcp://host:8786"``) or ``"local:N"`` (N
        local worker processes). ``None`` (default): in this process, and
        Dask is not imported. The images and the store must lie on a
        filesystem every worker sees.

    Returns
    -------
    EmbedResult

    Raises
    ------
    NoImagesError
        If the folder holds no usable image.
    """
    embedder = make_embedder(embedder, embedder_params)
    dask = check_dask(dask)
    progress = bar_factory(progress)
    root = check_root(store, [image_dir])
    files, problems = images.scan(image_dir, exclude=[*exclude, root])
    if not files:
        unreadable = (
            f" ({len(problems)} entries could not be read, first {problems[0].path!r}: "
            f"{problems[0].reason})"
            if problems
            else ""
        )
        raise NoImagesError(f"no files found in {str(image_dir)!r}{unreadable}")
    settings = embedder.settings()
    with connect(dask) as client, FeatureStore(image_dir, settings, root) as st:
        if client is None:
            cached, bad, n_embedded = st.update(
                files, functools.partial(iter_features, embedder=embedder), progress
            )
        else:
            cached, bad, n_embedded = update_store(client, st, files, embedder, progress)
        bad = list(problems) + bad
        st.finish(files, bad)
        bad_paths = {b.path for b in bad}
        paths = [f.path for f in files if f.path not in bad_paths]
        features = st.load(paths)
        hashes = st.hashes(paths)
        repaired = list(st.problems)
    bad.sort(key=lambda b: b.path)
    if not paths:
        raise NoImagesError(
            f"none of the {len(files)} files in {str(image_dir)!r} is a readable "
            f"image (see {st.path / BAD_FILES_CSV})"
        )
    return EmbedResult(
        paths, features, n_embedded, len(cached), bad, st.path, settings, repaired, hashes
    )


@dataclass
class EmbedInputsResult:
    """What :func:`embed_inputs` found and computed.

    Attributes
    ----------
    paths : list of str
        The usable images, in input order (files inside a given folder joined to it).
    features : numpy.ndarray
        ``(len(paths), dim)`` float32, row ``i`` belongs to ``paths[i]``.
    bad_files : list of featclust.images.BadFile
        Files that could not be used (path as given).
    """

    paths: list
    features: np.ndarray
    bad_files: list = field(default_factory=list)


def embed_inputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    embedder: Embedder | None = None,
    store: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    progress: Any = None,
    **embedder_params: Any,
) -> EmbedInputsResult:
    """Features of image files and of the images in folders, through the store.

    Each file is looked up in (and added to) the store of ``image_dir`` when
    it lies inside it, else the store of the folder given (or of the file's
    own folder), so an image that was part of a clustering is never embedded
    again. Nothing is removed from any store.

    Parameters
    ----------
    inputs : path-like or list of path-like
        Image files and folders (folders are scanned as ``sort`` does).
    embedder : featclust.embed.Embedder, optional
        Built from ``embedder_params`` when not given.
    store : path-like, optional
        Store root; default under the user's cache folder.
    image_dir : path-like, optional
        The folder a model was made from.
    progress : bool, None or tqdm class
        As in :func:`embed_folder`.

    Returns
    -------
    EmbedInputsResult

    Raises
    ------
    UsageError
        If an input does not exist.
    """
    embedder = make_embedder(embedder, embedder_params)
    progress = bar_factory(progress)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    root_dir = check_root(store, [image_dir] if image_dir else [])
    sorted_dir = os.path.realpath(image_dir) if image_dir else None
    entries, bad, seen = [], [], set()

    def add(shown, path, base):
        real = os.path.realpath(path)
        folder = sorted_dir if sorted_dir and inside(real, sorted_dir) else base
        rel = Path(os.path.relpath(real, folder)).as_posix()
        if (folder, rel) in seen:
            return
        seen.add((folder, rel))
        try:
            st = os.stat(path)
        except OSError as e:
            bad.append(images.BadFile(shown, f"cannot stat: {e.strerror}"))
            return
        entries.append((shown, folder, images.ImageFile.from_stat(rel, os.path.abspath(path), st)))

    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            found, problems = images.scan(item, exclude=[root_dir])
            bad.extend(images.BadFile(os.path.join(item, b.path), b.reason) for b in problems)
            base = os.path.realpath(item)
            for f in found:
                add(os.path.join(item, f.path), f.abspath, base)
        elif os.path.isfile(item):
            add(item, item, os.path.dirname(os.path.realpath(item)))
        else:
            raise UsageError(f"{item!r} is neither an image file nor a folder")

    settings = embedder.settings()
    embed_files = functools.partial(iter_features, embedder=embedder)
    features: dict = {}
    by_folder: dict = {}
    for shown, folder, f in entries:
        by_folder.setdefault(folder, []).append((shown, f))
    for folder, group in by_folder.items():
        files = [f for _, f in group]
        shown_of = {f.path: shown for shown, f in group}
        with FeatureStore(folder, settings, root_dir) as st:
            _, failed, _ = st.update(files, embed_files, progress)
            st.flush()
            failed_paths = {b.path for b in failed}
            good = [f for f in files if f.path not in failed_paths]
            for f, vec in zip(good, st.load([f.path for f in good])):
                features[(folder, f.path)] = vec
        bad.extend(images.BadFile(shown_of[b.path], b.reason) for b in failed)
    order = [
        (shown, (folder, f.path)) for shown, folder, f in entries if (folder, f.path) in features
    ]
    paths = [shown for shown, _ in order]
    feats = (
        np.stack([features[key] for _, key in order])
        if order
        else np.zeros((0, int(settings["dim"])), np.float32)
    )
    return EmbedInputsResult(paths, feats, bad)


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
    **embedder_params
        The embedder's parameters when ``embedder`` is not given (see
        :func:`embed_folder`).

    Returns
    -------
    SortResult
    """
    out = OutputFolder(out_dir, image_dir)
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
    judged = scores.judge(model, emb.features, emb.paths, truth, random_state)
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
    record.counts["identical_groups"] = sum(
        1 for n in collections.Counter(emb.hashes).values() if n > 1
    )
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
    written_report = None
    if report:
        clustering = Clustering(emb.paths, model.labels_, model.distances_, outliers, model)
        written_report = write_report(
            out.path,
            emb.features,
            map_method=map_method,
            random_state=random_state,
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
