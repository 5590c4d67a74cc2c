"""Freeing space in the feature store: :func:`gc`.

A run never deletes rows (another folder may use them); :func:`gc` drops the
rows no existing folder's index references, forgets folders that no longer
exist, and deletes stores of the format-2 layout
(``ROOT/<folder>-<hash>/<settings hash>/``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field

from ..checks import check_bool
from ..errors import StoreLockedError
from ..fileio import PathLike, atomic_write
from .files import (
    _CHUNK,
    _DAMAGE,
    _ENTRY_TYPES,
    _OLD_CHUNK,
    _OLD_FILE,
    _OLD_FOLDER,
    _OLD_STORE,
    INDEX,
    LOCK_WAIT_S,
    STORE_FORMAT,
    _bytes_writer,
    _chunk_files,
    _clean_leftovers,
    _Lock,
    _read_chunk_data,
    _read_chunk_meta,
    _read_json,
    _store_error,
    _valid,
    check_root,
)


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


def gc(root: PathLike | None = None, dry_run: bool = False) -> GcReport:
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
        raise StoreLockedError(
            f"feature store {str(features_dir)!r} is in use by another "
            "featclust run; run gc when it has finished"
        )
    held = []
    try:
        folders_dir = features_dir / "folders"
        folders = (
            sorted(p for p in folders_dir.iterdir() if p.is_dir()) if folders_dir.is_dir() else []
        )
        for folder in folders:
            lock = _Lock(folder / "lock", record_pid=True)
            if not lock.acquire(0):
                raise StoreLockedError(
                    f"feature store {str(folder)!r} is in use by a featclust "
                    f"run{lock.holder()}; run gc when it has finished"
                )
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
            feats = (
                _read_chunk_data(rows_dir, cid, hashes, digest, dim)
                if 0 < len(keep) < len(hashes)
                else None
            )
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
            if not (
                isinstance(settings, dict)
                and isinstance(settings.get("store_format"), int)
                and settings["store_format"] < STORE_FORMAT
                and all(_OLD_FILE.match(n) for n in names)
            ):
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
                    f"{settings.get('image_dir')} (store format {settings['store_format']})"
                )
            finally:
                lock.release()
            if not dry_run:
                shutil.rmtree(old, ignore_errors=True)
        if not dry_run:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
