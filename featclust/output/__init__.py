"""The output folder and its record, ``featclust.json``.

* :mod:`~featclust.output.record`: :class:`RunRecord`, the typed content of
  ``featclust.json`` (what was sorted, with which settings, the scores, and
  every file featclust wrote in the folder), and the one reader and writer
  of that file.
* :mod:`~featclust.output.folder`: :class:`OutputFolder` writes into a folder:
  every file is recorded (claimed) before it is written, so a later run
  removes only featclust's own files and never overwrites anyone else's.
* :mod:`~featclust.output.sorted`: :func:`open_sorted` opens a folder written
  by ``sort`` for reading (its record, model, labels and k scan), and the k
  scan's files.

The output folder lies below the report: nothing here draws or imports it.
"""

from .folder import OutputFolder, output_error
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
from .sorted import SortedFolder, kscan_info, open_sorted, save_kscan, write_kscan

__all__ = [
    "BAD_FILES_CSV",
    "CLUSTERS_CSV",
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
    "save_kscan",
    "write_kscan",
    "write_record",
]
