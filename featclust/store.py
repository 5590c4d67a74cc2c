"""The feature store: features on disk, never served stale.

This module is longer than the others because it is the single owner of the
store's file format: layout, chunk commit, locking, repair and the rules for
serving a row live together so that no other module writes or reads a store's
files.

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

:meth:`FeatureStore.update` is the one loop that fills a store;
:meth:`FeatureStore.read_features` reads one back without ever changing it.
"""

from __future__ import annotations

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
from .checks import check_int
from .errors import FeaturesUnavailableError, StoreError, StoreLockedError, UsageError
from .fileio import atomic_write, content_hash, json_bytes
from .tables import bad_files_csv

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


def _json_writer(obj):
    data = json_bytes(obj)
    return lambda fh: fh.write(data)


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
                atomic_write(marker, _json_writer({"featclust_store": STORE_FORMAT}))
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
        # A store opened again reads its files afresh.
        self._rows, self._chunks, self._bad, self._pending = {}, {}, {}, []
        self._next_chunk = 0
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

    def _read_settings(self):
        """``(settings, None)``, ``(None, None)`` without a file, ``(None, error)``."""
        try:
            return json.loads((self.path / "settings.json").read_text(encoding="ascii")), None
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as e:
            return None, e

    def state(self):
        """What is on disk for this store, found without opening or changing anything.

        Returns
        -------
        {"ready", "missing", "damaged", "other"}
            ``"ready"``: its ``settings.json`` is this store's own;
            ``"missing"``: no store (or an empty one); ``"damaged"``: the
            settings are unreadable, or features lie there without them;
            ``"other"``: written by another featclust version, with other
            settings or for another folder. :meth:`open` empties a store in
            any state but ``"ready"``.
        """
        found, error = self._read_settings()
        if error is not None:
            return "damaged"
        if found is None:
            try:
                names = os.listdir(self.path)
            except OSError:
                return "missing"
            return "damaged" if any(_CHUNK.match(n) for n in names) else "missing"
        return "ready" if found == self._expected_settings() else "other"

    def _check_settings(self):
        expected = self._expected_settings()
        path = self.path / "settings.json"
        found, error = self._read_settings()
        if found == expected:
            return
        if error is not None:
            self.problems.append(f"settings.json is damaged ({error}); store emptied and rebuilt")
        elif found is not None:
            self.problems.append("store written by another featclust version or with other "
                                 "settings; store emptied and rebuilt")
        elif any(_CHUNK.match(p) for p in os.listdir(self.path)):
            self.problems.append("store has features but no settings.json; store emptied "
                                 "and rebuilt")
        self._wipe()
        self._write(path, _json_writer(expected))

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
        if content_hash(data) != meta["digest"]:
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

    def read_features(self, paths):
        """Stored features of ``paths``, for a reader that must not change the store.

        The state is checked first, so a store of other settings is never
        emptied; the store is opened (locked) only to read. Rows are served
        as stored, whether or not the image files changed since.

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
            Saying in words why: the store is gone, holds other settings or
            another folder, is damaged, lacks some of the rows, or is in use
            by another run.
        """
        where = f"the feature store {str(self.path)!r}"
        state = self.state()
        if state != "ready":
            raise FeaturesUnavailableError(where + {
                "missing": " no longer exists (sort the folder again to rebuild it)",
                "other": " now holds features made with other settings or for another folder",
                "damaged": " is damaged (its settings cannot be read); sort the folder again "
                           "to rebuild it",
            }[state])
        try:
            self.open()
        except StoreLockedError:
            raise FeaturesUnavailableError(f"{where} is in use by another featclust run; try "
                                           "again when it has finished") from None
        except StoreError as e:
            raise FeaturesUnavailableError(str(e)) from None
        try:
            missing = sum(p not in self._rows for p in paths)
            if missing:
                raise FeaturesUnavailableError(
                    f"{where} no longer holds the features of {missing} of the {len(paths)} "
                    "images (the image folder changed since the sort; sort it again)")
            return self.load(paths)
        finally:
            self.close()

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

    def update(self, files, embed_files, progress=None):
        """Embed the files that have no valid row yet and store their features.

        The one loop that fills a store. Rows are written chunk by chunk as
        they come, so an interrupted update keeps what it computed. Rows of
        files not in ``files`` are kept (see :meth:`finish`).

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
            Files served from the store.
        bad : list of featclust.images.BadFile
            Files known to be undecodable, then those that failed now.
        n_embedded : int
            Files embedded now.

        Raises
        ------
        StoreError
            If the store is not open, or cannot be written.
        """
        if self._lock_fh is None:
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
        """Write queued rows as a (possibly short) chunk (:meth:`finish` writes the bad files)."""
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
                    _json_writer({"rows": rows, "written_ns": written_ns, "digest": content_hash(data)}))
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
        self._write(self.path / "bad.json", _json_writer(self._bad))
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

