"""The feature store: features found by the image's content, never served stale.

The owner of the store's rules (this module), its files
(:mod:`featclust.store.files`: layout, chunk files, index files, locks), its
reading (:mod:`featclust.store.reading`) and garbage collection
(:mod:`featclust.store.cleanup`).

Guarantees:

* **Found by content.** A row belongs to the content hash (BLAKE2b-128) of
  the bytes that were embedded, not to a path: for the same settings, an
  image is embedded once whatever folder or name it has (a renamed or moved
  folder, ``sort``'s copies and links, images in several folders); files of
  equal content in one run are hashed before decoding and embedded once
  (:mod:`featclust.store.copies`).
* **Never stale.** A folder's index entry is trusted only while the file's
  size, mtime, inode number and change time (which no user tool can set back)
  all equal what was recorded, and the file had not been changed for
  :data:`RACY_NS` when it was hashed; otherwise (or when the caller does not
  know ``ino``/``ctime_ns``) the file is read and hashed again and served the
  row of its new hash, embedded only when no row has it. A re-run of an
  unchanged folder only stats its files.
* **Crash safe.** A chunk's ``.npy`` is written first (temporary file and
  :func:`os.replace`), its ``.json`` commits it with the ``.npy``'s hash, so
  a crash leaves only whole chunks; leftovers are removed when the store is
  opened. A damaged chunk, or one whose name (a hash of its content) does
  not match it, is detected when a run first uses it, reported in
  :attr:`FeatureStore.problems`, deleted, and its images embedded again.
  Each chunk records ``settings.json``'s content, from which a lost
  ``settings.json`` is recovered. A folder's index is rewritten atomically; when it is lost or
  damaged, the folder's files are hashed again and nothing is embedded again.
* **Concurrent runs.** A run holds its folder's lock from :meth:`FeatureStore.open`
  to :meth:`FeatureStore.close` (a second run on the same folder is refused);
  chunks are written, deleted and collected under the settings store's lock,
  and chunk names are unique, so runs on different folders share the rows.
* **Freeing space.** A run never deletes rows (another folder may use them);
  :func:`gc` drops the rows no readable index references, never while an
  index cannot be read, and forgets folders that no longer exist only when
  asked (``forget_gone``).
* **Versions.** ``settings.json`` records :data:`STORE_FORMAT`: a store of
  another format or other settings is emptied, never read. Stores of the
  format-2 layout (``ROOT/<folder>-<hash>/<settings hash>/``) are never read;
  :func:`gc` deletes them.

:meth:`FeatureStore.update` is the one loop that fills a store (on a Dask
cluster, :func:`featclust.distributed.update_store` fills it through
:meth:`FeatureStore.commit_written`); :meth:`FeatureStore.read_features`
reads one back without ever changing it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import images
from ..errors import StoreError, StoreLockedError
from ..fileio import atomic_write, content_hash
from ..images import BadFile, ImageFile
from ..tables import bad_files_csv
from .copies import distinct, with_copies
from .files import (
    INDEX,
    LOCK_WAIT_S,
    STORE_FORMAT,
    _bytes_writer,
    _chunk_files,
    _chunk_size,
    _clean_leftovers,
    _folder_id,
    _json_writer,
    _Lock,
    _stat_of,
    _store_error,
    check_root,
    commit_chunk,
    settings_key,
)
from .reading import StoreReading


class FeatureStore(StoreReading):
    """Features of one image folder under one set of feature settings.

    Rows are shared with every other folder of the same settings (see the
    module's description); this object holds the folder's index.

    Parameters
    ----------
    image_dir : path-like
        The image folder the paths are relative to.
    settings : dict
        Everything that determines the features (see
        :meth:`featclust.embed.Embedder.settings`); ``settings["dim"]`` is the
        feature length.
    root : path-like, optional
        Store root; default :func:`default_root` (checked with :func:`check_root`).
    chunk_size : int, optional
        Rows per chunk file; default :data:`CHUNK_SIZE`, or the environment
        variable ``FEATCLUST_CHUNK_SIZE``.
    loose : bool, default False
        ``image_dir`` only holds loose files given one by one (query images),
        it is not scanned: the store may lie inside it.

    Attributes
    ----------
    path : pathlib.Path
        The folder's own part of the store: its index, ``bad_files.csv`` and
        lock (``ROOT/features-<settings>/folders/<folder>/``).
    features_dir : pathlib.Path
        The store of these settings, whose ``rows/`` every folder shares.
    problems : list of str
        What :meth:`open` and :meth:`update` found damaged and repaired, in
        words for the user.
    last_reused_by_hash : int
        Files the last :meth:`update` served a row found by content, not by
        this folder's own index (copies, moved or renamed images).
    """

    def __init__(self, image_dir, settings, root=None, chunk_size=None, *, loose=False):
        self.image_dir = os.path.realpath(image_dir)
        self.settings = dict(settings)
        self.root = check_root(root, () if loose else (self.image_dir,))
        self.features_dir = self.root / f"features-{settings_key(self.settings)}"
        self.rows_dir = self.features_dir / "rows"
        self.path = self.features_dir / "folders" / _folder_id(self.image_dir)
        self.dim = int(settings["dim"])
        self.chunk_size = _chunk_size(chunk_size)
        self.problems = []
        self.last_reused_by_hash = 0
        self._store_lock = _Lock(self.features_dir / "lock")
        self._folder_lock = _Lock(self.path / "lock", record_pid=True)
        self._is_open = False
        self._reset()

    def _reset(self):
        self._rows = {}  # content hash -> (chunk id, row)
        self._chunks = {}  # chunk id -> (hashes, digest of the .npy)
        self._verified = set()
        self._files = {}  # relative path -> index entry
        self._bad = {}
        self._pending = []  # (hash, vector)
        self._hashed = {}  # relative path -> content hash, of the last split
        self._dirty = False
        self._since_ns = time.time_ns()

    # -- opening and locking -------------------------------------------------
    def open(self, readonly: bool = False) -> FeatureStore:
        """Take the folder's lock and read the store.

        Parameters
        ----------
        readonly : bool
            Repair nothing (no leftovers removed, no store emptied); for
            :meth:`read_features`.

        Raises
        ------
        StoreLockedError
            If another run uses this folder's store.
        StoreError
            If the store cannot be created or written.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            marker = self.root / images.STORE_MARKER
            if not marker.exists():
                atomic_write(marker, _json_writer({"featclust_store": STORE_FORMAT}))
        except OSError as e:
            raise _store_error(self.path, e) from None
        try:
            got = self._folder_lock.acquire(0)
        except OSError as e:
            raise _store_error(self.path, e) from None
        if not got:
            raise StoreLockedError(
                f"feature store {str(self.path)!r} is in use by another featclust run"
                f"{self._folder_lock.holder()}; wait for it to finish"
            )
        self._reset()
        try:
            with self._locked_store():
                if self.rows_dir.exists() and not self.rows_dir.is_dir():
                    raise StoreError(
                        f"feature store {str(self.features_dir)!r} is damaged: "
                        f"{str(self.rows_dir)!r} is a file, not a folder; move it away "
                        "(or delete it) and run again"
                    )
                if not readonly:
                    self._check_settings()
                    _clean_leftovers(self.rows_dir)
                self.rows_dir.mkdir(exist_ok=True)
                self._read_chunks(readonly)
            self._read_index(readonly)
        except BaseException:
            self._folder_lock.release()
            raise
        self._is_open = True
        return self

    def close(self) -> None:
        """Write pending rows and the folder's index, and release the lock."""
        if not self._is_open:
            return
        try:
            self.flush()
        finally:
            self._release()

    def _release(self):
        self._is_open = False
        self._folder_lock.release()

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return
        # Keep the rows computed so far, even on Ctrl-C; the error that got us
        # here is the one to report, not a second one while saving.
        try:
            self.flush()
        except Exception:
            self._pending = []
        self._release()

    @contextlib.contextmanager
    def _locked_store(self):
        try:
            got = self._store_lock.acquire(LOCK_WAIT_S)
        except OSError as e:
            raise _store_error(self.features_dir, e) from None
        if not got:
            raise StoreLockedError(
                f"feature store {str(self.features_dir)!r} was held by another featclust run "
                f"(writing, or collecting garbage) for {LOCK_WAIT_S} s; try again later"
            )
        try:
            yield
        finally:
            self._store_lock.release()

    def _expected_settings(self):
        return {"store_format": STORE_FORMAT, "settings": self.settings}

    def _write(self, path, write, mode="wb"):
        try:
            atomic_write(path, write, mode)
        except OSError as e:
            raise _store_error(self.features_dir, e) from None

    # -- writing -------------------------------------------------------------
    def add(self, good: list[tuple[ImageFile, str]], features: np.ndarray) -> None:
        """Record rows; whole chunks are written as soon as they fill.

        A row whose content hash is already stored is not stored twice.

        Parameters
        ----------
        good : list of (ImageFile, str)
            Files and the content hashes of the bytes that were embedded.
        features : numpy.ndarray
            ``(len(good), dim)``.
        """
        queued = {h for h, _ in self._pending}
        for (f, digest), vec in zip(good, features):
            self._files[f.path] = {**_stat_of(f), "hash": digest, "hashed_ns": self._since_ns}
            self._bad.pop(f.path, None)
            self._dirty = True
            if digest not in self._rows and digest not in queued:
                self._pending.append((digest, np.asarray(vec, np.float32)))
                queued.add(digest)
        while len(self._pending) >= self.chunk_size:
            self._write_chunk(self._pending[: self.chunk_size])
            del self._pending[: self.chunk_size]

    def add_bad(self, files_by_path: dict[str, ImageFile], bad: list[BadFile]) -> None:
        """Remember files that failed to decode, with their size, mtime, inode and ctime.

        They are not decoded again until they change. Files that could not be
        read at all (no permission, I/O error) are tried again on every run.
        """
        for b in bad:
            f = files_by_path.get(b.path)
            if f is None:
                continue
            self._files.pop(b.path, None)  # an older version of it is no longer current
            self._dirty = True
            if not b.reason.startswith(images.READ_FAILURE):
                self._bad[b.path] = {**_stat_of(f), "reason": b.reason}

    def update(
        self,
        files: list[ImageFile],
        embed_files: Callable[..., Any],
        progress: Callable[..., Any] | None = None,
    ) -> tuple[list[ImageFile], list[BadFile], int]:
        """Embed the files that have no row yet and store their features.

        The one loop that fills a store. Rows are written chunk by chunk as
        they come, so an interrupted update keeps what it computed. Index
        entries of files not in ``files`` are kept (see :meth:`finish`).
        :attr:`last_reused_by_hash` counts the files served by content.
        Files of equal content are hashed before decoding and only one of
        them is embedded (:mod:`featclust.store.copies`): the others are
        served its row, and counted as served.

        Parameters
        ----------
        files : list of featclust.images.ImageFile
        embed_files : callable
            ``embed_files(missing)`` for the list of files to embed returns an
            iterator of ``(good, features, bad)`` batches, as
            :func:`featclust.decoding.iter_features` bound to an embedder
            (``functools.partial(iter_features, embedder=embedder)``).
        progress : callable, optional
            ``progress(description, total)`` returning an object with
            ``update(n)`` and ``close()`` (a ``tqdm`` does); called only when
            something is embedded.

        Returns
        -------
        cached : list of ImageFile
            Files served from the store (by this folder's index or by
            content, copies of a file embedded now included).
        bad : list of featclust.images.BadFile
            Files known to be undecodable, then those that failed now.
        n_embedded : int
            Files embedded now (one per distinct content).

        Raises
        ------
        StoreError
            If the store is not open, or cannot be written.
        """
        if not self._is_open:
            raise StoreError(
                f"feature store {str(self.path)!r} is not open; open it (or use "
                "it in a with statement) before updating it"
            )
        cached, bad, missing = self.split(files)
        n_embedded = 0
        if not missing:
            return cached, bad, n_embedded
        bar = progress("embedding", len(missing)) if progress else None
        by_path = {f.path: f for f in missing}
        firsts, copies = distinct(missing, self._hashed)
        again: list[ImageFile] = []
        try:
            for todo in (firsts, again):
                if not todo:
                    continue
                for good, feats, failed, n_copies in with_copies(embed_files(todo), copies, again):
                    self.add(good, feats)
                    self.add_bad(by_path, failed)
                    bad.extend(failed)
                    n_embedded += len(good) - n_copies
                    cached.extend(f for f, _ in good[len(good) - n_copies :])
                    self.last_reused_by_hash += n_copies
                    if bar:
                        bar.update(len(good) + len(failed))
        finally:
            if bar:
                bar.close()
        return cached, bad, n_embedded

    def flush(self) -> None:
        """Write queued rows as a (possibly short) chunk, then the folder's index."""
        if self._pending:
            self._write_chunk(self._pending)
            self._pending = []
        if self._dirty:
            self._write(
                self.path / INDEX,
                _json_writer(
                    {
                        "store_format": STORE_FORMAT,
                        "image_dir": self.image_dir,
                        "files": self._files,
                        "bad": self._bad,
                    }
                ),
            )
            self._dirty = False

    def _write_chunk(self, items):
        hashes = [h for h, _ in items]
        cid, data, meta = _chunk_files(
            hashes, np.stack([v for _, v in items]), self._expected_settings()
        )
        with self._locked_store():
            self._write(self.rows_dir / f"chunk-{cid}.npy", _bytes_writer(data))
            self._write(self.rows_dir / f"chunk-{cid}.json", _bytes_writer(meta))
        self._chunks[cid] = (hashes, content_hash(data))
        self._verified.add(cid)
        for i, h in enumerate(hashes):
            self._rows.setdefault(h, (cid, i))

    def commit_written(
        self, cid: str, hashes: list[str], digest: str, good: list[tuple[ImageFile, str]]
    ) -> bool:
        """Commit a chunk another process wrote (:func:`featclust.store.write_chunk_npy`).

        Its ``.npy`` is checked against ``digest`` under the store's lock
        and committed; then ``good`` is recorded in the folder's index.

        Parameters
        ----------
        cid, digest : str
            What :func:`~featclust.store.write_chunk_npy` returned.
        hashes : list of str
            The content hash of each row of the chunk.
        good : list of (ImageFile, str)
            Files and the content hashes of the bytes that were embedded.

        Returns
        -------
        bool
            ``False`` when the ``.npy`` is missing or damaged: nothing is
            recorded and its files must be embedded again.
        """
        if cid not in self._chunks:
            with self._locked_store():
                try:
                    ok = commit_chunk(
                        self.rows_dir, cid, hashes, digest, self.dim, self._expected_settings()
                    )
                except OSError as e:
                    raise _store_error(self.features_dir, e) from None
            if not ok:
                return False
            self._chunks[cid] = (list(hashes), digest)
            self._verified.add(cid)
            for i, h in enumerate(hashes):
                self._rows.setdefault(h, (cid, i))
        for f, h in good:
            self._files[f.path] = {**_stat_of(f), "hash": h, "hashed_ns": self._since_ns}
            self._bad.pop(f.path, None)
            self._dirty = True
        return True

    def finish(self, files: list[ImageFile], bad_files: list[BadFile] | None = None) -> int:
        """Write what is queued; forget the files not in ``files``; write ``bad_files.csv``.

        Rows are not deleted (another folder may use them): :func:`gc` frees
        the rows no folder references any more.

        Parameters
        ----------
        files : list of featclust.images.ImageFile
            Every file now in the folder.
        bad_files : list of featclust.images.BadFile, optional
            Everything this run skipped, for ``bad_files.csv``; default: the
            files remembered as undecodable.

        Returns
        -------
        int
            Number of paths forgotten.
        """
        live = {f.path for f in files}
        gone = [p for p in self._files if p not in live]
        for p in gone:
            del self._files[p]
        bad = {p: v for p, v in self._bad.items() if p in live}
        self._dirty = self._dirty or bool(gone) or len(bad) != len(self._bad)
        self._bad = bad
        self.flush()
        if bad_files is None:
            bad_files = [images.BadFile(p, v["reason"]) for p, v in self._bad.items()]
        self._write(self.path / "bad_files.csv", lambda fh: fh.write(bad_files_csv(bad_files)), "w")
        return len(gone)
