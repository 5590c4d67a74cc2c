"""What the review page reads and does: JSON views of a sorted folder, and its edits.

:class:`Review` holds the folder's current state (members, names, flags, doubt
scores, the map) and applies the page's edits through the output folder's own
library (:func:`featclust.open_sorted`): every edit is on disk before the
page is told it happened. Edits (and the report's refresh) are made one at a
time, and the page never reads a state half replaced.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FeatclustError, UsageError
from ..fileio import read_csv
from ..output import CLUSTERS_CSV, open_sorted
from ..relabel import doubt
from ..report import REPORT_DIR
from .thumbs import PREVIEW_SIZE, THUMB_SIZE, ThumbnailCache

#: Images per page of a cluster's grid, and the most a request may ask for.
PAGE_SIZE = 200
MAX_PAGE = 1000
#: Images shown of each cluster on the overview.
OVERVIEW_THUMBS = 12
#: Doubt (:func:`featclust.relabel.doubt`: own centre's distance over the nearest other
#: centre's) from which an image is marked doubtful: it lies near the border or beyond.
DOUBTFUL = 0.9
#: The edits the page may ask for, and the parameters each takes.
EDITS = {
    "move": ("paths", "to"),
    "merge": ("clusters", "into"),
    "split": ("cluster", "k"),
    "rename": ("cluster", "name"),
    "confirm": ("clusters", "confirmed"),
    "set_aside": ("paths",),
    "undo": (),
    "redo": (),
    "resort": (),
}


class Review:
    """A sorted folder opened for review.

    Parameters
    ----------
    out_dir : path-like
        A folder written by ``featclust sort``.
    refresh : callable or None
        Called with ``out_dir`` after each edit (the report's refresh), under
        the edit lock; ``None``: not called.

    Raises
    ------
    UsageError, OutputFormatError
        As :func:`featclust.open_sorted`.
    """

    def __init__(self, out_dir: str | os.PathLike, refresh: Callable | None = None):
        self.out_dir = Path(out_dir)
        self.refresh = refresh
        self.thumbs = ThumbnailCache(out_dir)
        # lock: the state in memory (views read it, an edit replaces it); disk_lock: the
        # folder on disk (edits and the report's refresh write it), so that a refresh of
        # the report holds up the next edit, not the views.
        self.lock = threading.RLock()
        self.disk_lock = threading.RLock()
        self.notes: list[str] = []
        self._reduced: np.ndarray | None = None
        self._feature_paths: list[str] | None = None
        self.folder: Any = None
        self._load()

    # -- state -------------------------------------------------------------------------

    def _load(self) -> None:
        """Read the folder's current state (after opening it or after an edit)."""
        if getattr(self, "folder", None) is None:
            self.folder = open_sorted(self.out_dir)
        else:
            self.folder.reload()
        folder = self.folder
        state = folder.state
        self.paths: list[str] = list(state.paths) + list(state.set_aside)
        n_aside = len(state.set_aside)
        self.labels: np.ndarray = np.concatenate([state.labels, np.full(n_aside, -1)])
        self.distances: np.ndarray = np.concatenate([state.distances, np.zeros(n_aside)])
        self.outliers: np.ndarray = np.concatenate([state.outliers, np.zeros(n_aside, bool)])
        self.moved = np.array([p in state.moved for p in self.paths], bool)
        self.infos = folder.clusters()
        self.names: list[str] = [c.name or "" for c in self.infos]
        self.folders: list[str] = [c.folder for c in self.infos]
        files = state.files()
        self.files: list[str] = [files[p] for p in self.paths]
        self.can_undo: bool = folder.can_undo
        self.can_redo: bool = folder.can_redo
        self.index = {p: i for i, p in enumerate(self.paths)}
        self.flags = _cluster_flags(self.out_dir, len(self.names))
        self.doubt = self._doubt(folder)
        self.doubtful = np.zeros(len(self.paths), bool)
        if self.doubt is not None:
            self.doubtful = (self.doubt >= DOUBTFUL) & (self.labels >= 0)
        self.version = getattr(self, "version", 0) + 1

    def _doubt(self, folder) -> np.ndarray | None:
        """Doubt scores (:func:`featclust.relabel.doubt`) of the current labels, or ``None``
        when the features cannot be read (a note says why). An image whose features the
        store does not hold gets 0. The features come from the folder's editor, which
        keeps them reduced for the edits too."""
        try:
            known = folder.editor.has_features(self.paths)
            if self._feature_paths != self.paths:
                self._reduced = None
                paths = [p for p, k in zip(self.paths, known) if k]
                self._reduced, _ = folder.editor.views(folder.model, paths)
                self._feature_paths = list(self.paths)
                self.notes = [n for n in self.notes if not n.startswith("no doubt")]
        except FeatclustError as e:
            self.notes = [f"no doubt scores: {e}"]
            return None
        scores = np.zeros(len(self.paths))
        if known.any():
            centres = folder.model.cluster_centers_
            scores[known] = doubt(self._reduced, self.labels[known], centres)
        return scores

    def overview(self) -> dict:
        """The clusters, their flags and first images; what the page shows first."""
        with self.lock:
            clusters = []
            for c, name in enumerate(self.names):
                idx = self._members(c)
                flags = list(self.flags.get(c, []))
                n_doubt = int(self.doubtful[idx].sum())
                clusters.append(
                    {
                        "cluster": c,
                        "name": name,
                        "folder": self.folders[c],
                        "confirmed": bool(self.infos[c].confirmed),
                        "size": int(len(idx)),
                        "flags": flags,
                        "doubtful": n_doubt,
                        "outliers": int(self.outliers[idx].sum()),
                        "first": [self._image(i) for i in idx[:OVERVIEW_THUMBS]],
                    }
                )
            aside = np.flatnonzero(self.labels < 0)
            return {
                "out_dir": str(self.out_dir),
                "image_dir": self.folder.image_dir,
                "n_images": len(self.paths),
                "clusters": clusters,
                "set_aside": int(len(aside)),
                "can_undo": self.can_undo,
                "can_redo": self.can_redo,
                "has_map": (self.out_dir / REPORT_DIR / "map.csv").is_file(),
                "has_doubt": self.doubt is not None,
                "notes": list(self.notes),
                "version": self.version,
            }

    def _members(self, cluster: int, order: str = "distance") -> np.ndarray:
        idx = np.flatnonzero(self.labels == cluster)
        if order == "doubt" and self.doubt is not None:
            return idx[np.argsort(-self.doubt[idx], kind="stable")]
        return idx[np.argsort(self.distances[idx], kind="stable")]

    def _image(self, i: int) -> dict:
        reasons = []
        if self.outliers[i]:
            reasons.append("outlier")
        if self.doubtful[i]:
            reasons.append("doubtful")
        return {
            "path": self.paths[i],
            "file": self.files[i],
            "cluster": int(self.labels[i]),
            "moved": bool(self.moved[i]),
            "distance": round(float(self.distances[i]), 5),
            "doubt": None if self.doubt is None else round(float(self.doubt[i]), 4),
            "reasons": reasons,
        }

    def members(self, cluster: str, offset: int = 0, limit: int = PAGE_SIZE, order="distance"):
        """One page of a cluster's images (``cluster="aside"``: the set-aside ones; ``"doubt"``:
        the most doubtful images of all clusters)."""
        if order not in ("distance", "doubt"):
            raise UsageError(f"order must be 'distance' or 'doubt', got {order!r}")
        limit = min(max(int(limit), 1), MAX_PAGE)
        offset = max(int(offset), 0)
        with self.lock:
            if cluster == "aside":
                idx = np.flatnonzero(self.labels < 0)
            elif cluster == "doubt":
                idx = np.flatnonzero(self.labels >= 0)
                if self.doubt is not None:
                    idx = idx[np.argsort(-self.doubt[idx], kind="stable")]
            else:
                c = int(cluster)
                if not 0 <= c < len(self.names):
                    raise UsageError(f"no cluster {cluster!r}")
                idx = self._members(c, order)
            return {
                "cluster": cluster,
                "total": int(len(idx)),
                "offset": offset,
                "images": [self._image(i) for i in idx[offset : offset + limit]],
                "version": self.version,
            }

    def locate(self, path: str, order: str = "distance") -> dict:
        """Where an image is: its cluster (``"aside"`` if set aside), its place in the
        cluster's order, and what the page shows of it.

        Raises
        ------
        KeyError
            If ``path`` is not an image of the folder.
        """
        with self.lock:
            i = self.index[path]
            c = int(self.labels[i])
            idx = np.flatnonzero(self.labels < 0) if c < 0 else self._members(c, order)
            return {
                "cluster": "aside" if c < 0 else str(c),
                "position": int(np.flatnonzero(idx == i)[0]),
                "image": self._image(i),
            }

    def map_points(self) -> dict:
        """The report's 2-D map (``report/map.csv``) with the current clusters."""
        with self.lock:
            path = self.out_dir / REPORT_DIR / "map.csv"
            try:
                rows = read_csv(path, required=("path", "x", "y"))
            except (OSError, ValueError):
                return {"points": 0, "x": [], "y": [], "cluster": [], "path": []}
            keep = [r for r in rows if r["path"] in self.index]
            idx = [self.index[r["path"]] for r in keep]
            return {
                "points": len(keep),
                "x": [float(r["x"]) for r in keep],
                "y": [float(r["y"]) for r in keep],
                "cluster": [int(self.labels[i]) for i in idx],
                "path": [r["path"] for r in keep],
            }

    def picture(self, path: str, large: bool = False) -> bytes:
        """The JPEG thumbnail (or larger preview) of an image named as ``labels.csv`` names it.

        Raises
        ------
        KeyError
            If ``path`` is not an image of the folder.
        BadImageError
            If it cannot be drawn.
        """
        with self.lock:
            i = self.index[path]
            source = self.out_dir / self.files[i]
            if not os.path.exists(source) and self.folder.image_dir:
                source = Path(self.folder.image_dir) / path
        return self.thumbs.get(path, source, PREVIEW_SIZE if large else THUMB_SIZE)

    # -- edits -------------------------------------------------------------------------

    def edit(self, request: Any) -> dict:
        """Apply one edit (``{"op": "move", "paths": [...], "to": 3}``, ...) and return the
        library's result and the new state's version.

        Raises
        ------
        UsageError
            For an unknown edit or parameter; the library's errors as they come.
        """
        if not isinstance(request, dict) or request.get("op") not in EDITS:
            raise UsageError(f"edit must be one of {', '.join(EDITS)}, got {request!r:.80}")
        op = request["op"]
        args = {k: v for k, v in request.items() if k != "op"}
        unknown = set(args) - set(EDITS[op])
        if unknown:
            raise UsageError(f"{op} takes {', '.join(EDITS[op]) or 'nothing'}, got {unknown}")
        with self.disk_lock:
            self.folder.reload()
            method = getattr(self.folder, op, None)
            if method is None:
                raise UsageError(f"{op} is not available in this version of featclust")
            try:
                result = method(**args)
            finally:
                with self.lock:
                    self._load()
            if self.refresh is not None:
                self.refresh(self.out_dir)
            return {
                "op": op,
                "message": getattr(result, "message", ""),
                "moved": len(getattr(result, "moved", ()) or ()),
                "clusters": _plain(getattr(result, "clusters", [])),
                "version": self.version,
            }


def _cluster_flags(out_dir: Path, n: int) -> dict:
    """Each cluster's flags (``tiny``, ``loose``, ...) from ``clusters.csv``."""
    try:
        rows = read_csv(out_dir / CLUSTERS_CSV, required=("cluster",))
    except (OSError, ValueError):
        return {}
    flags = {}
    for r in rows:
        try:
            c = int(r["cluster"])
        except ValueError:
            continue
        if 0 <= c < n:
            flags[c] = [f for f in (r.get("flags") or "").split(";") if f]
    return flags


def _plain(obj: Any) -> Any:
    """A result object as JSON-able data (dataclasses and numpy values included)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return {k: _plain(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)
