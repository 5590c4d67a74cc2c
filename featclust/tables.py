"""The CSV files featclust writes and reads: one function per format, nowhere else.

Every table is written with :func:`featclust.fileio.csv_text`, so any file
name (commas, quotes, newlines, bytes that are not UTF-8) reads back
unchanged with Python's csv module.

============== ============================================== ==========================
file           columns                                        written by
============== ============================================== ==========================
labels.csv     path, cluster, distance, outlier               sort, assign ``--place``,
                                                              the edits (images set
                                                              aside have no row)
bad_files.csv  path, reason                                   sort, the feature store
clusters.csv   cluster, size, distances, scores, flags,       sort, the edits
               folder, name
truth.csv      label, cluster_0 ... cluster_k-1, total        sort ``--truth``
kscan.csv      k, the scan's scores, suggested                scan-k, sort ``-k auto``
(stdout)       path, cluster, distance, outlier               assign (as labels.csv)
(stdout)       query, path, similarity, rank                  similar
duplicates.csv group, path, similarity_to_first               duplicates
identical.csv  group, path                                    duplicates
============== ============================================== ==========================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import OutputFormatError, UsageError
from .fileio import PathLike, csv_text, fmt_num, norm_relpath, read_csv

#: The k scan's score columns, in the order tables show them (the keys of
#: :attr:`featclust.KScan.scores_`).
KSCAN_COLUMNS = ("k", "inertia", "silhouette", "davies_bouldin", "calinski_harabasz", "stability")


#: The columns of every table featclust writes, by file name ("assign" and "similar": the
#: CSV those commands print). ``"cluster_*"``: one column per cluster (``cluster_0`` ...).
#: The command line's help is built from these; tests/test_parameters.py checks the writers.
COLUMNS = {
    "labels.csv": ("path", "cluster", "distance", "outlier"),
    "bad_files.csv": ("path", "reason"),
    "clusters.csv": (
        "cluster",
        "size",
        "mean_distance",
        "p95_distance",
        "max_distance",
        "silhouette",
        "stability",
        "flags",
        "folder",
        "name",
    ),
    "truth.csv": ("label", "cluster_*", "total"),
    "kscan.csv": (*KSCAN_COLUMNS, "suggested"),
    "duplicates.csv": ("group", "path", "similarity_to_first"),
    "identical.csv": ("group", "path"),
    "assign": ("path", "cluster", "distance", "outlier"),
    "similar": ("query", "path", "similarity", "rank"),
}


def labels_csv(
    paths: Sequence[str],
    labels: Iterable[int],
    distances: Iterable[float],
    outliers: Iterable[bool],
) -> str:
    """The text of ``labels.csv``: ``path,cluster,distance,outlier``, one row per image.

    ``distance`` is the image's distance to its cluster (see
    :attr:`featclust.FeatureKMeans.distances_`); ``outlier`` is ``true`` for an
    image farther from its cluster's centre than 95% of the cluster's members
    (see :attr:`featclust.FeatureKMeans.thresholds_`). What ``featclust assign``
    prints is the same table.
    """
    return csv_text(
        COLUMNS["labels.csv"],
        (
            [p, int(c), fmt_num(d), "true" if o else "false"]
            for p, c, d, o in zip(paths, labels, distances, outliers)
        ),
    )


def read_labels_csv(path: PathLike, outliers: bool = False) -> tuple:
    """Read ``labels.csv``.

    Parameters
    ----------
    path : path-like
    outliers : bool
        Also return the ``outlier`` column.

    Returns
    -------
    paths : list of str
    labels : ndarray of int64
    distances : ndarray of float64
    outlier : ndarray of bool or None
        Only with ``outliers=True``; ``None`` for a file written before the
        column existed.

    Raises
    ------
    OutputFormatError
        Naming the file and what is wrong (missing column, a label that is not
        a non-negative integer, a distance that is not a number).
    """
    try:
        rows = read_csv(path, required=("path", "cluster", "distance"))
        paths = [r["path"] for r in rows]
        labels = np.array([int(r["cluster"]) for r in rows], dtype=np.int64)
        distances = np.array([float(r["distance"]) for r in rows], dtype=np.float64)
        flags = None
        if outliers and rows and "outlier" in rows[0]:
            if any(r["outlier"] not in ("true", "false") for r in rows):
                raise ValueError("an outlier value is neither true nor false")
            flags = np.array([r["outlier"] == "true" for r in rows], dtype=bool)
    except (OSError, ValueError, TypeError) as e:
        raise OutputFormatError(f"cannot read {str(path)!r}: {e}") from None
    if len(labels) and labels.min() < 0:
        raise OutputFormatError(f"{str(path)!r} holds a negative cluster label")
    if not np.all(np.isfinite(distances)) or (len(distances) and distances.min() < 0):
        raise OutputFormatError(f"{str(path)!r} holds a distance that is not a non-negative number")
    return (paths, labels, distances, flags) if outliers else (paths, labels, distances)


def bad_files_csv(bad_files: Iterable[Any]) -> str:
    """The text of ``bad_files.csv``: ``path,reason``, one row per skipped file, by path."""
    return csv_text(
        ["path", "reason"], ([b.path, b.reason] for b in sorted(bad_files, key=lambda b: b.path))
    )


def clusters_csv(
    rows: Iterable[dict],
    folders: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> str:
    """The text of ``clusters.csv`` from :func:`featclust.flags.cluster_table` rows.

    ``silhouette`` and ``stability`` are empty where unknown; ``flags`` joins the
    cluster's flags (:data:`featclust.flags.FLAGS`) with ``;``.

    Parameters
    ----------
    rows : iterable of dict
    folders : list of str, optional
        Each cluster's folder (default ``cluster_XX``).
    names : list of str, optional
        The name a person gave each cluster (default none: empty).
    """
    rows = list(rows)
    if folders is None:
        width = max(2, len(str(max(len(rows) - 1, 0))))
        folders = [f"cluster_{r['cluster']:0{width}d}" for r in rows]
    names = names if names is not None else [""] * len(rows)
    return csv_text(
        COLUMNS["clusters.csv"],
        (
            [
                r["cluster"],
                r["size"],
                fmt_num(r["mean_distance"]),
                fmt_num(r["p95_distance"]),
                fmt_num(r["max_distance"]),
                "" if r.get("silhouette") is None else f"{r['silhouette']:.3f}",
                "" if r.get("stability") is None else f"{r['stability']:.3f}",
                ";".join(r.get("flags", [f for f in ("tiny", "loose") if r.get(f)])),
                folder,
                name,
            ]
            for r, folder, name in zip(rows, folders, names)
        ),
    )


def truth_csv(comparison: Any) -> str:
    """The contingency table of a :class:`featclust.scores.TruthComparison` as CSV.

    Columns ``label,cluster_0,...,total``; a last row of totals.
    """
    table = comparison.contingency
    k = table.shape[1]
    rows = [
        [name] + [int(x) for x in row] + [int(row.sum())]
        for name, row in zip(comparison.classes, table)
    ]
    rows.append(["total"] + [int(x) for x in table.sum(axis=0)] + [int(table.sum())])
    return csv_text(["label"] + [f"cluster_{c}" for c in range(k)] + ["total"], rows)


def read_truth_csv(path: PathLike) -> dict[str, str]:
    """Read a file of known classes: CSV with columns ``path,label``.

    Paths are relative to the image folder, as in ``labels.csv``.

    Returns
    -------
    dict
        Path to label.

    Raises
    ------
    UsageError
        If the file cannot be read, lacks the two columns, or names a path twice
        with different labels.
    """
    try:
        rows = read_csv(path, required=("path", "label"))
    except OSError as e:
        raise UsageError(f"cannot read truth file {str(path)!r}: {e.strerror or e}") from None
    except ValueError as e:
        raise UsageError(
            f"truth file {str(path)!r}: {e} (it needs the columns path,label)"
        ) from None
    truth: dict[str, str] = {}
    for row in rows:
        if not row["path"]:
            continue
        p, label = norm_relpath(row["path"]), (row["label"] or "").strip()
        if truth.get(p, label) != label:
            raise UsageError(
                f"truth file {str(path)!r} gives {p!r} two labels: {truth[p]!r} and {label!r}"
            )
        truth[p] = label
    return truth


def kscan_csv(scores: dict, suggested_k: int | None) -> str:
    """The text of ``kscan.csv``: one row per k; ``suggested`` is 1 on the suggestion.

    Parameters
    ----------
    scores : dict of 1-D arrays
        :attr:`featclust.KScan.scores_`.
    suggested_k : int
    """
    ks = [int(k) for k in scores["k"]]
    return csv_text(
        [*KSCAN_COLUMNS, "suggested"],
        (
            [k] + [fmt_num(scores[c][i]) for c in KSCAN_COLUMNS[1:]] + [int(k == suggested_k)]
            for i, k in enumerate(ks)
        ),
    )


def read_kscan_csv(path: PathLike) -> tuple[dict, int | None]:
    """Read ``kscan.csv`` back.

    Returns
    -------
    scores : dict of 1-D arrays
        Keyed by :data:`KSCAN_COLUMNS` (NaN for an empty cell).
    suggested_k : int or None

    Raises
    ------
    OutputFormatError
        If the file is not a k scan table.
    """
    try:
        rows = read_csv(path, required=KSCAN_COLUMNS)
        scores = {"k": np.array([int(r["k"]) for r in rows], dtype=np.int64)}
        for c in KSCAN_COLUMNS[1:]:
            scores[c] = np.array([float(r[c]) if r[c] else math.nan for r in rows])
        suggested = [int(r["k"]) for r in rows if r.get("suggested") == "1"]
    except (OSError, ValueError, TypeError) as e:
        raise OutputFormatError(f"cannot read {str(path)!r}: {e}") from None
    return scores, (suggested[0] if suggested else None)


def fmt_fixed(x: Any, decimals: int = 1) -> str:
    """A number with ``decimals`` decimals (a column of them lines up); ``""`` for None/NaN."""
    text = fmt_num(x)  # checks it is a number
    return text and f"{float(x):.{decimals}f}"


def kscan_table(scores: dict, suggested_k: int | None) -> str:
    """The scan as an aligned text table for the terminal, the suggestion marked ``<-``."""
    head = ["k", "inertia", "silhouette", "davies-bouldin", "calinski-harabasz", "stability"]
    digits = (None, 5, 3, 3, None, 3)  # Calinski-Harabasz: one decimal in every row
    ks = [int(k) for k in scores["k"]]
    lines = [
        [str(k)]
        + [
            fmt_num(scores[c][i], d) if d else fmt_fixed(scores[c][i])
            for c, d in zip(KSCAN_COLUMNS[1:], digits[1:])
        ]
        for i, k in enumerate(ks)
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths))]
    for k, line in zip(ks, lines):
        mark = "  <- suggested" if k == suggested_k else ""
        out.append("  ".join(x.rjust(w) for x, w in zip(line, widths)) + mark)
    return "\n".join(out) + "\n"


def similar_csv(rows: Iterable[tuple[str, str, float, int]]) -> str:
    """The text ``featclust similar`` prints: ``query,path,similarity,rank`` (rank from 1).

    Parameters
    ----------
    rows : iterable of (str, str, float, int)
    """
    return csv_text(
        ["query", "path", "similarity", "rank"],
        ([q, p, fmt_num(s), rank] for q, p, s, rank in rows),
    )


def duplicates_csv(groups: Iterable[Iterable[tuple[str, float]]]) -> str:
    """The text of ``duplicates.csv``: ``group,path,similarity_to_first``, group from 1."""
    return csv_text(
        ["group", "path", "similarity_to_first"],
        ([g, p, fmt_num(s)] for g, group in enumerate(groups, start=1) for p, s in group),
    )


def identical_csv(groups: Iterable[Iterable[str]]) -> str:
    """The text of ``identical.csv``: ``group,path`` of byte-identical files, group from 1."""
    return csv_text(
        ["group", "path"], ([g, p] for g, group in enumerate(groups, start=1) for p in group)
    )
