"""The names of the folders of a sorted output: ``cluster_07``, ``07-rings``, ``set_aside``.

A cluster's folder is its number, zero-padded to the width of the largest
number, and the name a person gave it, made safe for every file system
(:func:`safe_name`). Images set aside are in a folder that is no cluster.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import UsageError

#: The folder of the images set aside (see :meth:`featclust.output.SortedFolder.set_aside`).
SET_ASIDE_DIR = "set_aside"
#: The longest name kept in a folder name (characters, before the number).
MAX_NAME = 60
_UNSAFE = re.compile(r"(?:[^\w.+-]|\.{2,})+")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10))}
_RESERVED |= {f"lpt{i}" for i in range(10)}


def cluster_dir_name(label: int, n_clusters: int) -> str:
    """``cluster_07``: the label zero-padded to the width of ``n_clusters - 1``."""
    return f"cluster_{label:0{_width(n_clusters)}d}"


def _width(n_clusters: int) -> int:
    return max(2, len(str(max(n_clusters - 1, 0))))


def safe_name(name: str) -> str:
    """``name`` as it may stand in a folder name on any file system.

    Letters, digits, ``_``, ``.``, ``+`` and ``-`` are kept; any other run of
    characters (and ``..``) becomes one ``-``; leading and trailing dots and dashes go, and
    the result is cut to :data:`MAX_NAME` characters.

    Raises
    ------
    UsageError
        If nothing of ``name`` is left (empty, or only punctuation).
    """
    if not isinstance(name, str):
        raise UsageError(f"a cluster name must be text, got {type(name).__name__}")
    text = unicodedata.normalize("NFC", name).strip()
    text = re.sub("-{2,}", "-", _UNSAFE.sub("-", text)).strip(".-")[:MAX_NAME].strip(".-")
    if not text or text.lower() in _RESERVED:
        raise UsageError(f"name={name!r} cannot name a folder; use letters or digits")
    return text


def folder_name(label: int, n_clusters: int, name: str | None = None) -> str:
    """The folder of cluster ``label``: ``cluster_07`` or, named, ``07-rings``."""
    if not name:
        return cluster_dir_name(label, n_clusters)
    return f"{label:0{_width(n_clusters)}d}-{safe_name(name)}"
