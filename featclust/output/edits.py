"""A person's edits of a sorted folder: move, merge, split, rename, set aside, confirm.

Each operation computes the folder's new state (:class:`Curation`), re-fits
the model to it (:func:`featclust.output.refit.refit`: the centres are their
members' means in the model's reduced space, the outlier thresholds
recomputed), and hands the
files to move and the new ``labels.csv``, ``clusters.csv``, ``model.npz``
and record to the journal (:class:`featclust.output.journal.Journal`), which
applies them as one transaction. :class:`featclust.output.SortedFolder`
offers them as methods.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from ..errors import FeaturesUnavailableError, UnsafeOutputError, UsageError
from ..flags import FLAGS, cluster_table
from ..kscan import choose_k
from ..relabel import resort_labels
from ..store import FeatureStore
from ..tables import clusters_csv, labels_csv
from .curation import Curation, EditResult, copy_state, count
from .folder import recognised
from .journal import JOURNAL_DIR, Journal
from .names import safe_name
from .record import CLUSTERS_CSV, LABELS_CSV, MODEL_NPZ
from .refit import refit as refit_model


class Editor:
    """The edits of one opened sorted folder (what :class:`SortedFolder`'s methods call).

    Parameters
    ----------
    folder : featclust.output.SortedFolder
    """

    def __init__(self, folder: Any):
        self.folder = folder
        self.journal = Journal(folder.path)
        self._features: dict | None = None
        self._views: tuple | None = None

    # -- what is given -------------------------------------------------------
    def cluster(self, state: Curation, cluster: Any) -> int:
        """The number of a cluster given by number or by name.

        Raises
        ------
        UsageError
            If no cluster has that number or name.
        """
        k = state.n_clusters
        if isinstance(cluster, (int, np.integer)) and not isinstance(cluster, bool):
            if 0 <= int(cluster) < k:
                return int(cluster)
        elif isinstance(cluster, str):
            text = cluster.strip()
            if text.isdigit() and int(text) < k:
                return int(text)
            for c in range(k):
                if text.casefold() in (
                    state.names.get(c, "").casefold(),
                    state.folder(c).casefold(),
                ):
                    return c
        names = ", ".join(f"{c}={n!r}" for c, n in sorted(state.names.items()))
        raise UsageError(
            f"cluster={cluster!r} is not a cluster of {str(self.folder.path)!r}: give a "
            f"number 0..{k - 1}" + (f" or a name ({names})" if names else " or a name")
        )

    def image(self, state: Curation, path: Any, known: dict) -> str:
        """The image (as ``labels.csv`` names it) of a path given as recorded or as a
        file of the folder (``cluster_03/x.png``, relative or absolute)."""
        text = os.fspath(path)
        if text in known:
            return text
        rel = text
        if os.path.isabs(text):
            rel = os.path.relpath(text, os.path.abspath(self.folder.path))
        rel = rel.replace(os.sep, "/")
        head, _, rest = rel.partition("/")
        if rest in known and known[rest] == f"{head}/{rest}":
            return rest
        raise UsageError(
            f"{text!r} is not an image of {str(self.folder.path)!r} (give a path of "
            "labels.csv or a file in a cluster folder)"
        )

    def images(self, state: Curation, paths: Any) -> list[str]:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        known = state.files()
        found = list(dict.fromkeys(self.image(state, p, known) for p in paths))
        if not found:
            raise UsageError("no image given")
        return found

    # -- the operations ------------------------------------------------------
    def move(self, paths: Any, to: Any) -> EditResult:
        state = self.folder.state
        target = self.cluster(state, to)
        images = self.images(state, paths)
        new = copy_state(state)
        _into_cluster(new, images, target)
        new.moved |= set(images)
        name = state.folder(target)
        return self._commit(
            state, new, "move", f"moved {count(images)} to {name}", [target], images
        )

    def set_aside(self, paths: Any) -> EditResult:
        state = self.folder.state
        images = self.images(state, paths)
        new = copy_state(state)
        keep = np.array([p not in set(images) for p in new.paths], bool)
        new.paths = [p for p, k in zip(new.paths, keep) if k]
        new.labels, new.distances, new.outliers = (
            new.labels[keep],
            new.distances[keep],
            new.outliers[keep],
        )
        new.set_aside += [p for p in images if p not in set(state.set_aside)]
        new.moved -= set(images)
        return self._commit(state, new, "set_aside", f"set aside {count(images)}", [], images)

    def rename(self, cluster: Any, name: str | None) -> EditResult:
        state = self.folder.state
        c = self.cluster(state, cluster)
        new = copy_state(state)
        if name is None or not str(name).strip():
            new.names.pop(c, None)
            text = f"{state.folder(c)} has no name now"
        else:
            safe_name(name)  # refuse a name that cannot make a folder name
            name = str(name).strip()
            for other, given in state.names.items():
                if other != c and given.casefold() == name.casefold():
                    raise UsageError(f"name={name!r} is the name of cluster {other} already")
            new.names[c] = name
            text = f"renamed {state.folder(c)} to {new.folder(c)}"
        return self._commit(state, new, "rename", text, [c], [], refit=False)

    def merge(self, clusters: Any, into: Any = None) -> EditResult:
        state = self.folder.state
        if isinstance(clusters, (str, int, np.integer)):
            clusters = [clusters]
        given = list(dict.fromkeys(self.cluster(state, c) for c in clusters))
        target = self.cluster(state, into) if into is not None else given[0]
        merged = sorted(set(given) - {target})
        if not merged:
            raise UsageError("merge needs at least two different clusters")
        # The others go; the clusters after them move down a number.
        mapping = np.empty(state.n_clusters, np.int64)
        n = 0
        for c in range(state.n_clusters):
            if c not in merged:
                mapping[c] = n
                n += 1
        mapping[merged] = mapping[target]
        new = copy_state(state)
        new.labels = mapping[state.labels]
        new.n_clusters = n
        new.names = {int(mapping[c]): v for c, v in state.names.items() if c not in merged}
        new.confirmed = {int(mapping[c]) for c in state.confirmed if c not in merged}
        t = int(mapping[target])
        text = f"merged {', '.join(state.folder(c) for c in merged)} into {new.folder(t)}"
        return self._commit(state, new, "merge", text, [t], [], order=mapping)

    def split(self, cluster: Any, k: int | str = "auto", random_state: Any = 0) -> EditResult:
        state = self.folder.state
        c = self.cluster(state, cluster)
        rows = np.flatnonzero(state.labels == c)
        rows = rows[self.has_features([state.paths[i] for i in rows])]
        X = self.features([state.paths[i] for i in rows])
        model = self.folder.model
        clustering = self.folder.record.clustering or {}
        if isinstance(k, str) and k == "auto":
            if len(rows) < 3:
                raise UsageError(f"cluster {c} has {len(rows)} images: too few to split")
            scan = choose_k(
                X,
                ks=range(2, min(30, len(rows) - 1) + 1),
                pca=clustering.get("pca"),
                normalize=bool(clustering.get("normalize", True)),
                random_state=random_state,
                fit_sample=clustering.get("fit_sample"),
            )
            k = int(scan.suggested_k_)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
            raise UsageError(f"k must be an integer of at least 2 or 'auto', got {k!r}")
        if k > len(rows):
            raise UsageError(f"k={k} is more than the {len(rows)} images of cluster {c}")
        parts = KMeans(
            n_clusters=int(k), n_init=int(clustering.get("n_init", 4)), random_state=random_state
        ).fit_predict(model.reduce(X))
        order = np.argsort(-np.bincount(parts, minlength=k), kind="stable")
        numbers = np.empty(k, np.int64)
        numbers[order] = [c] + list(range(state.n_clusters, state.n_clusters + k - 1))
        new = copy_state(state)
        new.labels = state.labels.copy()
        new.labels[rows] = numbers[parts]
        new.n_clusters = state.n_clusters + k - 1
        new.confirmed.discard(c)
        made = [c] + list(range(state.n_clusters, new.n_clusters))
        text = f"split {state.folder(c)} into {k}: " + ", ".join(new.folder(x) for x in made)
        return self._commit(state, new, "split", text, made, [])

    def confirm(self, clusters: Any, confirmed: bool = True) -> EditResult:
        state = self.folder.state
        if isinstance(clusters, (str, int, np.integer)):
            clusters = [clusters]
        given = sorted({self.cluster(state, c) for c in clusters})
        new = copy_state(state)
        if confirmed:
            new.confirmed |= set(given)
        else:
            new.confirmed -= set(given)
        word = "confirmed" if confirmed else "no longer confirmed"
        text = f"{word} " + ", ".join(state.folder(c) for c in given)
        return self._commit(state, new, "confirm", text, given, [], refit=False)

    def resort(self, random_state: Any = None) -> EditResult:
        """Re-sort every image the person has not fixed (see :meth:`SortedFolder.resort`)."""
        state = self.folder.state
        rows = self.has_features(state.paths)
        paths = [p for p, r in zip(state.paths, rows) if r]
        fixed = np.array(
            [
                p in state.moved or int(c) in state.confirmed
                for p, c in zip(paths, state.labels[rows])
            ],
            bool,
        )
        if not fixed.any():
            raise UsageError(
                "nothing to learn from: move images or confirm clusters first, "
                "then re-sort the rest"
            )
        if random_state is None:
            random_state = (self.folder.record.clustering or {}).get("random_state")
        Z, _ = self.views(self.folder.model, paths)
        labels = state.labels.copy()
        labels[rows] = resort_labels(Z, state.labels[rows], fixed, random_state=random_state)
        changed = int(np.sum(labels != state.labels))
        new = copy_state(state)
        new.labels = labels
        text = f"re-sorted the rest: {changed} image{'s' if changed != 1 else ''} changed cluster"
        return self._commit(state, new, "resort", text, [], [])

    def place(self, rows: list) -> EditResult:
        """Add images placed into their clusters' folders (``assign --place``) as one edit.

        Parameters
        ----------
        rows : list of tuple
            ``(path, file, label, distance, outlier, stamp, source, hash)`` of
            each file made: its ``labels.csv`` path, its file relative to the
            folder, and the file's stamp, source stamp and content hash for
            the record.
        """
        state = self.folder.state
        new = copy_state(state)
        paths = [r[0] for r in rows]
        new.paths = state.paths + paths
        new.labels = np.concatenate([state.labels, np.array([r[2] for r in rows], np.int64)])
        new.distances = np.concatenate([state.distances, [float(r[3]) for r in rows]])
        new.outliers = np.concatenate([state.outliers, np.array([r[4] for r in rows], bool)])
        new.placed |= set(paths)
        made = {r[1]: [r[5], r[6], r[7]] for r in rows}
        text = f"placed {count(paths)}"
        counts = self.folder.record.counts or {}
        self.folder.record.counts = {**counts, "placed": counts.get("placed", 0) + len(rows)}
        clusters = sorted({int(r[2]) for r in rows})
        return self._commit(state, new, "place", text, clusters, paths, refit=False, made=made)

    def undo(self) -> EditResult:
        summary = self.journal.undo()
        return EditResult("undo", f"undid: {summary.get('message', '')}")

    def redo(self) -> EditResult:
        summary = self.journal.redo()
        return EditResult("redo", f"redid: {summary.get('message', '')}")

    # -- features and the model ---------------------------------------------
    def features(self, paths: list) -> np.ndarray:
        """Stored features of ``paths`` (read once from the sort's store, then kept).

        Images placed by ``assign --place`` are found in the store by their
        content; where they cannot be, they have no features here (see
        :meth:`has_features`) and keep the distance they were placed with.
        """
        if self._features is None:
            record = self.folder.record
            state = self.folder.state
            images = state.paths + state.set_aside
            every = [p for p in images if p not in state.placed]
            if not (record.image_dir and record.feature_settings):
                raise FeaturesUnavailableError(
                    "featclust.json does not say where the features are stored"
                )
            store = FeatureStore(record.image_dir, record.feature_settings, record.store_root)
            X = store.read_features(every)
            placed = [p for p in images if p in state.placed]
            if placed:
                files = state.files()
                copies = {p: str(self.folder.path / files[p]) for p in placed}
                try:
                    X = np.concatenate([X, store.read_features(placed, copies=copies)])
                    every += placed
                except FeaturesUnavailableError:
                    pass
            self._features = {"index": {p: i for i, p in enumerate(every)}, "X": X}
        return np.asarray(self._features["X"][self._rows(paths)], np.float32)

    def has_features(self, paths: list) -> np.ndarray:
        """Whether each of ``paths`` has features here (bool array)."""
        if self._features is None:
            self.features([])
        index = self._features["index"]  # type: ignore[index]
        return np.array([p in index for p in paths], bool)

    def _rows(self, paths: list) -> list:
        """Rows of ``paths`` in :meth:`features`' array (read first)."""
        if self._features is None:
            self.features([])
        index = self._features["index"]  # type: ignore[index]
        missing = [p for p in paths if p not in index]
        if missing:
            raise FeaturesUnavailableError(
                f"the feature store has no features of {missing[0]!r}; sort the folder again"
            )
        return [index[p] for p in paths]

    def views(self, model: Any, paths: list) -> tuple:
        """``paths``' features in the model's reduced space, and before the PCA (or ``None``).

        Both are computed once for every image of the sort and kept: an edit
        changes the centres, never the reduction.
        """
        rows = self._rows(paths)
        key = (self.folder.record.created, self.folder.record.store)
        if self._views is None or self._views[0] != key:
            X = self._features["X"]  # type: ignore[index]
            Z = model.reduce(X).astype(np.float64)
            F = None
            if model.feature_centers_ is not None:
                F = model.reducer_.prepare(X).astype(np.float64)
            self._views = (key, Z, F)
        _, Z, F = self._views
        return Z[rows], None if F is None else F[rows]

    def _commit(
        self,
        state: Curation,
        new: Curation,
        kind: str,
        text: str,
        clusters: list,
        images: list,
        refit: bool = True,
        order: np.ndarray | None = None,
        made: dict | None = None,
    ) -> EditResult:
        """Apply ``new`` as one transaction of the journal.

        ``made``: files made for the edit (a placement), relative path to
        ``[stamp, source, content hash]``; they enter the record, and undoing the edit moves
        them into the journal (redo brings them back). An edit that makes files
        is no person's edit (a sort may still replace the folder).
        """
        folder = self.folder
        record = folder.record
        model = folder.model
        if refit:
            model, new.distances, new.outliers = refit_model(self, model, new, state, order)
        new.edits = state.edits + (0 if made else 1)
        old_files, new_files = state.files(), new.files()
        owned = set(record.files)
        moves = [
            [old_files[p], new_files[p]]
            for p in new_files
            if p in old_files and old_files[p] != new_files[p] and old_files[p] in owned
        ]
        for _, dst in moves:
            if os.path.lexists(folder.path / dst):
                raise UnsafeOutputError(
                    f"{str(folder.path / dst)!r} exists and was not written by featclust; "
                    "refusing to overwrite it (move it away and run again)"
                )
        rows = cluster_table(new.labels, new.distances, new.n_clusters, outliers=new.outliers)
        names = [new.names.get(c, "") for c in range(new.n_clusters)]
        folders = [new.folder(c) for c in range(new.n_clusters)]
        buf = io.BytesIO()
        extra = {"feature_settings": record.feature_settings, "embedder": record.embedder}
        model.save(buf, extra=extra)
        files = {
            LABELS_CSV: labels_csv(new.paths, new.labels, new.distances, new.outliers).encode(
                "utf-8", "surrogateescape"
            ),
            CLUSTERS_CSV: clusters_csv(rows, folders, names).encode("utf-8", "surrogateescape"),
            MODEL_NPZ: buf.getvalue(),
        }
        renamed = dict(moves)
        made = made or {}
        kept = f"{JOURNAL_DIR}/made-{self.journal.position + 1:04d}"
        moves += [[f"{kept}/{rel}", rel] for rel in made]
        stamps = {**(record.stamps or {}), **recognised(folder.path, record, record.files)}
        counts = dict(record.counts or {})
        counts["cluster_sizes"] = [int(r["size"]) for r in rows]
        counts["set_aside"] = len(new.set_aside)
        target = dataclasses.replace(
            record,
            files=[renamed.get(f, f) for f in record.files] + list(made),
            stamps={
                **{renamed.get(f, f): s for f, s in stamps.items()},
                **{rel: m[0] for rel, m in made.items()},
            },
            sources={
                **{renamed.get(f, f): s for f, s in (record.sources or {}).items()},
                **{rel: m[1] for rel, m in made.items() if m[1] is not None},
            }
            or None,
            clustering={**(record.clustering or {}), "n_clusters": new.n_clusters},
            counts=counts,
            flags={f: [r["cluster"] for r in rows if f in r["flags"]] for f in FLAGS},
            curation=new.info(),
            hashes={
                **{renamed.get(f, f): h for f, h in (record.hashes or {}).items()},
                **{rel: m[2] for rel, m in made.items()},
            },
            status="complete",
        )
        summary = {"kind": kind, "message": text, "images": len(images)}

        self.journal.commit(moves, files, target, summary)
        folder.reload()
        return EditResult(kind, text, [tuple(m) for m in moves], clusters)


def _into_cluster(state: Curation, images: list, target: int) -> None:
    """Put ``images`` (in clusters or set aside) into cluster ``target``."""
    index = {p: i for i, p in enumerate(state.paths)}
    state.labels = state.labels.copy()
    back = [p for p in images if p not in index]
    for p in images:
        if p in index:
            state.labels[index[p]] = target
    if back:
        state.set_aside = [p for p in state.set_aside if p not in set(back)]
        state.paths = state.paths + back
        state.labels = np.concatenate([state.labels, np.full(len(back), target, np.int64)])
        state.distances = np.concatenate([state.distances, np.zeros(len(back))])
        state.outliers = np.concatenate([state.outliers, np.zeros(len(back), bool)])
