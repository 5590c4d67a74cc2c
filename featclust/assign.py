"""Assigning new images to the clusters of a sorted output folder.

The model saved by ``sort`` (``model.npz``: reduction, centres, per-cluster
outlier thresholds) is used only with the feature settings it was built with;
the new images are embedded through the feature store, so they are cached
like any other.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import images
from .cluster import FeatureKMeans
from .errors import ModelMismatchError, NoImagesError, UsageError
from .store import FeatureStore, default_root


@dataclass
class SavedModel:
    """A clustering model read back from an output folder.

    Attributes
    ----------
    model : featclust.cluster.FeatureKMeans
    info : dict
        The folder's ``featclust.json``.
    out_dir : pathlib.Path
    """

    model: FeatureKMeans
    info: dict
    out_dir: Path

    @property
    def image_dir(self):
        """The folder that was clustered."""
        return self.info.get("image_dir")

    @property
    def store_root(self):
        """The store root the sort used (``None``: the default one)."""
        return self.info.get("store_root")


@dataclass
class Assignment:
    """Clusters of a set of images.

    Attributes
    ----------
    paths : list of str
        The images, as given (files inside a given folder joined to it).
    labels : ndarray of shape (len(paths),)
    distances : ndarray of shape (len(paths),)
        Distance to the cluster centre, in the clustering space.
    outliers : ndarray of bool, shape (len(paths),)
        Farther from the centre than 95% of the cluster's own members.
    bad_files : list of featclust.images.BadFile
        Inputs that could not be used, with the reason.
    """

    paths: list
    labels: np.ndarray
    distances: np.ndarray
    outliers: np.ndarray
    bad_files: list = field(default_factory=list)

    def csv(self):
        """The assignment as CSV: ``path,cluster,distance,outlier``."""
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "cluster", "distance", "outlier"])
        for p, c, d, o in zip(self.paths, self.labels, self.distances, self.outliers):
            w.writerow([p, int(c), f"{float(d):.6g}", "true" if o else "false"])
        return buf.getvalue()


def load_output(out_dir):
    """Read the model and the settings of an output folder written by ``sort``.

    Raises
    ------
    UsageError
        If ``out_dir`` is not a complete featclust output.
    ModelMismatchError
        If ``model.npz`` cannot be read or lacks what assigning needs.
    """
    out_dir = Path(out_dir)
    marker = out_dir / images.OUTPUT_MARKER
    try:
        info = json.loads(marker.read_text(encoding="ascii"))
    except (OSError, ValueError):
        raise UsageError(f"{str(out_dir)!r} is not a featclust output folder (no readable "
                         f"{images.OUTPUT_MARKER}); run featclust sort first") from None
    if info.get("status") != "complete" or not (out_dir / "model.npz").is_file():
        raise UsageError(f"{str(out_dir)!r} holds no complete clustering (was the sort "
                         "interrupted?); run featclust sort again")
    if "feature_settings" not in info or "embedder" not in info:
        raise ModelMismatchError(f"{str(marker)!r} does not record the feature settings")
    model, _ = FeatureKMeans.load(out_dir / "model.npz")
    return SavedModel(model, info, out_dir)


def embedder_for(saved, **overrides):
    """An embedder with the saved settings, or the given ones if they match.

    Parameters
    ----------
    saved : SavedModel
    **overrides
        Embedder parameters (``weights``, ``pooling``, ``precision``,
        ``batch_size`` ...); ``None`` or left out takes the value the model
        was built with.

    Raises
    ------
    ModelMismatchError
        If the settings differ from the model's (see :func:`check_settings`).
    """
    import inspect

    from .pipeline import make_embedder

    known = inspect.signature(make_embedder).parameters
    fs = saved.info["feature_settings"]
    params = {k: v for k, v in saved.info["embedder"].items() if k in known}
    if "precision" in fs:
        params["precision"] = fs["precision"]  # as resolved then ("auto" may differ here)
    given = {k: v for k, v in overrides.items() if v is not None}
    params.update(given)
    try:
        embedder = make_embedder(**params)
    except UsageError as err:
        if "weights" in given:
            raise
        raise ModelMismatchError(f"the model in {str(saved.out_dir)!r} was built with weights "
                                 f"{params.get('weights')!r}, which cannot be used now: "
                                 f"{err}") from None
    check_settings(fs, embedder, saved.out_dir)
    return embedder


def check_settings(expected, embedder, where="the model"):
    """Refuse an embedder whose features would differ from the model's.

    Parameters
    ----------
    expected : dict
        The feature settings the model was built with.
    embedder : featclust.embed.Embedder
    where : str
        How to name the model in the message.

    Raises
    ------
    ModelMismatchError
        Naming every setting that differs, with both values.
    """
    found = embedder.settings()
    diffs = [f"{key}: {expected.get(key)!r} (model) vs {found.get(key)!r} (now)"
             for key in sorted(set(expected) | set(found)) if expected.get(key) != found.get(key)]
    if diffs:
        raise ModelMismatchError(
            f"the model in {str(where)!r} was built with other feature settings ("
            + "; ".join(diffs) + "); use the settings of that sort (leave out --weights, "
            "--pooling and --precision) or sort again")


def _inside(path, folder):
    return os.path.commonpath([path, folder]) == folder


def embed_paths(inputs, embedder, store=None, image_dir=None, progress=None):
    """Features of image files and of the images in folders, through the store.

    Each file is looked up in (and added to) the store of the folder it was
    sorted from when it lies inside ``image_dir``, else the store of the
    folder given (or the file's own folder), so an image that was part of a
    clustering is never embedded again. Nothing is removed from any store.

    Parameters
    ----------
    inputs : list of path-like
        Image files and folders (scanned as ``sort`` does).
    embedder : featclust.embed.Embedder
    store : path-like, optional
        Store root; default under the user's cache folder.
    image_dir : path-like, optional
        The folder the model was made from.
    progress : callable, optional
        As in :func:`featclust.pipeline.embed_folder`.

    Returns
    -------
    paths : list of str
        The usable images, in input order.
    features : ndarray of shape (len(paths), dim)
    bad : list of featclust.images.BadFile
        Files that could not be used (path as given).

    Raises
    ------
    UsageError
        If an input does not exist.
    """
    root_dir = Path(store) if store is not None else default_root()
    sorted_dir = os.path.realpath(image_dir) if image_dir else None
    entries, bad, seen = [], [], set()

    def add(shown, path, base):
        real = os.path.realpath(path)
        folder = sorted_dir if sorted_dir and _inside(real, sorted_dir) else base
        rel = Path(os.path.relpath(real, folder)).as_posix()
        if (folder, rel) in seen:
            return
        seen.add((folder, rel))
        try:
            st = os.stat(path)
        except OSError as e:
            bad.append(images.BadFile(shown, f"cannot stat: {e.strerror}"))
            return
        entries.append((shown, folder, images.ImageFile(rel, os.path.abspath(path),
                                                        st.st_size, st.st_mtime_ns)))

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
    features = {}
    by_folder = {}
    for shown, folder, f in entries:
        by_folder.setdefault(folder, []).append((shown, f))
    for folder, group in by_folder.items():
        files = [f for _, f in group]
        shown_of = {f.path: shown for shown, f in group}
        with FeatureStore(folder, settings, root_dir) as st:
            cached, known_bad, missing = st.split(files)
            failed = list(known_bad)
            if missing:
                failed += _embed_into(st, missing, embedder, progress)
            st.flush()
            failed_paths = {b.path for b in failed}
            good = [f for f in files if f.path not in failed_paths]
            for f, vec in zip(good, st.load([f.path for f in good])):
                features[(folder, f.path)] = vec
        bad.extend(images.BadFile(shown_of[b.path], b.reason) for b in failed)
    order = [(shown, (folder, f.path)) for shown, folder, f in entries
             if (folder, f.path) in features]
    paths = [shown for shown, _ in order]
    dim = int(settings["dim"])
    feats = (np.stack([features[key] for _, key in order]) if order
             else np.zeros((0, dim), np.float32))
    return paths, feats, bad


def _embed_into(st, missing, embedder, progress):
    from .embed import iter_features

    failed = []
    by_path = {f.path: f for f in missing}
    bar = progress("embedding", len(missing)) if progress else None
    try:
        for good, feats, bad in iter_features(missing, embedder):
            st.add(good, feats)
            st.add_bad(by_path, bad)
            failed.extend(bad)
            if bar:
                bar.update(len(good) + len(bad))
    finally:
        if bar:
            bar.close()
    return failed


def assign_features(model, features):
    """Cluster, distance and outlier flag of each feature vector.

    Returns
    -------
    labels, distances, outliers : ndarray
    """
    labels, distances = model.predict_with_distance(features)
    return labels, distances, distances > model.thresholds_[labels]


def assign_images(saved, inputs, embedder=None, store=None, progress=None):
    """Assign image files and folders to the clusters of a sorted output folder.

    Parameters
    ----------
    saved : SavedModel or path-like
        The output folder (or what :func:`load_output` read from it).
    inputs : list of path-like
        Image files and folders.
    embedder : featclust.embed.Embedder, optional
        Default: the one the model was built with (see :func:`embedder_for`);
        a given one is checked against the model's settings.
    store : path-like, optional
        Store root; default the one the sort used.
    progress : callable, optional

    Returns
    -------
    Assignment

    Raises
    ------
    ModelMismatchError
        If the embedder's feature settings differ from the model's.
    NoImagesError
        If no input is a usable image.
    """
    if not isinstance(saved, SavedModel):
        saved = load_output(saved)
    if embedder is None:
        embedder = embedder_for(saved)
    else:
        check_settings(saved.info["feature_settings"], embedder, saved.out_dir)
    if store is None:
        store = saved.store_root
    paths, feats, bad = embed_paths(inputs, embedder, store, saved.image_dir, progress)
    if not paths:
        raise NoImagesError("none of the inputs is a usable image"
                            + (f" ({bad[0].path}: {bad[0].reason})" if bad else ""))
    labels, distances, outliers = assign_features(saved.model, feats)
    return Assignment(paths, labels, distances, outliers, bad)
