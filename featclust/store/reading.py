"""Reading the feature store: what is on disk, checking chunks, loading rows.

The reading half of :class:`featclust.store.FeatureStore` (a mixin it
inherits), kept apart so that each module has one job; it uses the
attributes :class:`~featclust.store.FeatureStore` sets up.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import images
from ..errors import FeaturesUnavailableError, StoreError, StoreLockedError
from ..fileio import content_hash
from ..images import BadFile, ImageFile
from .files import (
    _BAD_TYPES,
    _CHUNK,
    _DAMAGE,
    _ENTRY_TYPES,
    INDEX,
    MMAP_BYTES,
    STORE_FORMAT,
    _json_writer,
    _read_chunk_data,
    _read_chunk_meta,
    _read_json,
    _stat_of,
    _store_error,
    _valid,
    recorded_settings,
)

#: Files changed this close to the time they were hashed are hashed again.
RACY_NS = 2_000_000_000


def _trusted(entry, f):
    """Whether ``entry`` still describes file ``f`` without reading it.

    A bad file's entry has no hash: equal size, mtime, inode and ctime suffice.
    """
    if not (f.ino and f.ctime_ns) or any(entry[k] != v for k, v in _stat_of(f).items()):
        return False
    return "hashed_ns" not in entry or max(f.mtime_ns, f.ctime_ns) < entry["hashed_ns"] - RACY_NS


class StoreReading:
    """What :class:`featclust.store.FeatureStore` reads: state, chunks, index, rows."""

    # Set up by FeatureStore (core.py); declared here for the type checker.
    image_dir: str
    features_dir: Path
    rows_dir: Path
    path: Path
    dim: int
    problems: list[str]
    last_reused_by_hash: int
    _is_open: bool
    _rows: dict[str, tuple[str, int]]
    _chunks: dict[str, tuple[list[str], str]]
    _verified: set[str]
    _files: dict[str, dict]
    _bad: dict[str, dict]
    _pending: list
    _dirty: bool
    _since_ns: int
    _hashed: dict[str, str]
    flush: Callable[[], None]
    open: Callable[..., Any]
    _release: Callable[[], None]
    _locked_store: Callable[[], Any]
    _expected_settings: Callable[[], dict]

    def split(
        self,
        files: list[ImageFile],
    ) -> tuple[list[ImageFile], list[BadFile], list[ImageFile]]:
        """Which files have stored features, which are known bad, which are missing.

        A file whose index entry no longer matches (see the module's
        description) is read and hashed; if a row has that hash, it is served.
        Sets :attr:`last_reused_by_hash`.

        Parameters
        ----------
        files : list of featclust.images.ImageFile

        Returns
        -------
        cached : list of ImageFile
        bad : list of featclust.images.BadFile
            Files that failed before and have not changed since.
        missing : list of ImageFile
            Files to embed.
        """
        self._since_ns = now = time.time_ns()
        # path -> (hash, new index entry or None)
        found: dict[str, tuple[str | None, dict | None]] = {}
        bad = []
        for f in files:
            entry = self._files.get(f.path)
            if entry is not None and _trusted(entry, f):
                found[f.path] = (entry["hash"], None)
                continue
            known = self._bad.get(f.path)
            if known is not None and _trusted(known, f):
                bad.append(images.BadFile(f.path, known["reason"]))
                continue
            if not self._rows:
                continue  # no row to find: nothing worth reading
            try:
                _, read_hash = images.read_bytes(f)
            except images.BadImageError:
                continue
            found[f.path] = (read_hash, {**_stat_of(f), "hash": read_hash, "hashed_ns": now})
        self._verify({self._rows[h][0] for h, _ in found.values() if h in self._rows})
        self._hashed = {p: h for p, (h, _) in found.items() if h is not None}
        cached, missing = [], []
        bad_paths = {b.path for b in bad}
        self.last_reused_by_hash = 0
        for f in files:
            if f.path in bad_paths:
                continue
            digest, entry = found.get(f.path, (None, None))
            if digest is None or digest not in self._rows:
                missing.append(f)
                continue
            cached.append(f)
            if entry is not None:
                old = self._files.get(f.path)
                if old is None or old["hash"] != digest:
                    self.last_reused_by_hash += 1
                self._files[f.path] = entry
                self._bad.pop(f.path, None)
                self._dirty = True
        return cached, bad, missing

    def state(self) -> str:
        """What is on disk for this folder, found without opening or changing anything.

        Returns
        -------
        {"ready", "missing", "damaged", "other"}
            ``"ready"``: settings of this store and an index of this folder;
            ``"missing"``: no store, or no index of this folder;
            ``"damaged"``: the settings or the index are unreadable, or
            features lie there without settings (that their chunks do not
            record either); ``"other"``: written by
            another featclust version or with other settings. :meth:`open`
            empties a store in state ``"other"`` or ``"damaged"``.
        """
        found, error = _read_json(self.features_dir / "settings.json")
        if error is not None:
            return "damaged"
        if found is None:  # lost: the chunks' records say what it was (recovered by open())
            found, n_chunks = recorded_settings(self.rows_dir)
            if not n_chunks:
                return "missing"
            if found is None:
                return "damaged"
        if found != self._expected_settings():
            return "other"
        index, error = _read_json(self.path / INDEX)
        if error is not None:
            return "damaged"
        if index is None:
            return "missing"
        if not isinstance(index, dict) or index.get("store_format") != STORE_FORMAT:
            return "damaged"
        return "ready" if index.get("image_dir") == self.image_dir else "other"

    def _check_settings(self):
        expected = self._expected_settings()
        path = self.features_dir / "settings.json"
        found, error = _read_json(path)
        if found == expected:
            return
        if error is not None:
            self.problems.append(f"settings.json is damaged ({error}); store emptied and rebuilt")
        elif found is not None:
            self.problems.append(
                "store written by another featclust version or with other "
                "settings; store emptied and rebuilt"
            )
        elif self.rows_dir.is_dir() and any(_CHUNK.match(n) for n in os.listdir(self.rows_dir)):
            recorded, n_chunks = recorded_settings(self.rows_dir)
            if recorded == expected:
                self._write(path, _json_writer(expected))
                self.problems.append(
                    f"settings.json was missing; recovered from the records of its {n_chunks} "
                    "chunks"
                )
                return
            if recorded is None:
                raise StoreError(
                    f"feature store {str(self.features_dir)!r} has features but no "
                    "settings.json, and its chunks do not record their settings (written by "
                    "an older featclust): put its settings.json back, or delete that folder "
                    "to embed again every image folder it served"
                )
            self.problems.append(
                "store has features of other settings but no settings.json; store emptied "
                "and rebuilt"
            )
        try:
            if self.rows_dir.exists():
                shutil.rmtree(self.rows_dir)
        except OSError as e:
            raise StoreError(
                f"cannot empty feature store {str(self.features_dir)!r}: {e.strerror or e}"
            ) from None
        self._write(path, _json_writer(expected))

    def _read_chunks(self, readonly):
        names = sorted(os.listdir(self.rows_dir))
        for cid in [m.group(1) for m in map(_CHUNK.match, names) if m]:
            try:
                hashes, digest = _read_chunk_meta(self.rows_dir, cid)
            except _DAMAGE as e:
                if not readonly:
                    self.problems.append(
                        f"chunk {cid} is damaged ({e}); its images are embedded again"
                    )
                    self._delete_chunk(cid)
                continue
            self._chunks[cid] = (hashes, digest)
            for i, h in enumerate(hashes):
                self._rows.setdefault(h, (cid, i))

    def _read_index(self, readonly):
        if not readonly:
            for name in os.listdir(self.path):
                if name.startswith(".") and name.endswith(".tmp"):
                    self._remove(self.path / name)
        index, error = _read_json(self.path / INDEX)
        if index is None and error is None:
            return
        try:
            if error is not None:
                raise error
            if not isinstance(index, dict) or index.get("store_format") != STORE_FORMAT:
                raise ValueError("unexpected content")
            files, bad = index["files"], index["bad"]
            if (
                index["image_dir"] != self.image_dir
                or not all(isinstance(p, str) and _valid(e, _ENTRY_TYPES) for p, e in files.items())
                or not all(isinstance(p, str) and _valid(e, _BAD_TYPES) for p, e in bad.items())
            ):
                raise ValueError("unexpected entries")
        except _DAMAGE as e:
            self.problems.append(
                f"the index of this folder is damaged ({e}); its images are hashed again"
            )
            self._dirty = True
            return
        self._files, self._bad = files, bad

    def _remove(self, path):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(
                f"cannot clean feature store {str(self.features_dir)!r}: {e.strerror or e}"
            ) from None

    def _delete_chunk(self, cid):
        for suffix in (".json", ".npy"):
            self._remove(self.rows_dir / f"chunk-{cid}{suffix}")

    def _verify(self, cids, repair=True):
        """Check the chunks ``cids`` against their hashes; a damaged one is dropped.

        Returns the damaged chunks' ids and errors.
        """
        damaged = []
        for cid in sorted(set(cids) - self._verified):
            hashes, digest = self._chunks[cid]
            try:
                _read_chunk_data(self.rows_dir, cid, hashes, digest, self.dim)
            except _DAMAGE as e:
                damaged.append((cid, e))
            else:
                self._verified.add(cid)
        for cid, _error in damaged:
            hashes, _ = self._chunks.pop(cid)
            for h in hashes:
                if self._rows.get(h, (None,))[0] == cid:
                    del self._rows[h]
        if damaged and repair:
            with self._locked_store():
                for cid, error in damaged:
                    self.problems.append(
                        f"chunk {cid} is damaged ({error}); its images are embedded again"
                    )
                    self._delete_chunk(cid)
        return damaged

    # -- reading -------------------------------------------------------------
    def _locate(self, paths):
        """``(chunk id, row)`` of each path's row; raises :class:`StoreError` for one without."""
        out = []
        for p in paths:
            entry = self._files.get(p)
            loc = self._rows.get(entry["hash"]) if entry is not None else None
            if loc is None:
                raise StoreError(
                    f"feature store {str(self.path)!r} has no features of {p!r}; "
                    "run again to embed it"
                )
            out.append(loc)
        return out

    def load(self, paths: Sequence[str], mmap: bool | None = None) -> np.ndarray:
        """Stored features of ``paths``, in that order.

        Parameters
        ----------
        paths : list of str
            Relative paths, each with a row (see :meth:`split`).
        mmap : bool or None
            With ``True`` the matrix is written, chunk by chunk, to a nameless
            temporary file in :attr:`path` and returned memory-mapped
            (read-only), so it never has to fit in memory; the file goes
            when the array does. ``None``: ``True`` for a matrix larger than
            :data:`MMAP_BYTES`.

        Returns
        -------
        numpy.ndarray
            ``(len(paths), dim)`` float32 (a :class:`numpy.memmap` when mapped).
        """
        self.flush()
        shape = (len(paths), self.dim)
        if mmap is None:
            mmap = shape[0] * shape[1] * 4 > MMAP_BYTES
        by_chunk: dict[str, tuple[list[int], list[int]]] = {}
        for j, (cid, i) in enumerate(self._locate(paths)):
            dst, src = by_chunk.setdefault(cid, ([], []))
            dst.append(j)
            src.append(i)
        if not mmap or not paths:
            out = np.empty(shape, np.float32)
            for cid, (dst, src) in by_chunk.items():
                out[dst] = self._load_chunk(cid)[src]
            return out
        row_bytes = self.dim * 4
        try:
            with tempfile.TemporaryFile(dir=self.path, prefix=".matrix-") as fh:
                fh.truncate(shape[0] * row_bytes)
                for cid, (dst, src) in by_chunk.items():
                    feats = self._load_chunk(cid)
                    for j, i in zip(dst, src):
                        fh.seek(j * row_bytes)
                        fh.write(feats[i].tobytes())
                fh.flush()
                return np.memmap(fh, np.float32, "r", shape=shape)
        except OSError as e:
            raise _store_error(self.path, e) from None

    def _load_chunk(self, cid):
        try:
            return np.load(self.rows_dir / f"chunk-{cid}.npy")
        except (OSError, ValueError) as e:
            raise StoreError(
                f"feature store {str(self.features_dir)!r} was changed while in "
                f"use ({e}); run again to rebuild it"
            ) from None

    def hashes(self, paths: Sequence[str]) -> list[str]:
        """Content hash of each path's row (equal hashes: byte-identical files).

        Parameters
        ----------
        paths : list of str
            Relative paths known to this folder's index.

        Returns
        -------
        list of str
        """
        if not self._is_open:
            index, _ = _read_json(self.path / INDEX)
            files = index.get("files", {}) if isinstance(index, dict) else {}
        else:
            files = self._files
        try:
            return [files[p]["hash"] for p in paths]
        except (KeyError, TypeError):
            raise StoreError(
                f"feature store {str(self.path)!r} does not know all of the "
                "given images; run the folder again"
            ) from None

    def __contains__(self, path):
        entry = self._files.get(path)
        return entry is not None and entry["hash"] in self._rows

    def __len__(self):
        return sum(e["hash"] in self._rows for e in self._files.values())

    def read_features(
        self, paths: Sequence[str], copies: dict[str, str] | None = None
    ) -> np.ndarray:
        """Stored features of ``paths``, for a reader that must not change the store.

        The state is checked first, so a store of other settings is never
        emptied; the store is opened (locked) only to read, and nothing is
        repaired. Rows are served as stored, whether or not the image files
        changed since.

        Parameters
        ----------
        paths : list of str
            Relative image paths.
        copies : dict of str to str, optional
            For paths this folder's index may not know (images placed into a
            sorted folder from elsewhere): the path -> a file with its bytes,
            read and hashed to find its row by content. Nothing is recorded.

        Returns
        -------
        numpy.ndarray
            ``(len(paths), dim)`` float32 (see :meth:`load`).

        Raises
        ------
        FeaturesUnavailableError
            Saying in words why: the store is gone, holds other settings, is
            damaged, lacks some of the rows, or is in use by another run.
        """
        where = f"the feature store {str(self.path)!r}"
        state = self.state()
        if state != "ready":
            raise FeaturesUnavailableError(
                where
                + {
                    "missing": " no longer exists (sort the folder again to rebuild it)",
                    "other": " now holds features made with other settings or for another folder",
                    "damaged": " is damaged (its settings or index cannot be read); sort the "
                    "folder again to rebuild it",
                }[state]
            )
        try:
            self.open(readonly=True)
        except StoreLockedError:
            raise FeaturesUnavailableError(
                f"{where} is in use by another featclust run; try again when it has finished"
            ) from None
        except StoreError as e:
            raise FeaturesUnavailableError(str(e)) from None
        try:
            for p in paths:
                if copies is not None and p in copies and p not in self:
                    try:
                        with open(copies[p], "rb") as fh:
                            digest = content_hash(fh.read())
                    except OSError:
                        continue
                    if digest in self._rows:
                        self._files[p] = {"hash": digest}  # in memory only, never written
            missing = sum(p not in self for p in paths)
            if not missing:
                located = self._locate(paths)
                damaged = self._verify({cid for cid, _ in located}, repair=False)
                missing = sum(p not in self for p in paths)
                if damaged:
                    raise FeaturesUnavailableError(
                        f"{where} is damaged (chunk {damaged[0][0]}: {damaged[0][1]}); sort the "
                        "folder again to rebuild it"
                    )
            if missing:
                raise FeaturesUnavailableError(
                    f"{where} no longer holds the features of {missing} of the {len(paths)} "
                    "images (the image folder changed since the sort; sort it again)"
                )
            return self.load(paths)
        finally:
            self._pending = []
            self._dirty = False
            self._release()
