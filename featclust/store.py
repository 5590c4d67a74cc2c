"""The feature store: features on disk, never served stale.

Layout::

    ROOT/featclust-store.json               marker, so scans skip the store
    ROOT/<folder-name>-<hash of folder path>/<hash of settings>/
        settings.json                       what made these features
        chunk-000000.npy, chunk-000000.json  features and the rows they hold
        bad.json                            files that failed to decode
        bad_files.csv                       every file the last run skipped
        lock                                held (flock) while a run uses the store

Each chunk is written to a temporary file in the same folder and moved into
place with :func:`os.replace`; the ``.npy`` goes first and the ``.json``
commits it, with the ``.npy``'s hash, so a crash leaves only whole chunks and
a damaged chunk is detected, dropped and embedded again. A store whose
``settings.json`` is missing, unreadable or different is emptied, never read.
A row is served only if the file's path, size and modification time still
match (and, for files changed within two seconds of being stored, its content
hash); otherwise it is re-embedded. Rows of deleted or changed images are
dropped by compaction.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from . import images
from .errors import StoreError, StoreLockedError, UsageError

STORE_FORMAT = 2
#: Files modified this close to the time they were stored are re-hashed.
RACY_NS = 2_000_000_000
#: Rows per chunk file: at most this many images are embedded again after a
#: crash. The environment variable ``FEATCLUST_CHUNK_SIZE`` overrides it.
CHUNK_SIZE = 256
_CHUNK = re.compile(r"^chunk-(\d{6})\.json$")
_CHUNK_NPY = re.compile(r"^chunk-(\d{6})\.npy$")
_ROW_TYPES = {"path": str, "size": int, "mtime_ns": int, "hash": str}
#: :meth:`FeatureStore.load` memory-maps a feature matrix larger than this.
MMAP_BYTES = 256 << 20


def default_root():
    """The default store root: ``$XDG_CACHE_HOME/featclust/store`` (or ``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "featclust" / "store"


def settings_key(settings):
    """Short stable hash of a settings dict."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def store_path(image_dir, settings, root=None):
    """The folder that holds the features of ``image_dir`` under ``settings``."""
    real = os.path.realpath(image_dir)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(real))[:40] or "root"
    folder = f"{name}-{hashlib.sha256(os.fsencode(real)).hexdigest()[:12]}"
    return Path(root or default_root()) / folder / settings_key(settings)


def atomic_write(path, write, mode="wb"):
    """Write ``path`` through a temporary file in the same folder and ``os.replace``.

    Parameters
    ----------
    path : path-like
    write : callable
        Called with the open temporary file.
    mode : str
        ``"wb"`` or ``"w"`` (UTF-8 text, surrogates kept).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape",
                                          "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _json_dump(obj):
    return lambda fh: fh.write(json.dumps(obj, indent=1, sort_keys=True).encode("ascii"))


def _digest(data):
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise UsageError(f"chunk_size={chunk_size!r} must be a positive integer")
    return chunk_size


def _valid_bad_entry(entry):
    return (isinstance(entry, dict) and isinstance(entry.get("size"), int)
            and isinstance(entry.get("mtime_ns"), int) and isinstance(entry.get("reason"), str))


def _store_error(path, e):
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"disk full while writing the feature store at {str(path)!r}; "
                          "free space and run again (the features written so far are kept)")
    return StoreError(f"cannot write feature store {str(path)!r}: {e.strerror or e}")


class FeatureStore:
    """Features of one image folder under one set of feature settings.

    Parameters
    ----------
    image_dir : path-like
        The image folder the row paths are relative to.
    settings : dict
        Everything that determines the features (see
        :meth:`featclust.embed.Embedder.settings`); ``settings["dim"]`` is the
        feature length.
    root : path-like, optional
        Store root; default :func:`default_root`.
    chunk_size : int, optional
        Rows per chunk file; default :data:`CHUNK_SIZE`, or the environment
        variable ``FEATCLUST_CHUNK_SIZE``.

    Attributes
    ----------
    problems : list of str
        What :meth:`open` found damaged and repaired, in words for the user.
    """

    def __init__(self, image_dir, settings, root=None, chunk_size=None):
        self.image_dir = os.path.realpath(image_dir)
        self.settings = dict(settings)
        self.root = Path(root or default_root())
        self.path = store_path(image_dir, settings, self.root)
        self.dim = int(settings["dim"])
        self.chunk_size = _chunk_size(chunk_size)
        self.problems = []
        self._lock_fh = None
        self._rows = {}
        self._chunks = {}
        self._bad = {}
        self._pending = []
        self._next_chunk = 0

    # -- opening and locking -------------------------------------------------
    def open(self):
        """Create the store folder if needed, take the lock and read the index.

        Raises
        ------
        StoreLockedError
            If another process holds the store.
        StoreError
            If the store folder cannot be created or written.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            marker = self.root / images.STORE_MARKER
            if not marker.exists():
                atomic_write(marker, _json_dump({"featclust_store": STORE_FORMAT}))
            self._lock_fh = open(self.path / "lock", "a+")
        except OSError as e:
            raise _store_error(self.path, e) from None
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.seek(0)
            holder = self._lock_fh.read().strip()
            self._lock_fh.close()
            self._lock_fh = None
            by = f" (process {holder})" if holder.isdigit() else ""
            raise StoreLockedError(
                f"feature store {str(self.path)!r} is in use by another featclust run{by}; "
                "wait for it to finish"
            ) from None
        try:
            self._lock_fh.truncate(0)
            self._lock_fh.write(str(os.getpid()))
            self._lock_fh.flush()
            self._check_settings()
            self._read_index()
        except BaseException:
            self._release()
            raise
        return self

    def close(self):
        """Write pending rows and release the lock."""
        if self._lock_fh is None:
            return
        try:
            self.flush()
        finally:
            self._release()

    def _release(self):
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

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

    def _expected_settings(self):
        return {"store_format": STORE_FORMAT, "image_dir": self.image_dir,
                "settings": self.settings}

    def read_settings(self):
        """Read the store's ``settings.json`` without opening (or emptying) the store.

        Returns
        -------
        dict, None or Exception
            The recorded settings, ``None`` if there are none, or the error
            that made them unreadable. They match this store exactly when
            :meth:`settings_match` is true.
        """
        try:
            return json.loads((self.path / "settings.json").read_text(encoding="ascii"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            return e

    def settings_match(self, found):
        """Whether settings from :meth:`read_settings` are this store's own."""
        return found == self._expected_settings()

    def _check_settings(self):
        expected = self._expected_settings()
        path = self.path / "settings.json"
        found = self.read_settings()
        if found == expected:
            return
        if isinstance(found, Exception):
            self.problems.append(f"settings.json is damaged ({found}); store emptied and rebuilt")
        elif found is not None:
            self.problems.append("store written by another featclust version or with other "
                                 "settings; store emptied and rebuilt")
        elif any(_CHUNK.match(p) for p in os.listdir(self.path)):
            self.problems.append("store has features but no settings.json; store emptied "
                                 "and rebuilt")
        self._wipe()
        self._write(path, _json_dump(expected))

    def _wipe(self):
        try:
            for p in self.path.iterdir():
                if p.name == "lock":
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        except OSError as e:
            raise StoreError(f"cannot empty feature store {str(self.path)!r}: "
                             f"{e.strerror or e}") from None

    def _write(self, path, write, mode="wb"):
        try:
            atomic_write(path, write, mode)
        except OSError as e:
            raise _store_error(self.path, e) from None

    def _read_index(self):
        entries = sorted(os.listdir(self.path))
        committed = {int(m.group(1)) for m in map(_CHUNK.match, entries) if m}
        for entry in entries:
            m = _CHUNK_NPY.match(entry)
            if entry.endswith(".tmp") or (m and int(m.group(1)) not in committed):
                # Left by a run killed while writing; never part of a whole chunk.
                self._remove(entry)
        for n in sorted(committed):
            self._next_chunk = max(self._next_chunk, n + 1)
            try:
                rows = self._read_chunk_rows(n)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                self.problems.append(f"chunk {n} is damaged ({e}); its images are embedded "
                                     "again")
                self._delete_chunk(n)
                continue
            self._chunks[n] = rows
            for i, row in enumerate(rows):
                self._rows[row["path"]] = (n, i, row)
        try:
            bad = json.loads((self.path / "bad.json").read_text(encoding="ascii"))
            if not isinstance(bad, dict) or not all(
                    isinstance(p, str) and _valid_bad_entry(v) for p, v in bad.items()):
                raise ValueError("unexpected content")
            self._bad = bad
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            self.problems.append(f"bad.json is damaged ({e}); bad files are checked again")

    def _read_chunk_rows(self, n):
        meta = json.loads((self.path / f"chunk-{n:06d}.json").read_text(encoding="ascii"))
        rows, written_ns = meta["rows"], meta["written_ns"]
        if not isinstance(rows, list) or not isinstance(written_ns, int):
            raise ValueError("unexpected index content")
        for row in rows:
            if set(row) != set(_ROW_TYPES) or not all(
                    isinstance(row[k], t) for k, t in _ROW_TYPES.items()):
                raise ValueError("unexpected row in index")
            row["written_ns"] = written_ns
        data = (self.path / f"chunk-{n:06d}.npy").read_bytes()
        if _digest(data) != meta["digest"]:
            raise ValueError("features file does not match its hash")
        feats = np.load(io.BytesIO(data), allow_pickle=False)
        if feats.dtype != np.float32 or feats.shape != (len(rows), self.dim):
            raise ValueError(f"features of shape {feats.shape} do not match {len(rows)} rows")
        return rows

    def _remove(self, name):
        try:
            (self.path / name).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"cannot clean feature store {str(self.path)!r}: "
                             f"{e.strerror or e}") from None

    def _delete_chunk(self, n):
        for suffix in (".json", ".npy"):
            self._remove(f"chunk-{n:06d}{suffix}")

    # -- reading -------------------------------------------------------------
    def split(self, files):
        """Which files have valid stored features, which are known bad, which are missing.

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
        cached, bad, missing = [], [], []
        for f in files:
            hit = self._rows.get(f.path)
            if hit is not None and self._row_matches(hit[2], f):
                cached.append(f)
                continue
            known = self._bad.get(f.path)
            if known and known["size"] == f.size and known["mtime_ns"] == f.mtime_ns:
                bad.append(images.BadFile(f.path, known["reason"]))
                continue
            missing.append(f)
        return cached, bad, missing

    def _row_matches(self, row, f):
        if row["size"] != f.size or row["mtime_ns"] != f.mtime_ns:
            return False
        if f.mtime_ns >= row["written_ns"] - RACY_NS:
            try:
                data, digest = images.read_bytes(f)
            except images.BadImageError:
                return False
            return digest == row["hash"]
        return True

    def load(self, paths, mmap=None):
        """Stored features of ``paths``, in that order.

        Parameters
        ----------
        paths : list of str
            Relative paths, each with a valid row (see :meth:`split`).
        mmap : bool or None
            With ``True`` the matrix is written, chunk by chunk, to a nameless
            temporary file in the store folder and returned memory-mapped
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
        for j, p in enumerate(paths):
            n, i, _ = self._rows[p]
            by_chunk.setdefault(n, ([], []))
            by_chunk[n][0].append(j)
            by_chunk[n][1].append(i)
        if not mmap or not paths:
            out = np.empty(shape, np.float32)
            for n, (dst, src) in by_chunk.items():
                out[dst] = self._load_chunk(n)[src]
            return out
        row_bytes = self.dim * 4
        try:
            with tempfile.TemporaryFile(dir=self.path, prefix=".matrix-") as fh:
                fh.truncate(shape[0] * row_bytes)
                for n, (dst, src) in by_chunk.items():
                    feats = self._load_chunk(n)
                    for j, i in zip(dst, src):
                        os.pwrite(fh.fileno(), feats[i], j * row_bytes)
                return np.memmap(fh, np.float32, "r", shape=shape)
        except OSError as e:
            raise _store_error(self.path, e) from None

    def _load_chunk(self, n):
        try:
            return np.load(self.path / f"chunk-{n:06d}.npy")
        except (OSError, ValueError) as e:
            raise StoreError(f"feature store {str(self.path)!r} was changed while in use "
                             f"({e}); run again to rebuild it") from None

    def __contains__(self, path):
        return path in self._rows

    def __len__(self):
        return len(self._rows)

    # -- writing -------------------------------------------------------------
    def add(self, good, features):
        """Queue rows; whole chunks are written as soon as they fill.

        Parameters
        ----------
        good : list of (ImageFile, str)
            Files and the content hashes of the bytes that were embedded.
        features : numpy.ndarray
            ``(len(good), dim)``.
        """
        for (f, digest), vec in zip(good, features):
            self._pending.append(({"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns,
                                   "hash": digest}, vec))
            self._bad.pop(f.path, None)
        while len(self._pending) >= self.chunk_size:
            self._write_chunk(self._pending[:self.chunk_size])
            del self._pending[:self.chunk_size]

    def add_bad(self, files_by_path, bad):
        """Remember files that failed to decode, with their size and mtime.

        They are not decoded again until they change. Files that could not be
        read at all (no permission, I/O error) are tried again on every run.
        """
        for b in bad:
            f = files_by_path.get(b.path)
            if f is None:
                continue
            self._rows.pop(b.path, None)  # an older version of it is no longer current
            if not b.reason.startswith(images.READ_FAILURE):
                self._bad[b.path] = {"size": f.size, "mtime_ns": f.mtime_ns, "reason": b.reason}

    def flush(self):
        """Write queued rows as a (possibly short) chunk and the bad-file list."""
        if self._pending:
            self._write_chunk(self._pending)
            self._pending = []

    def _write_chunk(self, items):
        n = self._next_chunk
        self._next_chunk += 1
        feats = np.stack([vec for _, vec in items]).astype(np.float32)
        # Rows moved by compaction keep the time they were first stored.
        written_ns = min([time.time_ns()] + [row["written_ns"] for row, _ in items
                                             if "written_ns" in row])
        rows = [{k: row[k] for k in _ROW_TYPES} for row, _ in items]
        buf = io.BytesIO()
        np.save(buf, feats, allow_pickle=False)
        data = buf.getvalue()
        self._write(self.path / f"chunk-{n:06d}.npy", lambda fh: fh.write(data))
        self._write(self.path / f"chunk-{n:06d}.json",
                    _json_dump({"rows": rows, "written_ns": written_ns, "digest": _digest(data)}))
        self._chunks[n] = rows
        for i, row in enumerate(rows):
            row["written_ns"] = written_ns
            self._rows[row["path"]] = (n, i, row)

    def finish(self, files, bad_files=None):
        """Write what is queued, drop rows and bad entries of files not in ``files``.

        Parameters
        ----------
        files : list of featclust.images.ImageFile
            Every file now in the folder; rows of other paths, and rows no
            longer current, are removed by rewriting the chunks that hold them.
        bad_files : list of featclust.images.BadFile, optional
            Everything this run skipped, for ``bad_files.csv``; default: the
            files remembered as undecodable.

        Returns
        -------
        int
            Number of rows dropped.
        """
        self.flush()
        live = {f.path for f in files}
        self._bad = {p: v for p, v in self._bad.items() if p in live}
        if bad_files is None:
            bad_files = [images.BadFile(p, v["reason"]) for p, v in self._bad.items()]
        self._write(self.path / "bad.json", _json_dump(self._bad))
        self._write(self.path / "bad_files.csv",
                    lambda fh: fh.write(bad_files_csv(bad_files)), "w")
        dropped = 0
        for n in sorted(self._chunks):
            rows = self._chunks[n]
            keep = [i for i, row in enumerate(rows)
                    if row["path"] in live and self._rows.get(row["path"], (None,))[:2] == (n, i)]
            if len(keep) == len(rows):
                continue
            dropped += len(rows) - len(keep)
            if keep:
                feats = np.load(self.path / f"chunk-{n:06d}.npy")[keep]
                for i in keep:
                    del self._rows[rows[i]["path"]]
                # The rewritten chunk is committed before the old one goes: a
                # crash in between leaves two equal rows, never none.
                self._pending = [(rows[i], feats[j]) for j, i in enumerate(keep)]
                self.flush()
            for row in rows:
                if row["path"] not in live and self._rows.get(row["path"], (None,))[0] == n:
                    del self._rows[row["path"]]
            del self._chunks[n]
            self._delete_chunk(n)
        return dropped


def bad_files_csv(bad_files):
    """The text of ``bad_files.csv``: ``path,reason``, one row per skipped file, by path."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "reason"])
    for b in sorted(bad_files, key=lambda b: b.path):
        w.writerow([b.path, b.reason])
    return buf.getvalue()
