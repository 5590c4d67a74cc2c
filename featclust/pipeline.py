"""The main jobs, composed from the modules: embed a folder, sort it, run the demo."""

from __future__ import annotations

import datetime
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, images
from .cluster import FeatureKMeans
from .errors import NoImagesError, UnsafeOutputError
from .sort import OutputFolder, destinations, sort_into_folders, write_labels_csv
from .store import FeatureStore, default_root


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
    """

    paths: list
    features: np.ndarray
    n_embedded: int
    n_reused: int
    bad_files: list
    store_path: Path
    settings: dict
    problems: list = field(default_factory=list)


def make_embedder(weights="imagenet", pooling="max", precision="auto", batch_size=None, seed=0,
                  layer="block4", tta=False):
    """Build an :class:`~featclust.embed.Embedder` (Keras is loaded on first use)."""
    from .embed import Embedder

    return Embedder(weights=weights, pooling=pooling, precision=precision,
                    batch_size=batch_size, seed=seed, layer=layer, tta=tta)


def embed_folder(image_dir, embedder=None, store=None, exclude=(), progress=None, **kwargs):
    """Fill the feature store for ``image_dir`` and return the features.

    Only images that are new or changed since the last run are embedded;
    rows of deleted images are dropped.

    Parameters
    ----------
    image_dir : path-like
    embedder : featclust.embed.Embedder, optional
        Built from ``kwargs`` (``weights``, ``pooling``, ``precision``,
        ``batch_size``, ``seed``) when not given.
    store : path-like, optional
        Store root; default under the user's cache folder.
    exclude : iterable of path-like
        Folders to leave out of the scan.
    progress : callable, optional
        ``progress(description, total)`` returning an object with
        ``update(n)`` and ``close()`` (a ``tqdm`` does).

    Returns
    -------
    EmbedResult

    Raises
    ------
    NoImagesError
        If the folder holds no usable image.
    """
    embedder = embedder or make_embedder(**kwargs)
    root = Path(store) if store is not None else default_root()
    files, problems = images.scan(image_dir, exclude=[*exclude, root])
    if not files:
        unreadable = (f" ({len(problems)} entries could not be read, first {problems[0].path!r}: "
                      f"{problems[0].reason})" if problems else "")
        raise NoImagesError(f"no files found in {str(image_dir)!r}{unreadable}")
    settings = embedder.settings()
    n_embedded = 0
    with FeatureStore(image_dir, settings, root) as st:
        cached, bad, missing = st.split(files)
        bad = list(problems) + bad
        if missing:
            bar = progress("embedding", len(missing)) if progress else None
            by_path = {f.path: f for f in missing}
            try:
                for good, feats, failed in _features(missing, embedder):
                    st.add(good, feats)
                    st.add_bad(by_path, failed)
                    bad.extend(failed)
                    n_embedded += len(good)
                    if bar:
                        bar.update(len(good) + len(failed))
            finally:
                if bar:
                    bar.close()
        st.finish(files, bad)
        bad_paths = {b.path for b in bad}
        paths = [f.path for f in files if f.path not in bad_paths]
        features = st.load(paths)
        problems = list(st.problems)
    bad.sort(key=lambda b: b.path)
    if not paths:
        raise NoImagesError(f"none of the {len(files)} files in {str(image_dir)!r} is a readable "
                            f"image (see {st.path / 'bad_files.csv'})")
    return EmbedResult(paths, features, n_embedded, len(cached), bad, st.path, settings, problems)


def _features(files, embedder):
    from .embed import iter_features

    return iter_features(files, embedder)


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
    judgement : featclust.kscan.Judgement or None
        Scores, cluster sizes and flags, agreement with known classes.
    kscan : featclust.kscan.KScan or None
        The scan that chose k (with ``n_clusters="auto"``).
    """

    embed: EmbedResult
    model: FeatureKMeans
    out_dir: Path
    destinations: list
    report: object = None
    judgement: object = None
    kscan: object = None


def sort_folder(image_dir, out_dir, n_clusters, embedder=None, store=None, pca=None,
                normalize=False, seed=0, mode="copy", progress=None, report=True,
                map_method="auto", truth=None, method="kmeans", **kwargs):
    """Embed what is missing, cluster with k-means, and copy images into cluster folders.

    Parameters
    ----------
    image_dir, out_dir : path-like
        The two folders must not contain one another; ``out_dir`` must be new,
        empty or an earlier featclust output.
    n_clusters : int or "auto"
        ``"auto"``: the k suggested by a scan of k = 2..30 (see
        :class:`featclust.kscan.KScan`); its table goes to ``kscan.csv``.
    embedder, store, progress, kwargs
        As in :func:`embed_folder`.
    pca : int, optional
        PCA components before k-means.
    normalize : bool
        L2-normalise the features (cosine k-means).
    seed : int
        Random state of the clustering.
    method : {"kmeans", "ward"}
        Clustering method (see :class:`featclust.cluster.FeatureKMeans`).
    mode : {"copy", "symlink", "hardlink"}
    report : bool
        Write montages, a 2-D map and ``index.html`` into ``out_dir/report/``
        (see :func:`featclust.report.write_report`).
    map_method : {"auto", "tsne", "pca"}
        How the report's map is made.
    truth : dict, optional
        Known classes of some images (relative path to label): adjusted
        Rand index, NMI and a contingency table (``truth.csv``) are reported.

    Returns
    -------
    SortResult
    """
    from .kscan import KSCAN_CSV, KSCAN_PNG, choose_k, judge, kscan_info, write_kscan_files

    out = OutputFolder(out_dir, image_dir)
    auto = isinstance(n_clusters, str) and n_clusters == "auto"
    model = FeatureKMeans(n_clusters=2 if auto else n_clusters, pca=pca, normalize=normalize,
                          seed=seed, method=method)
    model.check_params()
    if report:
        from .report import check_map_method

        check_map_method(map_method)
    embedder = embedder or make_embedder(**kwargs)
    emb = embed_folder(image_dir, embedder, store, exclude=[out_dir], progress=progress)
    scan = None
    if auto:
        scan = choose_k(emb.features, pca=pca, normalize=normalize, seed=seed)
        n_clusters = model.n_clusters = scan.suggested_k_
    model.fit(emb.features)
    judged = judge(model, emb.features, emb.paths, truth, seed)
    dests = destinations(emb.paths, model.labels_, n_clusters)
    own = ["labels.csv", "model.npz", "bad_files.csv"] + judged.files()
    if scan is not None:
        own += [KSCAN_CSV, KSCAN_PNG]
    out.check_free(dests + own)
    out.clear()
    info = _run_info(image_dir, emb, model, embedder, mode, store)
    info.update(judged.info())
    if scan is not None:
        info["kscan"] = kscan_info(scan)
    out.claim(dests + own, info, status="writing")
    bar = progress("copying", len(dests)) if progress else None
    try:
        sort_into_folders(image_dir, out, emb.paths, model.labels_, n_clusters, mode,
                          bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    out.write_text("labels.csv", write_labels_csv(emb.paths, model.labels_, model.distances_))
    out.write_text("bad_files.csv", _bad_csv(emb.bad_files))
    judged.write(out)
    if scan is not None:
        write_kscan_files(out, scan)
    buf = io.BytesIO()
    model.save(buf, extra={"feature_settings": emb.settings, "embedder": info["embedder"]})
    out.write_bytes("model.npz", buf.getvalue())
    out.write_marker(info, status="complete")
    written = None
    if report:
        from .report import write_report

        written = write_report(out.path, emb.features, model, map_method, seed, progress)
    return SortResult(emb, model, out.path, dests, written, judged, scan)


def _run_info(image_dir, emb, model, embedder, mode, store):
    weights = embedder.weights
    if weights not in ("imagenet", "none"):
        weights = os.path.abspath(weights)
    sizes = np.bincount(model.labels_, minlength=model.n_clusters)
    return {
        "featclust_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "image_dir": os.path.abspath(image_dir),
        "store": str(emb.store_path),
        "store_root": str(Path(store).resolve()) if store is not None else None,
        "mode": mode,
        "embedder": {"weights": weights, "pooling": embedder.pooling,
                     "precision": embedder.precision, "batch_size": embedder.batch_size,
                     "seed": embedder.seed, "layer": embedder.layer, "tta": embedder.tta},
        "feature_settings": emb.settings,
        "clustering": {**model.get_params(), "pca_components": model.n_components_},
        "counts": {"images": len(emb.paths), "embedded": emb.n_embedded,
                   "reused": emb.n_reused, "bad_files": len(emb.bad_files),
                   "cluster_sizes": [int(s) for s in sizes]},
    }


def _bad_csv(bad):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    for b in bad:
        w.writerow([b.path, b.reason])
    return buf.getvalue()


DEMO_FAMILIES = ("ring", "line", "grid", "clusters")


def demo_images(images_dir=None, n_per_family=12, seed=0):
    """Write (once) the built-in sample set of dot-pattern images.

    Parameters
    ----------
    images_dir : path-like, optional
        Default: ``demo-images`` under featclust's cache folder.
    n_per_family : int
    seed : int

    Returns
    -------
    images_dir : pathlib.Path
    truth : dict
        Relative path to shape family.
    """
    import csv
    import shutil
    import tempfile

    from . import samples

    if images_dir is None:
        images_dir = default_root().parent / f"demo-images-{n_per_family}-{seed}"
    images_dir = Path(images_dir)
    truth_csv = images_dir.parent / f"{images_dir.name}-truth.csv"
    if images_dir.is_dir() and truth_csv.is_file():
        with open(truth_csv, newline="") as fh:
            return images_dir, {r["path"]: r["label"] for r in csv.DictReader(fh)}
    if images_dir.exists() and (not images_dir.is_dir() or any(images_dir.iterdir())):
        raise UnsafeOutputError(f"sample folder {str(images_dir)!r} exists and is not a featclust "
                                "sample set; choose a new folder")
    images_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=images_dir.parent, prefix=".demo-"))
    try:
        truth = samples.make_image_set(tmp, n_per_family=n_per_family, families=DEMO_FAMILIES,
                                       seed=seed)
        os.replace(tmp, images_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    samples.write_truth_csv(truth, truth_csv)
    return images_dir, truth


def demo(out_dir, images_dir=None, n_per_family=12, **kwargs):
    """Sort the built-in sample set into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
    images_dir : path-like, optional
        Where the sample images are written (see :func:`demo_images`).
    n_per_family : int
    kwargs
        Passed to :func:`sort_folder` (``weights``, ``store``, ``progress`` ...).

    Returns
    -------
    SortResult
        With ``truth`` (relative path to family) set as an extra attribute.
    """
    OutputFolder(out_dir)  # refuse an unsafe folder before writing samples
    images_dir, truth = demo_images(images_dir, n_per_family)
    result = sort_folder(images_dir, out_dir, len(DEMO_FAMILIES), truth=truth, **kwargs)
    result.truth = truth
    return result
