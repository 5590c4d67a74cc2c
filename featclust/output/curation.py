"""The state of a sorted folder as its edits see it, and what an edit did.

:class:`Curation` is read from ``labels.csv`` and the record's
``curation`` (see :attr:`featclust.output.RunRecord.curation`);
:class:`EditResult` is what each edit returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .names import SET_ASIDE_DIR, folder_name


@dataclass
class Curation:
    """A sorted folder's state as the edits see it.

    Attributes
    ----------
    paths : list of str
        The images in clusters, as ``labels.csv`` lists them.
    labels : ndarray of int
    distances : ndarray of float
    outliers : ndarray of bool
    n_clusters : int
    names : dict of int to str
        The names people gave clusters.
    set_aside : list of str
        Images in no cluster (in the folder :data:`SET_ASIDE_DIR`).
    moved : set of str
        Images a person put in a cluster.
    confirmed : set of int
        Clusters a person confirmed.
    placed : set of str
        Images placed by ``assign --place`` (their features are not in the store).
    edits : int
        How many edits were made.
    """

    paths: list
    labels: np.ndarray
    distances: np.ndarray
    outliers: np.ndarray
    n_clusters: int
    names: dict = field(default_factory=dict)
    set_aside: list = field(default_factory=list)
    moved: set = field(default_factory=set)
    confirmed: set = field(default_factory=set)
    placed: set = field(default_factory=set)
    edits: int = 0

    def folder(self, label: int) -> str:
        """The folder of cluster ``label`` (``-1``: the images set aside)."""
        if label < 0:
            return SET_ASIDE_DIR
        return folder_name(label, self.n_clusters, self.names.get(label))

    def files(self) -> dict[str, str]:
        """Each image's file, relative to the folder."""
        folders = [self.folder(c) for c in range(self.n_clusters)]
        found = {p: f"{folders[c]}/{p}" for p, c in zip(self.paths, self.labels)}
        found.update((p, f"{SET_ASIDE_DIR}/{p}") for p in self.set_aside)
        return found

    def info(self) -> dict:
        """What the record keeps (:attr:`featclust.output.RunRecord.curation`)."""
        return {
            "names": {str(c): n for c, n in sorted(self.names.items())},
            "set_aside": list(self.set_aside),
            "moved": sorted(self.moved),
            "confirmed": sorted(int(c) for c in self.confirmed),
            "placed": sorted(self.placed),
            "edits": self.edits,
        }

    @classmethod
    def read(cls, folder: Any) -> Curation:
        """The state of a :class:`featclust.output.SortedFolder`."""
        paths, labels, distances, flags = folder.labels(outliers=True)
        if flags is None:
            flags = folder.model.outliers(labels, distances)
        info = folder.record.curation or {}
        names = {int(c): str(n) for c, n in (info.get("names") or {}).items()}
        return cls(
            list(paths),
            np.asarray(labels, np.int64),
            np.asarray(distances, np.float64),
            np.asarray(flags, bool),
            folder.n_clusters,
            names,
            list(info.get("set_aside") or []),
            set(info.get("moved") or []),
            {int(c) for c in info.get("confirmed") or []},
            set(info.get("placed") or []),
            int(info.get("edits") or 0),
        )


@dataclass
class EditResult:
    """What an edit did.

    Attributes
    ----------
    kind : str
        ``"move"``, ``"merge"``, ``"split"``, ``"rename"``, ``"set_aside"``,
        ``"confirm"``, ``"resort"``, ``"undo"`` or ``"redo"``.
    message : str
        One line that says it.
    moved : list of (str, str)
        Files moved, ``(old, new)`` relative to the folder.
    clusters : list of int
        The clusters the edit made or changed (numbers after it).
    """

    kind: str
    message: str
    moved: list = field(default_factory=list)
    clusters: list = field(default_factory=list)


def copy_state(state: Curation) -> Curation:
    """A copy of ``state`` whose lists and sets may be changed."""
    return dataclasses.replace(
        state,
        paths=list(state.paths),
        names=dict(state.names),
        set_aside=list(state.set_aside),
        moved=set(state.moved),
        confirmed=set(state.confirmed),
        placed=set(state.placed),
    )


def count(images: list) -> str:
    """``3 images``."""
    return f"{len(images)} image{'s' if len(images) != 1 else ''}"
