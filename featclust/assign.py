"""Assigning new images to the clusters of a sorted output folder.

The model saved by ``sort`` (``model.npz``: reduction, centres, per-cluster
outlier thresholds) is used only with the feature settings it was built with;
the new images are embedded through the feature store, so they are cached
like any other.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_choice
from .embed import DEFAULTS as EMBED_DEFAULTS
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
    Journal,
    SortedFolder,
    open_sorted,
    output_error,
    read_record,
)
from .output.placement import begin as begin_placement
from .output.placement import done as placement_done
from .output.placement import recover as recover_placement
from .pipeline import embed_inputs
from .sort import MODES, place
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
FEATURE_PARAMS = ("weights", "seed", "layer", "pooling", "grid", "grid_weight", "tta", "precision")


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
        # Without a grid the weight changes nothing: the default, so no hint names it.
        grid_weight=settings.get("grid_weight", EMBED_DEFAULTS["grid_weight"]),
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
    for i, label in enumerate(folder.decided(found.paths)):
        if label is not None:  # a person moved it there: the folder's answer
            labels[i] = label
            distances[i] = model.transform(found.features[i : i + 1])[0, label]
            outliers[i] = model.outliers(labels[i : i + 1], distances[i : i + 1])[0]
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

    Each image goes to its cluster's folder under its file name (a name
    already taken gets the start of the content hash appended), gets a row
    in ``labels.csv`` (with its distance and outlier flag) and is recorded
    in ``featclust.json`` as featclust's file, so a later ``sort`` into the
    folder replaces it like its own. An image already in the folder (the
    same content under the same name, or a file inside the folder) is not
    placed twice, nor one whose name is too long for the file system.

    The placement is one edit of the folder (see
    :mod:`featclust.output.placement`): the tables and the record are
    written once for all the images, and a placement interrupted or failed
    at any point (Ctrl-C, a read-only cluster folder, a full disk) leaves the
    folder as it was before, open to every command. It can be undone like
    any edit.

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

    Raises
    ------
    OutputError
        If a file cannot be made (nothing is placed then).
    """
    folder = (
        sorted_folder if isinstance(sorted_folder, SortedFolder) else open_sorted(sorted_folder)
    )
    record = folder.record
    mode = check_choice("mode", mode or record.mode or "copy", MODES)
    state = folder.state
    root = os.path.realpath(folder.path)
    known = set(state.paths) | set(state.set_aside)
    listings: dict[str, set] = {}
    planned = []
    result = PlaceResult()
    for src, label, dist, outlier in zip(
        assignment.paths, assignment.labels, assignment.distances, assignment.outliers
    ):
        if inside(os.path.realpath(src), root):
            result.skipped.append((src, "already in the sorted folder"))
            continue
        with open(src, "rb") as fh:
            digest = content_hash(fh.read())
        cluster_dir = folder.folder_name(int(label))
        names = listings.get(cluster_dir)
        if names is None:
            names = listings[cluster_dir] = _listing(folder.path / cluster_dir)
        name = os.path.basename(src)
        stem, suffix = os.path.splitext(name)
        try:
            chosen = _free_name(
                folder.path / cluster_dir,
                (name, f"{stem}-{digest[:8]}{suffix}"),
                (names, known),
                digest,
            )
        except UnsafeOutputError as e:
            result.skipped.append((src, str(e)))
            continue
        if chosen is None:
            result.skipped.append((src, "already in the folder"))
            continue
        names.add(chosen)
        known.add(chosen)
        planned.append((src, f"{cluster_dir}/{chosen}", chosen, int(label), dist, outlier, digest))
    if not planned:
        return result
    begin_placement(
        folder.path, [[rel, os.path.abspath(src), digest, mode] for src, rel, *_, digest in planned]
    )
    rows = []
    try:
        for src, rel, path, label, dist, outlier, digest in planned:
            try:
                st, source = place(src, folder.path / rel, mode)
            except FileExistsError:
                raise UnsafeOutputError(
                    f"{str(folder.path / rel)!r} appeared while featclust was placing images "
                    "and was not written by featclust; nothing was placed"
                ) from None
            except OSError as e:
                if e.errno == errno.ENAMETOOLONG:
                    result.skipped.append((src, f"its name is too long here ({rel!r})"))
                    continue
                raise output_error(folder.path / rel, e) from None
            stamp = [st.st_size, st.st_mtime_ns]
            rows.append((path, rel, label, float(dist), bool(outlier), stamp, source, digest))
            result.placed.append((src, rel))
        if rows:
            folder.editor.place(rows)
    except BaseException:
        if not Journal(folder.path).pending:  # else the next open finishes the edit
            recover_placement(folder.path)
        raise
    placement_done(folder.path)
    return result


def _listing(path):
    try:
        return set(os.listdir(path))
    except OSError:
        return set()


def _free_name(folder, names, taken, digest):
    """The first of ``names`` in none of the sets ``taken`` (the folder's listing, the
    names in labels.csv); ``None`` if the image is there already."""
    for name in names:
        if all(name not in t for t in taken):
            return name
        if os.path.isfile(folder / name) and _same_content(folder / name, digest):
            return None
    raise UnsafeOutputError(
        f"other files already have the names {', '.join(map(repr, names))} in {str(folder)!r}"
    )


def _same_content(path, digest):
    try:
        with open(path, "rb") as fh:
            return content_hash(fh.read()) == digest
    except OSError:
        return False
