"""The feature store: features found by the image's content, never served stale.

This module is longer than the others (about 1100 lines, half of them
docstrings) because it is the single owner of the store's file format:
layout, chunk commit, locking, repair, the rules for serving a row and
garbage collection live together so that no other module writes or reads a
store's files.

Layout::

    ROOT/featclust-store.json                  marker, so scans skip the store
    ROOT/features-<hash of settings>/          one store per feature settings
        settings.json                          store format and the settings
        lock                                   held while chunks are written or deleted
        rows/chunk-<id>.npy                    features, float32 (rows, dim)
        rows/chunk-<id>.json                   content hash of each row, hash of the .npy
        folders/<name>-<hash of its path>/     one per image folder (FeatureStore.path)
            index.json                         path -> size, mtime_ns, ino, ctime_ns, hash
            bad_files.csv                      every file the last run skipped
            lock, lock.pid                     held while a run uses the folder

Guarantees:

* **Found by content.** A row belongs to the content hash (BLAKE2b-128) of
  the bytes that were embedded, not to a path: for the same settings, an
  image is embedded once whatever folder or name it has (a renamed or moved
  folder, ``sort``'s copies and links, images in several folders).
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
  opened. A damaged chunk is detected by that hash when a run first uses it,
  reported in :attr:`FeatureStore.problems`, deleted, and its images embedded
  again. A folder's index is rewritten atomically; when it is lost or
  damaged, the folder's files are hashed again and nothing is embedded again.
* **Concurrent runs.** A run holds its folder's lock from :meth:`FeatureStore.open`
  to :meth:`FeatureStore.close` (a second run on the same folder is refused);
  chunks are written, deleted and collected under the settings store's lock,
  and chunk names are unique, so runs on different folders share the rows.
* **Freeing space.** A run never deletes rows (another folder may use them);
  :func:`gc` drops the rows no existing folder's index references, and
  forgets folders that no longer exist.
* **Versions.** ``settings.json`` records :data:`STORE_FORMAT`: a store of
  another format or other settings is emptied, never read. Stores of the
  format-2 layout (``ROOT/<folder>-<hash>/<settings hash>/``) are never read;
  :func:`gc` deletes them.

:meth:`FeatureStore.update` is the one loop that fills a store;
:meth:`FeatureStore.read_features` reads one back without ever changing it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import filelock
import numpy as np
import platformdirs

from . import images
from .checks import check_int
from .errors import FeaturesUnavailableError, StoreError, StoreLockedError, UsageError
from .fileio import atomic_write, content_hash, inside, json_bytes
from .tables import bad_files_csv

STORE_FORMAT = 3
#: Files changed this close to the time they were hashed are hashed again.
RACY_NS = 2_000_000_000
#: Rows per chunk file: at most this many images are embedded again after a
#: crash. The environment variable ``FEATCLUST_CHUNK_SIZE`` overrides it.
CHUNK_SIZE = 256
#: Seconds a run waits for another one writing a chunk, or for :func:`gc`.
LOCK_WAIT_S = 60
#: :meth:`FeatureStore.load` memory-maps a feature matrix larger than this.
MMAP_BYTES = 256 << 20
INDEX = "index.json"
_CHUNK = re.compile(r"^chunk-([0-9a-f]{16})\.json$")
_CHUNK_NPY = re.compile(r"^chunk-([0-9a-f]{16})\.npy$")
_STAT = ("size", "mtime_ns", "ino", "ctime_ns")
_ENTRY_TYPES = {**dict.fromkeys(_STAT, int), "hash": str, "hashed_ns": int}
_BAD_TYPES = {**dict.fromkeys(_STAT, int), "reason": str}
_OLD_FOLDER = re.compile(r"^.+-[0-9a-f]{12}$")
_OLD_STORE = re.compile(r"^[0-9a-f]{16}$")
_OLD_CHUNK = re.compile(r"^chunk-\d{6}\.json$")
_OLD_FILE = re.compile(r"^(chunk-\d{6}\.(npy|json)|settings\.json|bad\.json|bad_files\.csv|lock"
                       r"|\..*\.tmp)$")
_DAMAGE = (OSError, ValueError, KeyError, TypeError, AttributeError)


def default_root():
    """The default store root: ``featclust/store`` in the user's cache folder.

    ``$XDG_CACHE_HOME/featclust/store`` where ``XDG_CACHE_HOME`` is set, else
    :func:`platformdirs.user_cache_dir` (``~/.cache`` on Linux,
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows).
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "featclust" / "store"
    return Path(platformdirs.user_cache_dir("featclust", appauthor=False)) / "store"


def check_root(root, image_dirs=(), name="store"):
    """The store root to use, refused when it cannot work.

    Parameters
    ----------
    root : path-like or None
        ``None``: :func:`default_root`.
    image_dirs : iterable of path-like
        Image folders the store must lie outside of (nothing in an image
        folder is ever changed).
    name : str
        The parameter's name, for the message.

    Returns
    -------
    pathlib.Path
        Absolute.

    Raises
    ------
    UsageError
        If ``root`` is empty, is a file, cannot be created (a file on its
        way), or lies inside (or is) one of ``image_dirs``.
    """
    if root is None:
        root = default_root()
    if not isinstance(root, (str, os.PathLike)):
        raise UsageError(f"{name}={root!r} must be a folder path or None")
    text = os.fsdecode(os.fspath(root))
    if not text.strip():
        raise UsageError(f"{name}={root!r} is empty; give a folder, or None for the default "
                         f"({str(default_root())!r})")
    real = os.path.realpath(text)
    if os.path.exists(real) and not os.path.isdir(real):
        raise UsageError(f"{name}={text!r} exists and is not a folder")
    above = Path(real)
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not os.path.isdir(above):
        raise UsageError(f"{name}={text!r} cannot be created: {str(above)!r} is not a folder")
    for image_dir in image_dirs:
        if inside(real, os.path.realpath(image_dir)):
            raise UsageError(f"{name}={text!r} is inside the image folder {str(image_dir)!r}; "
                             "nothing in the image folder is ever changed, so the store must "
                             "lie outside it")
    return Path(os.path.abspath(text))


def settings_key(settings):
    """Short stable hash of a settings dict."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _folder_id(image_dir):
    real = os.path.realpath(image_dir)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(real))[:40] or "root"
    return f"{name}-{hashlib.sha256(os.fsencode(real)).hexdigest()[:12]}"


def features_path(settings, root=None):
    """The store of all features made with ``settings`` (rows of every folder)."""
    return check_root(root) / f"features-{settings_key(settings)}"


def store_path(image_dir, settings, root=None):
    """The folder's own part of the store (:attr:`FeatureStore.path`)."""
    return features_path(settings, root) / "folders" / _folder_id(image_dir)


def _json_writer(obj):
    return _bytes_writer(json_bytes(obj))


def _bytes_writer(data):
    return lambda fh: fh.write(data)


def _read_json(path):
    """``(object, None)``, ``(None, None)`` without a file, ``(None, error)``."""
    try:
        return json.loads(Path(path).read_text(encoding="ascii")), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:
        return None, e


def _chunk_size(chunk_size):
    if chunk_size is None:
        text = os.environ.get("FEATCLUST_CHUNK_SIZE")
        if text is None:
            return CHUNK_SIZE
        try:
            chunk_size = int(text)
        except ValueError:
            chunk_size = 0
        if chunk_size < 1:
            raise UsageError(f"FEATCLUST_CHUNK_SIZE={text!r} must be a positive integer")
    return check_int("chunk_size", chunk_size)


def _valid(entry, types):
    return (isinstance(entry, dict) and set(entry) == set(types)
            and all(isinstance(entry[k], t) and not isinstance(entry[k], bool)
                    for k, t in types.items()))


def _store_error(path, e):
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"disk full while writing the feature store at {str(path)!r}; "
                          "free space and run again (the features written so far are kept)")
    return StoreError(f"cannot write feature store {str(path)!r}: {e.strerror or e}")


def _stat_of(f):
    return {"size": f.size, "mtime_ns": f.mtime_ns, "ino": f.ino, "ctime_ns": f.ctime_ns}


def _trusted(entry, f):
    """Whether ``entry`` still describes file ``f`` without reading it.

    A bad file's entry has no hash: equal size, mtime, inode and ctime suffice.
    """
    if not (f.ino and f.ctime_ns) or any(entry[k] != v for k, v in _stat_of(f).items()):
        return False
    return "hashed_ns" not in entry or max(f.mtime_ns, f.ctime_ns) < entry["hashed_ns"] - RACY_NS


class _Lock:
    """A :mod:`filelock` lock file; the holder's process id is kept beside it."""

    def __init__(self, path, record_pid=False):
        self.path = Path(path)
        self._lock = filelock.FileLock(str(self.path))
        self._pid_file = self.path.with_name(self.path.name + ".pid") if record_pid else None

    def acquire(self, timeout):
        try:
            self._lock.acquire(timeout=timeout)
        except filelock.Timeout:
            return False
        if self._pid_file is not None:
            with contextlib.suppress(OSError):  # only for messages
                atomic_write(self._pid_file, _json_writer(os.getpid()))
        return True

    def holder(self):
        pid, _ = _read_json(self._pid_file) if self._pid_file else (None, None)
        return f" (process {pid})" if isinstance(pid, int) else ""

    def release(self):
        if self._lock.is_locked:
            self._lock.release()


def _chunk_files(hashes, feats):
    """The chunk id and the bytes of its ``.npy`` and ``.json``."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(feats, np.float32), allow_pickle=False)
    data = buf.getvalue()
    cid = content_hash(data + "\n".join(hashes).encode("ascii"))[:16]
    return cid, data, json_bytes({"hashes": list(hashes), "digest": content_hash(data)})


def _read_chunk_meta(rows_dir, cid):
    meta = json.loads((rows_dir / f"chunk-{cid}.json").read_text(encoding="ascii"))
    hashes, digest = meta["hashes"], meta["digest"]
    if not (isinstance(hashes, list) and isinstance(digest, str)
            and all(isinstance(h, str) for h in hashes)):
        raise ValueError("unexpected index content")
    return hashes, digest


def _read_chunk_data(rows_dir, cid, hashes, digest, dim):
    """The chunk's features, checked against its hash and shape."""
    data = (rows_dir / f"chunk-{cid}.npy").read_bytes()
    if content_hash(data) != digest:
        raise ValueError("features file does not match its hash")
    feats = np.load(io.BytesIO(data), allow_pickle=False)
    if feats.dtype != np.float32 or feats.ndim != 2 or feats.shape[0] != len(hashes) or (
            dim is not None and feats.shape[1] != dim):
        raise ValueError(f"features of shape {feats.shape} do not match {len(hashes)} rows")
    return feats


def _clean_leftovers(rows_dir, dry_run=False):
    """Remove temporary files and ``.npy`` files without their index; bytes freed."""
    freed = 0
    try:
        names = os.listdir(rows_dir)
    except FileNotFoundError:
        return 0
    committed = {m.group(1) for m in map(_CHUNK.match, names) if m}
    for name in names:
        m = _CHUNK_NPY.match(name)
        if (name.startswith(".") and name.endswith(".tmp")) or (m and m.group(1) not in committed):
            with contextlib.suppress(FileNotFoundError):
                freed += (rows_dir / name).stat().st_size
                if not dry_run:
                    (rows_dir / name).unlink()
    return freed


class FeatureStore:
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

    def __init__(self, image_dir, settings, root=None, chunk_size=None):
        self.image_dir = os.path.realpath(image_dir)
        self.settings = dict(settings)
        self.root = check_root(root, (self.image_dir,))
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
        self._dirty = False
        self._since_ns = time.time_ns()

    # -- opening and locking -------------------------------------------------
    def open(self, readonly=False):
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
                f"{self._folder_lock.holder()}; wait for it to finish")
        self._reset()
        try:
            with self._locked_store():
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

    def close(self):
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
                f"(writing, or collecting garbage) for {LOCK_WAIT_S} s; try again later")
        try:
            yield
        finally:
            self._store_lock.release()

    def _expected_settings(self):
        return {"store_format": STORE_FORMAT, "settings": self.settings}

    def state(self):
        """What is on disk for this folder, found without opening or changing anything.

        Returns
        -------
        {"ready", "missing", "damaged", "other"}
            ``"ready"``: settings of this store and an index of this folder;
            ``"missing"``: no store, or no index of this folder;
            ``"damaged"``: the settings or the index are unreadable, or
            features lie there without settings; ``"other"``: written by
            another featclust version or with other settings. :meth:`open`
            empties a store in state ``"other"`` or ``"damaged"``.
        """
        found, error = _read_json(self.features_dir / "settings.json")
        if error is not None:
            return "damaged"
        if found is None:
            try:
                names = os.listdir(self.rows_dir)
            except OSError:
                return "missing"
            return "damaged" if any(_CHUNK.match(n) for n in names) else "missing"
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
            self.problems.append("store written by another featclust version or with other "
                                 "settings; store emptied and rebuilt")
        elif self.rows_dir.is_dir() and any(_CHUNK.match(n) for n in os.listdir(self.rows_dir)):
            self.problems.append("store has features but no settings.json; store emptied "
                                 "and rebuilt")
        try:
            if self.rows_dir.exists():
                shutil.rmtree(self.rows_dir)
        except OSError as e:
            raise StoreError(f"cannot empty feature store {str(self.features_dir)!r}: "
                             f"{e.strerror or e}") from None
        self._write(path, _json_writer(expected))

    def _write(self, path, write, mode="wb"):
        try:
            atomic_write(path, write, mode)
        except OSError as e:
            raise _store_error(self.features_dir, e) from None

    def _read_chunks(self, readonly):
        names = sorted(os.listdir(self.rows_dir))
        for cid in [m.group(1) for m in map(_CHUNK.match, names) if m]:
            try:
                hashes, digest = _read_chunk_meta(self.rows_dir, cid)
            except _DAMAGE as e:
                if not readonly:
                    self.problems.append(f"chunk {cid} is damaged ({e}); its images are "
                                         "embedded again")
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
            if index["image_dir"] != self.image_dir or not all(
                    isinstance(p, str) and _valid(e, _ENTRY_TYPES) for p, e in files.items()
            ) or not all(isinstance(p, str) and _valid(e, _BAD_TYPES) for p, e in bad.items()):
                raise ValueError("unexpected entries")
        except _DAMAGE as e:
            self.problems.append(f"the index of this folder is damaged ({e}); its images are "
                                 "hashed again")
            self._dirty = True
            return
        self._files, self._bad = files, bad

    def _remove(self, path):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"cannot clean feature store {str(self.features_dir)!r}: "
                             f"{e.strerror or e}") from None

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
        for cid, e in damaged:
            hashes, _ = self._chunks.pop(cid)
            for h in hashes:
                if self._rows.get(h, (None,))[0] == cid:
                    del self._rows[h]
        if damaged and repair:
            with self._locked_store():
                for cid, e in damaged:
                    self.problems.append(f"chunk {cid} is damaged ({e}); its images are "
                                         "embedded again")
                    self._delete_chunk(cid)
        return damaged

    # -- reading -------------------------------------------------------------
    def split(self, files):
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
        found = {}  # path -> (hash, new index entry or None)
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
                _, digest = images.read_bytes(f)
            except images.BadImageError:
                continue
            found[f.path] = (digest, {**_stat_of(f), "hash": digest, "hashed_ns": now})
        self._verify({self._rows[h][0] for h, _ in found.values() if h in self._rows})
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

    def _locate(self, paths):
        """``(chunk id, row)`` of each path's row; raises :class:`StoreError` for one without."""
        out = []
        for p in paths:
            entry = self._files.get(p)
            loc = self._rows.get(entry["hash"]) if entry is not None else None
            if loc is None:
                raise StoreError(f"feature store {str(self.path)!r} has no features of {p!r}; "
                                 "run again to embed it")
            out.append(loc)
        return out

    def load(self, paths, mmap=None):
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
        by_chunk = {}
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
            raise StoreError(f"feature store {str(self.features_dir)!r} was changed while in "
                             f"use ({e}); run again to rebuild it") from None

    def hashes(self, paths):
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
            raise StoreError(f"feature store {str(self.path)!r} does not know all of the "
                             "given images; run the folder again") from None

    def __contains__(self, path):
        entry = self._files.get(path)
        return entry is not None and entry["hash"] in self._rows

    def __len__(self):
        return sum(e["hash"] in self._rows for e in self._files.values())

    def read_features(self, paths):
        """Stored features of ``paths``, for a reader that must not change the store.

        The state is checked first, so a store of other settings is never
        emptied; the store is opened (locked) only to read, and nothing is
        repaired. Rows are served as stored, whether or not the image files
        changed since.

        Parameters
        ----------
        paths : list of str
            Relative image paths.

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
            raise FeaturesUnavailableError(where + {
                "missing": " no longer exists (sort the folder again to rebuild it)",
                "other": " now holds features made with other settings or for another folder",
                "damaged": " is damaged (its settings or index cannot be read); sort the folder "
                           "again to rebuild it",
            }[state])
        try:
            self.open(readonly=True)
        except StoreLockedError:
            raise FeaturesUnavailableError(f"{where} is in use by another featclust run; try "
                                           "again when it has finished") from None
        except StoreError as e:
            raise FeaturesUnavailableError(str(e)) from None
        try:
            missing = sum(p not in self for p in paths)
            if not missing:
                located = self._locate(paths)
                damaged = self._verify({cid for cid, _ in located}, repair=False)
                missing = sum(p not in self for p in paths)
                if damaged:
                    raise FeaturesUnavailableError(
                        f"{where} is damaged (chunk {damaged[0][0]}: {damaged[0][1]}); sort the "
                        "folder again to rebuild it")
            if missing:
                raise FeaturesUnavailableError(
                    f"{where} no longer holds the features of {missing} of the {len(paths)} "
                    "images (the image folder changed since the sort; sort it again)")
            return self.load(paths)
        finally:
            self._pending = []
            self._dirty = False
            self._release()

    # -- writing -------------------------------------------------------------
    def add(self, good, features):
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
            self._write_chunk(self._pending[:self.chunk_size])
            del self._pending[:self.chunk_size]

    def add_bad(self, files_by_path, bad):
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

    def update(self, files, embed_files, progress=None):
        """Embed the files that have no row yet and store their features.

        The one loop that fills a store. Rows are written chunk by chunk as
        they come, so an interrupted update keeps what it computed. Index
        entries of files not in ``files`` are kept (see :meth:`finish`).
        :attr:`last_reused_by_hash` counts the files served by content.

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
            Files served from the store (by this folder's index or by content).
        bad : list of featclust.images.BadFile
            Files known to be undecodable, then those that failed now.
        n_embedded : int
            Files embedded now.

        Raises
        ------
        StoreError
            If the store is not open, or cannot be written.
        """
        if not self._is_open:
            raise StoreError(f"feature store {str(self.path)!r} is not open; open it (or use "
                             "it in a with statement) before updating it")
        cached, bad, missing = self.split(files)
        n_embedded = 0
        if not missing:
            return cached, bad, n_embedded
        bar = progress("embedding", len(missing)) if progress else None
        by_path = {f.path: f for f in missing}
        try:
            for good, feats, failed in embed_files(missing):
                self.add(good, feats)
                self.add_bad(by_path, failed)
                bad.extend(failed)
                n_embedded += len(good)
                if bar:
                    bar.update(len(good) + len(failed))
        finally:
            if bar:
                bar.close()
        return cached, bad, n_embedded

    def flush(self):
        """Write queued rows as a (possibly short) chunk, then the folder's index."""
        if self._pending:
            self._write_chunk(self._pending)
            self._pending = []
        if self._dirty:
            self._write(self.path / INDEX, _json_writer({
                "store_format": STORE_FORMAT, "image_dir": self.image_dir,
                "files": self._files, "bad": self._bad}))
            self._dirty = False

    def _write_chunk(self, items):
        hashes = [h for h, _ in items]
        cid, data, meta = _chunk_files(hashes, np.stack([v for _, v in items]))
        with self._locked_store():
            self._write(self.rows_dir / f"chunk-{cid}.npy", _bytes_writer(data))
            self._write(self.rows_dir / f"chunk-{cid}.json", _bytes_writer(meta))
        self._chunks[cid] = (hashes, content_hash(data))
        self._verified.add(cid)
        for i, h in enumerate(hashes):
            self._rows.setdefault(h, (cid, i))

    def finish(self, files, bad_files=None):
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
        self._write(self.path / "bad_files.csv",
                    lambda fh: fh.write(bad_files_csv(bad_files)), "w")
        return len(gone)


# -- freeing space -----------------------------------------------------------------------------

@dataclass
class GcReport:
    """What :func:`gc` dropped (or, in a dry run, would drop).

    Attributes
    ----------
    rows_kept, rows_dropped : int
        Rows still referenced by an image folder, and rows no folder uses.
    bytes_freed : int
    folders_forgotten : list of str
        Image folders that no longer exist, and stores of an older format
        (``"<image folder> (store format 2)"``).
    """

    rows_kept: int = 0
    rows_dropped: int = 0
    bytes_freed: int = 0
    folders_forgotten: list = field(default_factory=list)


def gc(root=None, dry_run=False):
    """Drop the rows no image folder uses any more, and forget folders that are gone.

    A folder's index references the rows of the files it held at its last
    run; a folder that no longer exists is forgotten (its index deleted) and
    its rows dropped unless another folder references them. Rows kept are
    rewritten into new chunks before the old ones are deleted, so a crash
    loses nothing. Stores of the format-2 layout are deleted.

    Parameters
    ----------
    root : path-like, optional
        Store root; default :func:`default_root`.
    dry_run : bool
        Count only; change nothing.

    Returns
    -------
    GcReport

    Raises
    ------
    StoreLockedError
        If a featclust run is using a store of the root.
    """
    from .checks import check_bool

    root = check_root(root)
    dry_run = check_bool("dry_run", dry_run)
    report = GcReport()
    if not root.is_dir():
        return report
    for features_dir in sorted(root.glob("features-*")):
        settings, _ = _read_json(features_dir / "settings.json")
        dim = settings.get("settings") if isinstance(settings, dict) else None
        dim = dim.get("dim") if isinstance(dim, dict) else None
        if settings.get("store_format") == STORE_FORMAT and isinstance(dim, int):
            _gc_store(features_dir, dim, dry_run, report)
    _gc_old_stores(root, dry_run, report)
    return report


def _gc_store(features_dir, dim, dry_run, report):
    store_lock = _Lock(features_dir / "lock")
    if not store_lock.acquire(LOCK_WAIT_S):
        raise StoreLockedError(f"feature store {str(features_dir)!r} is in use by another "
                               "featclust run; run gc when it has finished")
    held = []
    try:
        folders_dir = features_dir / "folders"
        folders = sorted(p for p in folders_dir.iterdir() if p.is_dir()) \
            if folders_dir.is_dir() else []
        for folder in folders:
            lock = _Lock(folder / "lock", record_pid=True)
            if not lock.acquire(0):
                raise StoreLockedError(f"feature store {str(folder)!r} is in use by a featclust "
                                       f"run{lock.holder()}; run gc when it has finished")
            held.append(lock)
        referenced, gone = set(), []
        for folder in folders:
            index, _ = _read_json(folder / INDEX)
            if not isinstance(index, dict):
                continue  # damaged or never written: its next run hashes its files again
            image_dir = index.get("image_dir")
            if isinstance(image_dir, str) and not os.path.isdir(image_dir):
                report.folders_forgotten.append(image_dir)
                gone.append(folder)
                continue
            files = index.get("files")
            if isinstance(files, dict):
                referenced.update(e["hash"] for e in files.values() if _valid(e, _ENTRY_TYPES))
        _gc_rows(features_dir / "rows", dim, referenced, dry_run, report)
        for folder in gone:
            report.bytes_freed += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        if not dry_run:
            for lock in held:
                lock.release()
            for folder in gone:
                shutil.rmtree(folder, ignore_errors=True)
    except OSError as e:
        raise _store_error(features_dir, e) from None
    finally:
        for lock in held:
            lock.release()
        store_lock.release()


def _gc_rows(rows_dir, dim, referenced, dry_run, report):
    report.bytes_freed += _clean_leftovers(rows_dir, dry_run)
    seen = set()
    names = sorted(os.listdir(rows_dir)) if rows_dir.is_dir() else []
    for cid in [m.group(1) for m in map(_CHUNK.match, names) if m]:
        files = [rows_dir / f"chunk-{cid}.json", rows_dir / f"chunk-{cid}.npy"]
        size = sum(p.stat().st_size for p in files if p.exists())
        try:
            hashes, digest = _read_chunk_meta(rows_dir, cid)
            keep = [i for i, h in enumerate(hashes) if h in referenced and h not in seen]
            feats = (_read_chunk_data(rows_dir, cid, hashes, digest, dim)
                     if 0 < len(keep) < len(hashes) else None)
        except _DAMAGE:
            hashes, keep = [], []  # damaged: a run would drop it too
        seen.update(hashes[i] for i in keep)
        report.rows_kept += len(keep)
        report.rows_dropped += len(hashes) - len(keep)
        if len(keep) == len(hashes) and hashes:
            continue
        freed = size
        if keep:
            kept = [hashes[i] for i in keep]
            new_id, data, meta = _chunk_files(kept, feats[keep])
            freed -= len(data) + len(meta)
            if not dry_run:
                for suffix, blob in ((".npy", data), (".json", meta)):  # .json commits
                    atomic_write(rows_dir / f"chunk-{new_id}{suffix}", _bytes_writer(blob))
        report.bytes_freed += freed
        if not dry_run:
            for p in files:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()


def _gc_old_stores(root, dry_run, report):
    """Delete stores of the format-2 layout: ``ROOT/<folder>-<hash>/<settings hash>/``."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _OLD_FOLDER.match(p.name)):
        for old in sorted(p for p in folder.iterdir() if _OLD_STORE.match(p.name)):
            settings, _ = _read_json(old / "settings.json")
            names = os.listdir(old) if old.is_dir() else []
            if not (isinstance(settings, dict) and isinstance(settings.get("store_format"), int)
                    and settings["store_format"] < STORE_FORMAT
                    and all(_OLD_FILE.match(n) for n in names)):
                continue  # not provably an old featclust store: left alone
            lock = _Lock(old / "lock")
            if not lock.acquire(0):
                continue  # an old featclust version is using it
            try:
                for n in names:
                    if _OLD_CHUNK.match(n):
                        meta, _ = _read_json(old / n)
                        rows = meta.get("rows") if isinstance(meta, dict) else None
                        report.rows_dropped += len(rows) if isinstance(rows, list) else 0
                report.bytes_freed += sum((old / n).stat().st_size for n in names)
                report.folders_forgotten.append(
                    f"{settings.get('image_dir')} (store format {settings['store_format']})")
            finally:
                lock.release()
            if not dry_run:
                shutil.rmtree(old, ignore_errors=True)
        if not dry_run:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
