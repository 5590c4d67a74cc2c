"""The output folder and its record, ``featclust.json``.

* :mod:`~featclust.output.record`: :class:`RunRecord`, the typed content of
  ``featclust.json`` (what was sorted, with which settings, the scores, and
  every file featclust wrote in the folder), and the one reader and writer
  of that file.
* :mod:`~featclust.output.folder`: :class:`OutputFolder` writes into a folder:
  every file is recorded (claimed) before it is written, so a later run
  removes only featclust's own files and never overwrites anyone else's.
* :mod:`~featclust.output.sorted`: :func:`open_sorted` opens a folder written
  by ``sort`` to read (its record, model, labels and k scan) and to edit, and
  the k scan's files.
* :mod:`~featclust.output.edits`: the edits (move, merge, split, rename, set
  aside, confirm), the model re-fitted to them.
* :mod:`~featclust.output.journal`: each edit one transaction; undo and redo.
* :mod:`~featclust.output.names`: the folder names (``cluster_03``, ``03-rings``).

The output folder lies below the report: nothing here draws or imports it.
"""

from .curation import EditResult
from .folder import OutputFolder, output_error
from .journal import JOURNAL_DIR, Journal
from .names import SET_ASIDE_DIR, cluster_dir_name, folder_name, safe_name
from .record import (
    BAD_FILES_CSV,
    CLUSTERS_CSV,
    KSCAN_CSV,
    KSCAN_PNG,
    LABELS_CSV,
    MARKER_FORMAT,
    MODEL_NPZ,
    TRUTH_CSV,
    RunRecord,
    read_record,
    write_record,
)
from .sorted import (
    ClusterInfo,
    Member,
    SortedFolder,
    kscan_info,
    open_sorted,
    recover,
    save_kscan,
    write_kscan,
)

__all__ = [
    "BAD_FILES_CSV",
    "CLUSTERS_CSV",
    "ClusterInfo",
    "EditResult",
    "JOURNAL_DIR",
    "Journal",
    "Member",
    "SET_ASIDE_DIR",
    "cluster_dir_name",
    "folder_name",
    "safe_name",
    "KSCAN_CSV",
    "KSCAN_PNG",
    "LABELS_CSV",
    "MARKER_FORMAT",
    "MODEL_NPZ",
    "TRUTH_CSV",
    "OutputFolder",
    "RunRecord",
    "SortedFolder",
    "kscan_info",
    "open_sorted",
    "output_error",
    "read_record",
    "recover",
    "save_kscan",
    "write_kscan",
    "write_record",
]
