"""The feature store's files: layout, chunk files, index files, locks.

The one owner of the bytes on disk (see :mod:`featclust.store.core` for the
guarantees built on them). Layout::

    ROOT/featclust-store.json                  marker, so scans skip the store
    ROOT/features-<hash of settings>/          one store per feature settings
        settings.json                          store format and the settings
        lock                                   held while chunks are written or deleted
        rows/chunk-<id>.npy                    features, float32 (rows, dim)
        rows/chunk-<id>.json                   content hash of each row, hash of the .npy,
                                               the store's settings (to recover settings.json)
        folders/<name>-<hash of its path>/     one per image folder (FeatureStore.path)
            index.json                         path -> size, mtime_ns, ino, ctime_ns, hash
            bad_files.csv                      every file the last run skipped
            lock, lock.pid                     held while a run uses the folder

A chunk's ``.npy`` is written first, its ``.json`` (with the ``.npy``'s hash)
commits it; the chunk id is a hash of the features and the row hashes, so
the same rows always make the same file names.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import filelock
import numpy as np
import platformdirs

from ..checks import check_int
from ..errors import StoreError, UsageError
from ..fileio import PathLike, atomic_write, content_hash, inside, json_bytes

STORE_FORMAT = 3
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
_OLD_FILE = re.compile(
    r"^(chunk-\d{6}\.(npy|json)|settings\.json|bad\.json|bad_files\.csv|lock"
    r"|\..*\.tmp)$"
)
_DAMAGE = (OSError, ValueError, KeyError, TypeError, AttributeError)


def default_root() -> Path:
    """The default store root: ``featclust/store`` in the user's cache folder.

    ``$XDG_CACHE_HOME/featclust/store`` where ``XDG_CACHE_HOME`` is set, else
    :func:`platformdirs.user_cache_dir` (``~/.cache`` on Linux,
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows).
    """
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "featclust" / "store"
    return Path(platformdirs.user_cache_dir("featclust", appauthor=False)) / "store"


def check_root(
    root: PathLike | None, image_dirs: Iterable[PathLike] = (), name: str = "store"
) -> Path:
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
        raise UsageError(
            f"{name}={root!r} is empty; give a folder, or None for the default "
            f"({str(default_root())!r})"
        )
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
            raise UsageError(
                f"{name}={text!r} is inside the image folder {str(image_dir)!r}; "
                "nothing in the image folder is ever changed, so the store must "
                "lie outside it"
            )
    return Path(os.path.abspath(text))


def settings_key(settings: dict[str, Any]) -> str:
    """Short stable hash of a settings dict."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _folder_id(image_dir):
    real = os.path.realpath(image_dir)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(real))[:40] or "root"
    return f"{name}-{hashlib.sha256(os.fsencode(real)).hexdigest()[:12]}"


def features_path(settings: dict[str, Any], root: PathLike | None = None) -> Path:
    """The store of all features made with ``settings`` (rows of every folder)."""
    return check_root(root) / f"features-{settings_key(settings)}"


def store_path(image_dir: PathLike, settings: dict[str, Any], root: PathLike | None = None) -> Path:
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
    return (
        isinstance(entry, dict)
        and set(entry) == set(types)
        and all(
            isinstance(entry[k], t) and not isinstance(entry[k], bool) for k, t in types.items()
        )
    )


def _store_error(path, e):
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(
            f"disk full while writing the feature store at {str(path)!r}; "
            "free space and run again (the features written so far are kept)"
        )
    return StoreError(f"cannot write feature store {str(path)!r}: {e.strerror or e}")


def _stat_of(f):
    return {"size": f.size, "mtime_ns": f.mtime_ns, "ino": f.ino, "ctime_ns": f.ctime_ns}


class _Lock:
    """A :mod:`filelock` lock file; the holder's process id is kept beside it."""

    def __init__(self, path, record_pid=False):
        self.path = Path(path)
        self._lock = filelock.FileLock(str(self.path))
        self._pid_file = self.path.with_name(self.path.name + ".pid") if record_pid else None

    def acquire(self, timeout: float) -> bool:
        try:
            self._lock.acquire(timeout=timeout)
        except filelock.Timeout:
            return False
        if self._pid_file is not None:
            with contextlib.suppress(OSError):  # only for messages
                atomic_write(self._pid_file, _json_writer(os.getpid()))
        return True

    def holder(self) -> str:
        pid, _ = _read_json(self._pid_file) if self._pid_file else (None, None)
        return f" (process {pid})" if isinstance(pid, int) else ""

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def _chunk_id(data, hashes):
    """A chunk's name: the hash of its ``.npy`` bytes and its rows' hashes."""
    return content_hash(data + "\n".join(hashes).encode("ascii"))[:16]


def _chunk_meta(hashes, digest, store):
    """The bytes of a chunk's ``.json``; ``store`` is the content of ``settings.json``."""
    meta = {"hashes": list(hashes), "digest": digest}
    if store is not None:
        meta["store"] = store
    return json_bytes(meta)


def _chunk_files(hashes, feats, store=None):
    """The chunk id and the bytes of its ``.npy`` and ``.json``."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(feats, np.float32), allow_pickle=False)
    data = buf.getvalue()
    return _chunk_id(data, hashes), data, _chunk_meta(hashes, content_hash(data), store)


def _read_chunk_meta(rows_dir, cid):
    meta = json.loads((rows_dir / f"chunk-{cid}.json").read_text(encoding="ascii"))
    hashes, digest = meta["hashes"], meta["digest"]
    if not (
        isinstance(hashes, list)
        and isinstance(digest, str)
        and all(isinstance(h, str) for h in hashes)
    ):
        raise ValueError("unexpected index content")
    return hashes, digest


def _read_chunk_data(rows_dir, cid, hashes, digest, dim):
    """The chunk's features, checked against its hash, its name and its shape."""
    data = (rows_dir / f"chunk-{cid}.npy").read_bytes()
    if content_hash(data) != digest:
        raise ValueError("features file does not match its hash")
    if _chunk_id(data, hashes) != cid:
        raise ValueError("its name does not match its content: renamed or swapped")
    feats = np.load(io.BytesIO(data), allow_pickle=False)
    if (
        feats.dtype != np.float32
        or feats.ndim != 2
        or feats.shape[0] != len(hashes)
        or (dim is not None and feats.shape[1] != dim)
    ):
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


def write_chunk_npy(
    rows_dir: PathLike, hashes: Sequence[str], feats: np.ndarray
) -> tuple[str, str]:
    """Write a chunk's ``.npy`` (atomically), not yet committed.

    The ``.json`` written by :func:`commit_chunk` commits it; until then
    the next :meth:`featclust.store.FeatureStore.open` removes it as a leftover.
    Writing the same rows twice writes the same file.

    Returns
    -------
    cid : str
    digest : str
        The content hash of the ``.npy``.
    """
    cid, data, _ = _chunk_files(hashes, feats)
    atomic_write(Path(rows_dir) / f"chunk-{cid}.npy", _bytes_writer(data))
    return cid, content_hash(data)


def commit_chunk(
    rows_dir: PathLike,
    cid: str,
    hashes: Sequence[str],
    digest: str,
    dim: int,
    store: dict[str, Any] | None = None,
) -> bool:
    """Check a chunk's ``.npy`` against ``digest`` and commit it with its ``.json``.

    Call it holding the settings store's lock. ``store``: the content of the
    store's ``settings.json``, recorded in the ``.json`` so that a lost
    ``settings.json`` can be recovered (:func:`recorded_settings`).

    Returns
    -------
    bool
        ``False`` (nothing committed) when the ``.npy`` is missing or does not
        match: its rows must be written again.
    """
    try:
        _read_chunk_data(rows_dir, cid, hashes, digest, dim)
    except _DAMAGE:
        return False
    atomic_write(
        Path(rows_dir) / f"chunk-{cid}.json", _bytes_writer(_chunk_meta(hashes, digest, store))
    )
    return True


def _chunk_names(rows_dir):
    """The ids of the committed chunks in ``rows_dir`` (none when it is not a folder)."""
    try:
        names = sorted(os.listdir(rows_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [m.group(1) for m in map(_CHUNK.match, names) if m]


def recorded_settings(rows_dir: PathLike) -> tuple[dict | None, int]:
    """The ``settings.json`` content the chunks of ``rows_dir`` record, to recover a lost one.

    Returns
    -------
    store : dict or None
        What every chunk that records one records; ``None`` when no chunk
        records one (chunks of older featclust versions) or they disagree.
    n_chunks : int
        Chunks in ``rows_dir``.
    """
    cids = _chunk_names(Path(rows_dir))
    found = {}
    for cid in cids:
        meta, _ = _read_json(Path(rows_dir) / f"chunk-{cid}.json")
        store = meta.get("store") if isinstance(meta, dict) else None
        if isinstance(store, dict):
            found[json.dumps(store, sort_keys=True)] = store
    return (next(iter(found.values())) if len(found) == 1 else None), len(cids)
