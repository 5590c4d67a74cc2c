"""Similar images and near-duplicates of a folder, from the feature store.

Both jobs embed only what the store lacks (nothing, for a folder that was
sorted before) and search the stored features block by block
(:mod:`featclust.search`), so memory stays flat in the number of images and
TensorFlow is not imported when every image is already stored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_float, check_int
from .embed import Embedder
from .output import OutputFolder, RunRecord
from .pipeline import EmbedResult, embed_folder, embed_inputs, make_embedder
from .progress import bar_factory
from .report import duplicates_html
from .search import (
    NEAR_DUPLICATE,
    exact_duplicate_groups,
    near_duplicate_groups,
    top_similar,
)
from .tables import duplicates_csv, identical_csv, similar_csv

DUPLICATES_CSV = "duplicates.csv"
IDENTICAL_CSV = "identical.csv"
DUPLICATES_HTML = "duplicates.html"


@dataclass
class SimilarResult:
    """The images most similar to each query.

    Attributes
    ----------
    queries : list of str
        The query images, as given (files inside a given folder joined to it).
    paths : list of list of str
        For each query, the most similar images (relative paths), most similar first.
    indices : ndarray of shape (n_queries, top), int64
        Their rows in the searched feature matrix.
    similarities : ndarray of shape (n_queries, top), float32
        Cosine similarities, decreasing along each row.
    bad_files : list of featclust.images.BadFile
        Queries (and folder images) that could not be used.
    n_embedded : int
        Images embedded to answer (0 when everything was in the store).
    image_dir : str or None
        The searched folder as given: :meth:`rows` and :meth:`csv` join the
        paths to it, so they name files as the queries do (``None``: relative).
    """

    queries: list
    paths: list
    indices: np.ndarray
    similarities: np.ndarray
    bad_files: list = field(default_factory=list)
    n_embedded: int = 0
    image_dir: str | None = None

    def rows(self) -> Iterator[tuple[str, str, float, int]]:
        """``(query, path, similarity, rank)`` tuples, rank 1 the most similar.

        Query and path are both as given (the path joined to :attr:`image_dir`).
        """
        for q, paths, sims in zip(self.queries, self.paths, self.similarities):
            for rank, (path, sim) in enumerate(zip(paths, sims), start=1):
                if self.image_dir is not None:
                    path = os.path.join(self.image_dir, path)
                yield q, path, float(sim), rank

    def csv(self) -> str:
        """The result as CSV: ``query,path,similarity,rank``."""
        return similar_csv(self.rows())


def similar_images(
    image_dir: str | os.PathLike,
    queries: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    top: int = 10,
    embedder: Embedder | None = None,
    store: str | os.PathLike | None = None,
    progress: Any = None,
    **embedder_params: Any,
) -> SimilarResult:
    """The ``top`` most similar images of ``image_dir`` for each query image.

    Parameters
    ----------
    image_dir : path-like
    queries : path-like or list of path-like
        Image files and folders of images.
    top : int
    embedder, store, progress, embedder_params
        As in :func:`featclust.embed_folder`.

    Returns
    -------
    SimilarResult

    Raises
    ------
    NoImagesError
        If the folder holds no usable image.
    UsageError
        If a query does not exist or ``top`` is not a positive integer.
    """
    top = check_int("top", top)
    embedder = make_embedder(embedder, embedder_params)
    progress = bar_factory(progress)
    emb = embed_folder(image_dir, embedder=embedder, store=store, progress=progress)
    found = embed_inputs(
        queries, embedder=embedder, store=store, image_dir=image_dir, progress=progress
    )
    index, sims = top_similar(emb.features, found.features, top)
    return SimilarResult(
        found.paths,
        [[emb.paths[i] for i in row] for row in index],
        index,
        sims,
        emb.bad_files + found.bad_files,
        emb.n_embedded,
        os.fspath(image_dir),
    )


@dataclass
class DuplicatesResult:
    """Near-duplicate and byte-identical groups of a folder.

    Attributes
    ----------
    near : list of list of (str, float)
        Groups of images with near-identical features: ``(relative path,
        cosine similarity to the group's first image)``, first image first.
    identical : list of list of str
        Groups of byte-identical files.
    threshold : float
        The cosine similarity from which images were grouped.
    out_dir : pathlib.Path or None
        Where ``duplicates.csv``, ``identical.csv`` and ``duplicates.html`` went.
    n_images : int
    """

    near: list
    identical: list
    threshold: float
    out_dir: Path | None = None
    n_images: int = 0


def duplicate_groups(emb: EmbedResult, threshold: float | None = None) -> tuple:
    """Near-duplicate and byte-identical groups of an :class:`~featclust.EmbedResult`.

    Returns
    -------
    near : list of list of (str, float)
    identical : list of list of str
    threshold : float
    """
    threshold = NEAR_DUPLICATE if threshold is None else threshold
    near = [
        [(emb.paths[i], float(s)) for i, s in group]
        for group in near_duplicate_groups(emb.features, threshold)
    ]
    identical = [[emb.paths[i] for i in group] for group in exact_duplicate_groups(emb.hashes)]
    return near, identical, threshold


def find_duplicates(
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    threshold: float | None = None,
    embedder: Embedder | None = None,
    store: str | os.PathLike | None = None,
    progress: Any = None,
    **embedder_params: Any,
) -> DuplicatesResult:
    """Find near-duplicate and byte-identical images; write them into ``out_dir``.

    Parameters
    ----------
    image_dir : path-like
    out_dir : path-like, optional
        New, empty or a featclust output: ``duplicates.csv``
        (``group,path,similarity_to_first``), ``identical.csv``
        (``group,path``) and ``duplicates.html`` are written there. Nothing
        is written without it.
    threshold : float, optional
        Cosine similarity from which two images are near-duplicates; default
        :data:`featclust.search.NEAR_DUPLICATE` (chosen by measurement).
    embedder, store, progress, embedder_params
        As in :func:`featclust.embed_folder`.

    Returns
    -------
    DuplicatesResult
    """
    if threshold is not None:
        threshold = check_float("threshold", threshold, low=0, high=1)
    out = OutputFolder(out_dir, image_dir) if out_dir is not None else None
    embedder = make_embedder(embedder, embedder_params)
    emb = embed_folder(
        image_dir,
        embedder=embedder,
        store=store,
        exclude=[out_dir] if out_dir is not None else (),
        progress=bar_factory(progress),
    )
    near, identical, threshold = duplicate_groups(emb, threshold)
    if out is not None:
        files = [DUPLICATES_CSV, IDENTICAL_CSV, DUPLICATES_HTML]
        record = RunRecord(
            command="duplicates",
            image_dir=os.path.abspath(image_dir),
            feature_settings=emb.settings,
            counts={
                "images": len(emb.paths),
                "near_duplicate_groups": len(near),
                "identical_groups": len(identical),
            },
        )
        out.check_free(files)
        out.claim(files, out.record or record, status="writing")
        out.write_text(DUPLICATES_CSV, duplicates_csv(near))
        out.write_text(IDENTICAL_CSV, identical_csv(identical))
        out.write_text(DUPLICATES_HTML, duplicates_html(near, out.path, image_dir))
        out.write_marker(None, status="complete")
    return DuplicatesResult(near, identical, threshold, out.path if out else None, len(emb.paths))
