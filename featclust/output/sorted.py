"""A folder written by ``sort``, opened for reading; the k scan saved in an output folder.

:func:`open_sorted` opens a sorted folder: its record, model, labels and k
scan. ``assign``, the report, the estimator and the CLI use it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..cluster import FeatureKMeans
from ..errors import OutputFormatError, UsageError
from ..images import OUTPUT_MARKER
from ..modelfile import check_feature_settings
from ..tables import kscan_csv, read_kscan_csv, read_labels_csv
from .folder import OutputFolder
from .record import KSCAN_CSV, KSCAN_PNG, LABELS_CSV, MODEL_NPZ, RunRecord, read_record


class SortedFolder:
    """A complete folder written by ``sort``, opened for reading.

    Use :func:`open_sorted` to make one.

    Attributes
    ----------
    path : pathlib.Path
    record : RunRecord
    """

    def __init__(self, path: str | os.PathLike, record: RunRecord):
        self.path = Path(path)
        self.record = record
        self._model: FeatureKMeans | None = None

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
        ModelMismatchError
            If it was fitted on other feature settings than the record's
            (another sort's model copied here).
        """
        if self._model is None:
            path = self.path / MODEL_NPZ
            if not path.is_file():
                raise OutputFormatError(f"{str(path)!r} is missing; run featclust sort again")
            try:
                model, extra = FeatureKMeans.load(path)
            except OutputFormatError:
                raise
            except Exception as e:  # FeatureKMeans.load names the file in its own errors
                raise OutputFormatError(f"cannot read {str(path)!r}: {e}") from None
            check_feature_settings(model, extra, self.record.feature_settings, path)
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
        if len(labels) and labels.max() >= self.n_clusters:
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
