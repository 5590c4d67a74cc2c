"""Assigning new images to the clusters of a sorted output folder.

The model saved by ``sort`` (``model.npz``: reduction, centres, per-cluster
outlier thresholds) is used only with the feature settings it was built with;
the new images are embedded through the feature store, so they are cached
like any other.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_choice
from .embed import Embedder, weights_identity
from .errors import (
    FeatclustError,
    ModelMismatchError,
    NoImagesError,
    UnsafeOutputError,
    UsageError,
)
from .fileio import content_hash, inside
from .output import (
    LABELS_CSV,
    OutputFolder,
    SortedFolder,
    open_sorted,
    output_error,
    read_record,
)
from .pipeline import embed_inputs
from .sort import MODES, cluster_dir_name, place
from .store.folders import folder_settings
from .tables import labels_csv


@dataclass
class AssignResult:
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

    def csv(self) -> str:
        """The assignment as CSV: ``path,cluster,distance,outlier``."""
        return labels_csv(self.paths, self.labels, self.distances, self.outliers)


def embedder_for(sorted_folder: SortedFolder, **overrides: Any) -> Embedder:
    """An embedder with the settings a sorted folder was made with.

    Parameters
    ----------
    sorted_folder : featclust.output.SortedFolder
    **overrides
        Embedder parameters (``weights``, ``pooling``, ``precision``,
        ``batch_size`` ...); ``None`` or left out takes the value the model
        was built with.

    Raises
    ------
    UsageError
        If an override is not a valid value (``layer="block9"``).
    ModelMismatchError
        If the resulting feature settings differ from the model's (see
        :func:`check_settings`).
    """
    record = sorted_folder.record
    params = dict(record.embedder or {})
    settings = record.feature_settings or {}
    if "precision" in settings:
        params["precision"] = settings["precision"]  # as resolved then
    given = {k: v for k, v in overrides.items() if v is not None}
    if set(given) - {"weights"}:
        # A bad value given (layer="block9") is the caller's error, whatever the model.
        Embedder.from_params({"weights": "none", "layer": "block5"}, **{**given, "weights": None})
    try:
        embedder = Embedder.from_params(params, **overrides)
    except UsageError as e:
        if not _usable_weights({**params, **given}):
            if "weights" in given:
                raise
            raise ModelMismatchError(
                f"the model in {str(sorted_folder.path)!r} was built with "
                f"weights {params.get('weights')!r}, which cannot be used "
                f"now: {e}"
            ) from None
        # Values fine on their own that cannot go with the model's (pooling="flatten"
        # for a model of grid=2 features).
        raise ModelMismatchError(
            f"the model in {str(sorted_folder.path)!r} was built with "
            f"other feature settings ({e}); use the settings of that "
            f"sort or sort again"
        ) from None
    check_settings(record.feature_settings or {}, embedder, sorted_folder.path)
    return embedder


def _usable_weights(params):
    """Whether the weights a model was built with can be loaded now (as far as the name says)."""
    try:
        weights_identity(str(params.get("weights")), params.get("seed", 0))
    except UsageError:
        return False
    return True


def check_settings(expected: dict, embedder: Embedder, where: Any = "the model") -> None:
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
    diffs = [
        f"{key}: {expected.get(key)!r} (model) vs {found.get(key)!r} (now)"
        for key in sorted(set(expected) | set(found))
        if expected.get(key) != found.get(key)
    ]
    if diffs:
        raise ModelMismatchError(
            f"the model in {str(where)!r} was built with other feature settings ("
            + "; ".join(diffs)
            + "); use the settings of that sort or sort again"
        )


#: The :class:`~featclust.embed.Embedder` parameters that decide the features (the
#: others, ``batch_size`` and ``jit_compile``, decide only the speed).
FEATURE_PARAMS = ("weights", "seed", "layer", "pooling", "grid", "tta", "precision")


def recorded_params(
    image_dir: str | os.PathLike, store: str | os.PathLike | None = None
) -> list[dict[str, Any]]:
    """The feature parameters an image folder was embedded with before, most recent first.

    First those of the sort that wrote the folder, when it is a sorted folder or
    lies in one (a cluster folder), then those of every store of ``store`` that
    holds its features. Stored settings that no :class:`~featclust.embed.Embedder`
    parameters give (weights from a file, which the store knows only by hash) are
    left out.

    Parameters
    ----------
    image_dir : path-like
    store : path-like, optional
        Store root; default the user's.

    Returns
    -------
    list of dict
        Each with the keys of :data:`FEATURE_PARAMS`; no two alike.
    """
    found = []
    folder = os.path.realpath(image_dir)
    for where in (folder, *map(str, Path(folder).parents)):
        try:
            record = read_record(where)
        except FeatclustError:
            continue
        if record is not None and isinstance(record.embedder, dict):
            params = {k: v for k, v in record.embedder.items() if k in FEATURE_PARAMS}
            settings = record.feature_settings or {}
            if "precision" in settings:
                params["precision"] = settings["precision"]  # as resolved then
            found.append(params)
            break
    try:
        stored = folder_settings(folder, store)
    except FeatclustError:
        stored = []
    found += [p for p in map(_params_of_settings, stored) if p is not None]
    unique = []
    for params in found:
        if params not in unique:
            unique.append(params)
    return unique


def _params_of_settings(settings):
    """The Embedder parameters that make ``settings``, or ``None`` if none do."""
    weights = str(settings.get("weights", ""))
    seeded = re.fullmatch(r"random:he-uniform:seed=(\d+)", weights)
    if weights.startswith("imagenet:"):
        params: dict[str, Any] = {"weights": "imagenet", "seed": 0}
    elif seeded:
        params = {"weights": "none", "seed": int(seeded.group(1))}
    else:
        return None
    grid = str(settings.get("grid", "1x1"))
    params.update(
        layer="+".join(b.removesuffix("_pool") for b in str(settings.get("layer")).split("+")),
        pooling=str(settings.get("pooling")).split("(")[0],
        grid=int(grid.rsplit("+", 1)[-1].split("x")[0]),
        tta=settings.get("tta") != "none",
        precision=settings.get("precision"),
    )
    try:
        same = Embedder(**params).settings() == settings
    except (FeatclustError, ValueError, TypeError):
        return None
    return params if same else None


def assign_features(model: Any, features: np.ndarray) -> tuple:
    """Cluster, distance and outlier flag of each feature vector.

    Returns
    -------
    labels, distances, outliers : ndarray
    """
    labels, distances = model.predict_with_distance(features)
    return labels, distances, model.outliers(labels, distances)


def assign_images(
    sorted_folder: SortedFolder | str | os.PathLike,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    embedder: Embedder | None = None,
    store: str | os.PathLike | None = None,
    progress: Any = None,
) -> AssignResult:
    """Assign image files and folders to the clusters of a sorted output folder.

    Parameters
    ----------
    sorted_folder : featclust.output.SortedFolder or path-like
        The output folder (or what :func:`featclust.output.open_sorted` read).
    inputs : path-like or list of path-like
        Image files and folders.
    embedder : featclust.embed.Embedder, optional
        Default: the one the model was built with (see :func:`embedder_for`);
        a given one is checked against the model's settings.
    store : path-like, optional
        Store root; default the one the sort used.
    progress : bool, None or tqdm class
        As in :func:`featclust.embed_folder`.

    Returns
    -------
    AssignResult

    Raises
    ------
    ModelMismatchError
        If the embedder's feature settings differ from the model's.
    NoImagesError
        If no input is a usable image.
    """
    folder = (
        sorted_folder if isinstance(sorted_folder, SortedFolder) else open_sorted(sorted_folder)
    )
    record = folder.record
    if embedder is None:
        embedder = embedder_for(folder)
    else:
        check_settings(record.feature_settings or {}, embedder, folder.path)
    if store is None:
        store = record.store_root
    model = folder.model
    found = embed_inputs(
        inputs, embedder=embedder, store=store, image_dir=record.image_dir, progress=progress
    )
    bad = found.bad_files
    if not found.paths:
        raise NoImagesError(
            "none of the inputs is a usable image"
            + (f" ({bad[0].path}: {bad[0].reason})" if bad else "")
        )
    labels, distances, outliers = assign_features(model, found.features)
    return AssignResult(found.paths, labels, distances, outliers, bad)


@dataclass
class PlaceResult:
    """What :func:`place_images` did.

    Attributes
    ----------
    placed : list of (str, str)
        ``(image as given, destination relative to the sorted folder)``.
    skipped : list of (str, str)
        ``(image as given, why)``: images already in the folder.
    """

    placed: list = field(default_factory=list)
    skipped: list = field(default_factory=list)


def place_images(
    sorted_folder: SortedFolder | str | os.PathLike,
    assignment: AssignResult,
    *,
    mode: str | None = None,
) -> PlaceResult:
    """Put assigned images into their clusters' folders, as ``sort`` placed its images.

    Each image goes to ``cluster_XX/<file name>`` (a name already taken
    gets the start of the content hash appended), gets a row in
    ``labels.csv`` (with its distance and outlier flag) and is recorded in
    ``featclust.json`` as featclust's file, so a later ``sort`` into the
    folder replaces it like its own. An image already in the folder (the
    same content under the same name, or a file inside the folder) is not
    placed twice.

    Parameters
    ----------
    sorted_folder : featclust.output.SortedFolder or path-like
    assignment : AssignResult
        From :func:`assign_images` on that folder.
    mode : {"copy", "symlink", "hardlink"}, optional
        Default: the mode the folder was sorted with.

    Returns
    -------
    PlaceResult
    """
    folder = (
        sorted_folder if isinstance(sorted_folder, SortedFolder) else open_sorted(sorted_folder)
    )
    record = folder.record
    mode = check_choice("mode", mode or record.mode or "copy", MODES)
    model = folder.model
    k = folder.n_clusters
    paths, labels, distances, outliers = folder.labels(outliers=True)
    if outliers is None:  # a labels.csv written before it recorded the flag
        outliers = model.outliers(labels, distances)
    outliers = list(outliers)
    paths, labels, distances = list(paths), list(labels), list(distances)
    out = OutputFolder(folder.path)
    root = os.path.realpath(out.path)
    known = set(paths)
    result = PlaceResult()
    for src, label, dist, outlier in zip(
        assignment.paths, assignment.labels, assignment.distances, assignment.outliers
    ):
        if inside(os.path.realpath(src), root):
            result.skipped.append((src, "already in the sorted folder"))
            continue
        with open(src, "rb") as fh:
            digest = content_hash(fh.read())
        cluster_dir = cluster_dir_name(int(label), k)
        name = os.path.basename(src)
        stem, suffix = os.path.splitext(name)
        rel = _free_name(
            out.path, cluster_dir, (name, f"{stem}-{digest[:8]}{suffix}"), known, digest
        )
        if rel is None:
            result.skipped.append((src, "already in the folder"))
            continue
        out.claim([rel])
        try:
            place(src, out.path / rel, mode)
        except OSError as e:
            raise output_error(out.path / rel, e) from None
        out.stamp(rel)
        known.add(rel.split("/", 1)[1])
        paths.append(rel.split("/", 1)[1])
        labels.append(int(label))
        distances.append(float(dist))
        outliers.append(bool(outlier))
        result.placed.append((src, rel))
    if result.placed:
        out.write_text(LABELS_CSV, labels_csv(paths, labels, distances, outliers))
        counts = dict(record.counts or {})
        counts["placed"] = counts.get("placed", 0) + len(result.placed)
        counts["cluster_sizes"] = [int(x) for x in np.bincount(labels, minlength=k)]
        out.write_marker(
            dataclasses.replace(out.record or record, counts=counts), status="complete"
        )
    return result


def _free_name(out_path, folder, names, known, digest):
    """``folder/name`` for the first of ``names`` not taken; ``None`` if the image is there."""
    for name in names:
        target = out_path / folder / name
        if name not in known and not os.path.lexists(target):
            return f"{folder}/{name}"
        if os.path.isfile(target) and _same_content(target, digest):
            return None
    raise UnsafeOutputError(
        f"cannot place {names[0]!r} in {str(out_path / folder)!r}: other "
        f"files already have the names {', '.join(names)}"
    )


def _same_content(path, digest):
    try:
        with open(path, "rb") as fh:
            return content_hash(fh.read()) == digest
    except OSError:
        return False
