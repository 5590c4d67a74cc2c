"""The embedding jobs: the features of a folder, or of files and folders, through the store.

The jobs that cluster them (``scan_folder``, ``sort_folder``) are
:mod:`featclust.clusterjobs`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import images
from .decoding import iter_features
from .distributed import check_dask, connect, update_store
from .embed import Embedder
from .errors import NoImagesError, UsageError
from .fileio import inside
from .output import (
    BAD_FILES_CSV,
)
from .progress import bar_factory
from .store import FeatureStore, check_root


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
    entries, bad, seen, scanned = [], [], set(), set()

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
            scanned.add(base)
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
        # The folder of loose files is not scanned: the store may lie in it (~/q.png).
        loose = folder not in scanned and folder != sorted_dir
        with FeatureStore(folder, settings, root_dir, loose=loose) as st:
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
