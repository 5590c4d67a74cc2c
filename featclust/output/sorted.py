"""A folder written by ``sort``, opened to read and to edit; the k scan saved in an output folder.

:func:`open_sorted` opens a sorted folder: its record, model, labels and k
scan, and the edits a person makes (move, merge, split, rename, set aside,
undo, redo: see :mod:`featclust.output.edits`). ``assign``, the report, the
estimator, the review page and the CLI use it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..cluster import FeatureKMeans
from ..errors import OutputFormatError, UsageError
from ..images import OUTPUT_MARKER
from ..tables import kscan_csv, read_kscan_csv, read_labels_csv
from .curation import Curation, EditResult
from .edits import Editor
from .folder import OutputFolder
from .journal import Journal
from .names import SET_ASIDE_DIR
from .placement import recover as recover_placement
from .record import KSCAN_CSV, KSCAN_PNG, LABELS_CSV, MODEL_NPZ, RunRecord, read_record


@dataclasses.dataclass
class ClusterInfo:
    """One cluster of a sorted folder, as a person sees it.

    Attributes
    ----------
    number : int
    name : str or None
        The name a person gave it.
    folder : str
        Its folder (``cluster_03`` or, named, ``03-rings``).
    size : int
    confirmed : bool
        Whether a person confirmed it.
    """

    number: int
    name: str | None
    folder: str
    size: int
    confirmed: bool


@dataclasses.dataclass
class Member:
    """An image of a cluster (or set aside).

    Attributes
    ----------
    path : str
        As ``labels.csv`` names it (relative to the image folder).
    file : str
        Its file in the sorted folder, relative to it.
    distance : float
        To the cluster's centre (NaN for an image set aside).
    outlier : bool
    moved : bool
        Whether a person put it where it is.
    """

    path: str
    file: str
    distance: float
    outlier: bool
    moved: bool


class SortedFolder:
    """A complete folder written by ``sort``, opened to read and to edit.

    Use :func:`open_sorted` to make one. Each edit is applied at once, as
    one transaction (see :mod:`featclust.output.journal`): the files move
    between the cluster folders (never overwritten; files featclust did not
    write are never touched), ``labels.csv``, ``clusters.csv``, the record
    and ``model.npz`` (re-fitted to the clusters as they now are, so that
    ``assign`` follows the edits) are replaced. A cluster is given by number
    or by name; an image by its path in ``labels.csv`` or as a file of the
    folder (``cluster_03/x.png``). Each edit returns an
    :class:`~featclust.output.edits.EditResult`.

    Attributes
    ----------
    path : pathlib.Path
    record : RunRecord
    """

    def __init__(self, path: str | os.PathLike, record: RunRecord):
        self.path = Path(path)
        self.record = record
        self._model: FeatureKMeans | None = None
        self._state: Curation | None = None
        self._editor: Editor | None = None

    def reload(self) -> None:
        """Read the record again (after an edit made here or elsewhere)."""
        record = read_record(self.path)
        if record is not None:
            self.record = record
        self._model = None
        self._state = None

    # -- reading, for people ---------------------------------------------------
    @property
    def state(self) -> Curation:
        """The folder's clusters, images set aside and edits, as read now."""
        if self._state is None:
            self._state = Curation.read(self)
        return self._state

    def folder_name(self, cluster: int) -> str:
        """The folder of cluster ``cluster`` (a number): ``cluster_03`` or ``03-rings``."""
        return self.state.folder(int(cluster))

    def cluster_number(self, cluster: Any) -> int:
        """The number of a cluster given by number or name.

        Raises
        ------
        UsageError
            If there is no such cluster.
        """
        return self.editor.cluster(self.state, cluster)

    def clusters(self) -> list[ClusterInfo]:
        """Every cluster: number, name, folder, size, whether confirmed."""
        state = self.state
        sizes = np.bincount(state.labels, minlength=state.n_clusters)
        return [
            ClusterInfo(c, state.names.get(c), state.folder(c), int(sizes[c]), c in state.confirmed)
            for c in range(state.n_clusters)
        ]

    def members(self, cluster: Any) -> list[Member]:
        """The images of a cluster (by number or name), nearest its centre first."""
        state = self.state
        c = self.cluster_number(cluster)
        rows = np.flatnonzero(state.labels == c)
        rows = rows[np.argsort(state.distances[rows], kind="stable")]
        folder = state.folder(c)
        return [
            Member(
                state.paths[i],
                f"{folder}/{state.paths[i]}",
                float(state.distances[i]),
                bool(state.outliers[i]),
                state.paths[i] in state.moved,
            )
            for i in rows
        ]

    def set_aside_images(self) -> list[Member]:
        """The images set aside (in no cluster), in the order they were set aside."""
        return [
            Member(p, f"{SET_ASIDE_DIR}/{p}", float("nan"), False, False)
            for p in self.state.set_aside
        ]

    def decided(self, paths: Any) -> list:
        """The cluster a person put each of ``paths`` in, where they moved it.

        ``paths`` are image files (in the image folder that was sorted, or
        files of this folder); ``None`` for one no person moved. ``assign``
        answers these, so it follows the person's decisions even where the
        re-fitted centres alone would not.
        """
        state = self.state
        where = {p: int(c) for p, c in zip(state.paths, state.labels) if p in state.moved}
        if not where:
            return [None] * len(paths)
        roots = [os.path.realpath(d) for d in (self.image_dir, self.path) if d]
        found = []
        for path in paths:
            real = os.path.realpath(path)
            label = None
            for i, root in enumerate(roots):
                rel = os.path.relpath(real, root).replace(os.sep, "/")
                if rel.startswith("../"):
                    continue
                rel = rel if i == 0 else rel.partition("/")[2]
                label = where.get(rel)
            found.append(label)
        return found

    @property
    def can_undo(self) -> bool:
        """Whether an edit can be undone."""
        return self.editor.journal.position > 0

    @property
    def can_redo(self) -> bool:
        """Whether an undone edit can be redone."""
        journal = self.editor.journal
        return journal.position < len(journal.edits)

    @property
    def curated(self) -> bool:
        """Whether a person edited the folder since it was sorted."""
        return bool((self.record.curation or {}).get("edits"))

    # -- editing ---------------------------------------------------------------
    @property
    def editor(self) -> Editor:
        if self._editor is None:
            self._editor = Editor(self)
        return self._editor

    def move(self, paths: Any, to: Any) -> EditResult:
        """Move images (a path or a list) into cluster ``to`` (number or name).

        Images set aside may be moved back into a cluster this way. A moved
        image counts as the person's decision (see :meth:`resort`).
        """
        return self.editor.move(paths, to)

    def merge(self, clusters: Any, into: Any = None) -> EditResult:
        """Merge ``clusters`` into one: ``into`` (default the first given).

        The clusters merged away leave their numbers; those after them move
        down a number.
        """
        return self.editor.merge(clusters, into)

    def split(self, cluster: Any, k: int | str = "auto", random_state: Any = 0) -> EditResult:
        """Split a cluster by k-means on its members' stored features.

        Parameters
        ----------
        cluster : int or str
        k : int or "auto"
            ``"auto"``: chosen as ``-k auto`` chooses (:class:`featclust.KScan`).
        random_state : int, optional

        The largest part keeps the number; the others get new numbers at the end.
        """
        return self.editor.split(cluster, k, random_state)

    def rename(self, cluster: Any, name: str | None) -> EditResult:
        """Name a cluster; its folder follows (``cluster_03`` -> ``03-rings``).

        ``None`` or an empty name takes the name away again.
        """
        return self.editor.rename(cluster, name)

    def set_aside(self, paths: Any) -> EditResult:
        """Take images out of every cluster, into the folder ``set_aside``."""
        return self.editor.set_aside(paths)

    def confirm(self, clusters: Any, confirmed: bool = True) -> EditResult:
        """Mark clusters as right as they are (``confirmed=False``: no longer)."""
        return self.editor.confirm(clusters, confirmed)

    def resort(self, random_state: Any = None) -> EditResult:
        """Re-sort the rest: learn from the person's decisions, as one edit (undoable).

        The images a person moved and those in clusters they confirmed are
        fixed; every other image is given the cluster its neighbours point
        to (:func:`featclust.relabel.resort_labels` on the model's reduced
        features), the files move and the model is re-fitted.

        Raises
        ------
        UsageError
            If nothing is fixed yet.
        """
        return self.editor.resort(random_state)

    def undo(self) -> EditResult:
        """Undo the last edit (the journal read backwards)."""
        result = self.editor.undo()
        self.reload()
        return result

    def redo(self) -> EditResult:
        """Apply again the last edit undone."""
        result = self.editor.redo()
        self.reload()
        return result

    @property
    def image_dir(self) -> str | None:
        """The folder that was clustered."""
        return self.record.image_dir

    @property
    def n_clusters(self) -> int:
        """Number of clusters of the sort."""
        return int((self.record.clustering or {})["n_clusters"])

    @property
    def model(self) -> Any:
        """The fitted :class:`featclust.cluster.FeatureKMeans` from ``model.npz``.

        Raises
        ------
        OutputFormatError
            If the file cannot be read or does not fit the record.
        """
        if self._model is None:
            path = self.path / MODEL_NPZ
            if not path.is_file():
                raise OutputFormatError(f"{str(path)!r} is missing; run featclust sort again")
            try:
                model, _ = FeatureKMeans.load(path)
            except OutputFormatError:
                raise
            except Exception as e:  # FeatureKMeans.load names the file in its own errors
                raise OutputFormatError(f"cannot read {str(path)!r}: {e}") from None
            if int(model.n_clusters) != self.n_clusters:
                raise OutputFormatError(
                    f"{str(path)!r} has {model.n_clusters} clusters but "
                    f"featclust.json says {self.n_clusters}"
                )
            self._model = model
        return self._model

    def labels(self, outliers: bool = False) -> tuple:
        """Paths, cluster labels and distances from ``labels.csv``.

        Parameters
        ----------
        outliers : bool
            Also return the recorded outlier flags (see
            :func:`featclust.tables.read_labels_csv`).

        Returns
        -------
        paths : list of str
        labels : ndarray of int64
        distances : ndarray of float64
        outlier : ndarray of bool or None
            Only with ``outliers=True``.

        Raises
        ------
        OutputFormatError
            If the file is damaged or names a cluster the sort does not have.
        """
        path = self.path / LABELS_CSV
        columns = read_labels_csv(path, outliers)
        labels = columns[1]
        if len(labels) and labels.max() >= self.n_clusters:  # also after edits
            raise OutputFormatError(
                f"{str(path)!r} names cluster {int(labels.max())}, but the "
                f"sort has {self.n_clusters} clusters"
            )
        return columns

    def kscan_scores(self) -> dict | None:
        """The k scan saved in this folder (``kscan.csv``), or ``None``.

        Returns
        -------
        scores : dict of 1-D arrays or None
            As :attr:`featclust.KScan.scores_`.
        """
        path = self.path / KSCAN_CSV
        if KSCAN_CSV not in self.record.files or not path.is_file():
            return None
        return read_kscan_csv(path)[0]


def recover(out_dir: str | os.PathLike) -> bool:
    """Finish an edit of ``out_dir`` that was interrupted, and roll back a placement
    that was; ``True`` if there was one (see :mod:`featclust.output.journal`)."""
    return bool(Journal(out_dir).recover() + recover_placement(out_dir))


def open_sorted(out_dir: str | os.PathLike) -> SortedFolder:
    """Open a folder written by ``featclust sort``.

    Raises
    ------
    UsageError
        If ``out_dir`` is not a featclust output or holds no complete sort.
    OutputFormatError
        If its record is of another format version or damaged.
    """
    out_dir = Path(out_dir)
    record = read_record(out_dir)
    if record is not None and record.command == "sort" and recover(out_dir):
        record = read_record(out_dir)
    if record is None:
        raise UsageError(
            f"{str(out_dir)!r} is not a featclust output folder (no "
            f"{OUTPUT_MARKER}); run featclust sort first"
        )
    if record.command != "sort" or record.clustering is None:
        raise UsageError(
            f"{str(out_dir)!r} holds no clustering (it was written by "
            f"featclust {record.command}); run featclust sort first"
        )
    if record.status != "complete":
        raise UsageError(
            f"{str(out_dir)!r} holds no complete sort (it was interrupted or "
            "failed); run featclust sort again"
        )
    where = repr(str(out_dir / OUTPUT_MARKER))
    n = record.clustering.get("n_clusters")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise OutputFormatError(
            f"{where}: clustering.n_clusters must be a positive integer, got {n!r}"
        )
    if not isinstance(record.feature_settings, dict) or not isinstance(record.embedder, dict):
        raise OutputFormatError(f"{where} does not record the feature settings")
    if not isinstance(record.image_dir, str):
        raise OutputFormatError(f"{where} does not record the image folder")
    return SortedFolder(out_dir, record)


def kscan_info(scan: Any) -> dict:
    """What a record keeps of a fitted :class:`featclust.KScan`."""
    return {
        "ks": [int(k) for k in scan.ks_],
        "suggested_k": int(scan.suggested_k_),
        "reason": scan.reason_,
    }


def write_kscan(out: OutputFolder, scan: Any, png: bytes) -> None:
    """Write ``kscan.csv`` and ``kscan.png`` into an :class:`OutputFolder` that claimed them.

    ``png`` is the plot, drawn by the caller
    (:func:`featclust.report.render.kscan_png`): the output folder is below the report.
    """
    out.write_text(KSCAN_CSV, kscan_csv(scan.scores_, scan.suggested_k_))
    out.write_bytes(KSCAN_PNG, png)


def save_kscan(
    out_dir: str | os.PathLike,
    scan: Any,
    record: RunRecord | None = None,
    image_dir: str | os.PathLike | None = None,
    *,
    png: bytes,
) -> list[Path]:
    """Write ``kscan.csv`` and ``kscan.png`` into ``out_dir``, claimed in its record first.

    ``out_dir`` may be new, empty or any featclust output (a sorted folder,
    say: ``featclust report`` then shows the plot); a file there that
    featclust did not write is never overwritten.

    Parameters
    ----------
    out_dir : path-like
    scan : featclust.KScan
        Fitted.
    record : RunRecord, optional
        The record of a new folder (``command="scan-k"``).
    image_dir : path-like, optional
        The scanned folder; ``out_dir`` must not overlap it.
    png : bytes
        The plot (:func:`featclust.report.render.kscan_png`).

    Returns
    -------
    list of pathlib.Path
    """
    out = OutputFolder(out_dir, image_dir)
    base = out.record or record or RunRecord(command="scan-k")
    base = dataclasses.replace(base, kscan=kscan_info(scan))
    status = out.status or "complete"
    files = [KSCAN_CSV, KSCAN_PNG]
    out.claim(files, base, status="writing" if out.record is None else status)
    write_kscan(out, scan, png)
    out.write_marker(None, status)
    return [out.path / f for f in files]
