"""Freeing space in the feature store: :func:`gc`.

A run never deletes rows (another folder may use them); :func:`gc` drops the
rows no readable index references, forgets folders that no longer exist
when asked, and deletes stores of the format-2 layout
(``ROOT/<folder>-<hash>/<settings hash>/``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass, field

from ..checks import check_bool
from ..errors import StoreLockedError
from ..fileio import PathLike, atomic_write, json_bytes
from .files import (
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
    _chunk_names,
    _clean_leftovers,
    _Lock,
    _read_chunk_data,
    _read_chunk_meta,
    _read_json,
    _store_error,
    _valid,
    check_root,
    recorded_settings,
)


@dataclass
class GcReport:
    """What :func:`gc` dropped (or, in a dry run, would drop).

    Attributes
    ----------
    rows_kept, rows_dropped : int
        Rows still referenced by an image folder's index, and rows no index uses.
    bytes_freed : int
    folders_forgotten : list of str
        Image folders that no longer exist and were forgotten (``forget_gone``),
        and stores of an older format (``"<image folder> (store format 2)"``).
    folders_gone : list of str
        Image folders that no longer exist, kept (moved or renamed? their rows
        serve the new path), until ``forget_gone``.
    rows_gone, bytes_gone : int
        What forgetting ``folders_gone`` would free.
    problems : list of str
        Stores and indexes left alone because they cannot be read, and what
        was recovered, one line each.
    """

    rows_kept: int = 0
    rows_dropped: int = 0
    bytes_freed: int = 0
    folders_forgotten: list = field(default_factory=list)
    folders_gone: list = field(default_factory=list)
    rows_gone: int = 0
    bytes_gone: int = 0
    problems: list = field(default_factory=list)


def gc(root: PathLike | None = None, dry_run: bool = False, forget_gone: bool = False) -> GcReport:
    """Drop the rows no image folder's index uses any more.

    Rows stay while any readable index references their content: that of a
    folder that no longer exists too (it may have been moved or renamed, or
    lie on a drive not mounted now; running featclust on its new path
    reuses them), until ``forget_gone`` forgets such folders (their indexes
    deleted, their rows dropped unless another index references them); the
    report says beforehand what that would free. When an index cannot be
    read, no row of its store is dropped. Rows kept are rewritten into new
    chunks before the old ones are deleted, so a crash loses nothing. A
    ``features-*`` store whose ``settings.json`` is missing or damaged is
    left alone (its settings recovered from its chunks where they record
    them), or removed when it holds nothing. Stores of the format-2 layout
    are deleted.

    Parameters
    ----------
    root : path-like, optional
        Store root; default :func:`default_root`.
    dry_run : bool
        Count only; change nothing.
    forget_gone : bool
        Forget the image folders that no longer exist, and free their rows.

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
    forget_gone = check_bool("forget_gone", forget_gone)
    report = GcReport()
    if not root.is_dir():
        return report
    for features_dir in sorted(root.glob("features-*")):
        if features_dir.is_dir():
            _gc_store(features_dir, dry_run, forget_gone, report)
    _gc_old_stores(root, dry_run, report)
    return report


def _gc_store(features_dir, dry_run, forget_gone, report):
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
        settings = _store_settings(features_dir, dry_run, report)
        if settings is None:
            return
        live, gone, damaged = _read_indexes(folders)
        if damaged:
            folder, error = damaged[0]
            report.problems.append(
                f"kept every row of {features_dir}: the index {str(folder / INDEX)!r} cannot be "
                f"read ({error}); run featclust again on its image folder (or delete "
                f"{str(folder)!r}), then gc"
            )
            report.rows_kept += _n_rows(features_dir / "rows")
            return
        rows_dir = features_dir / "rows"
        gone_hashes = set().union(*(hashes for _, _, hashes in gone))
        if gone and not forget_gone:
            would = GcReport()
            _gc_rows(rows_dir, settings, live, True, would)
            kept = GcReport()
            _gc_rows(rows_dir, settings, live | gone_hashes, True, kept)
            report.folders_gone.extend(image_dir for _, image_dir, _ in gone)
            report.rows_gone += would.rows_dropped - kept.rows_dropped
            report.bytes_gone += (
                would.bytes_freed - kept.bytes_freed + sum(_size(folder) for folder, _, _ in gone)
            )
            live |= gone_hashes
            gone = []
        _gc_rows(rows_dir, settings, live, dry_run, report)
        for folder, image_dir, _ in gone:
            report.folders_forgotten.append(image_dir)
            report.bytes_freed += _size(folder)
        if not dry_run:
            for lock in held:
                lock.release()
            for folder, _, _ in gone:
                shutil.rmtree(folder, ignore_errors=True)
    except OSError as e:
        raise _store_error(features_dir, e) from None
    finally:
        for lock in held:
            lock.release()
        store_lock.release()


def _size(folder):
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _n_rows(rows_dir):
    n = 0
    for cid in _chunk_names(rows_dir):
        with contextlib.suppress(*_DAMAGE):
            n += len(_read_chunk_meta(rows_dir, cid)[0])
    return n


def _read_indexes(folders):
    """``(live hashes, [(folder, image dir, hashes) of gone ones], [(folder, error)])``."""
    live, gone, damaged = set(), [], []
    for folder in folders:
        index, error = _read_json(folder / INDEX)
        if index is None and error is None:
            continue  # never written: its next run hashes its files again
        files = index.get("files") if isinstance(index, dict) else None
        image_dir = index.get("image_dir") if isinstance(index, dict) else None
        if error is None and not (isinstance(files, dict) and isinstance(image_dir, str)):
            error = "unexpected content"
        if error is not None:
            damaged.append((folder, error))
            continue
        hashes = {e["hash"] for e in files.values() if _valid(e, _ENTRY_TYPES)}
        if os.path.isdir(image_dir):
            live |= hashes
        else:
            gone.append((folder, image_dir, hashes))
    return live, gone, damaged


def _store_settings(features_dir, dry_run, report):
    """The ``settings.json`` of a store gc can collect; ``None`` (reported) to leave it alone."""
    path = features_dir / "settings.json"
    settings, error = _read_json(path)
    rows_dir = features_dir / "rows"
    if rows_dir.exists() and not rows_dir.is_dir():
        report.problems.append(
            f"skipped {features_dir}: {str(rows_dir)!r} is a file, not a folder; move it away "
            "(or delete it), then gc"
        )
        return None
    why = None
    if error is not None:
        why = f"its settings.json is damaged ({error})"
    elif settings is None:
        recorded, n_chunks = recorded_settings(rows_dir)
        if _dim(recorded) is not None:
            if not dry_run:
                atomic_write(path, _bytes_writer(json_bytes(recorded)))
            report.problems.append(
                f"{'would recover' if dry_run else 'recovered'} the missing settings.json of "
                f"{features_dir} from the records of its {n_chunks} chunks"
            )
            settings = recorded
        else:
            why = "it has no settings.json"
    elif not isinstance(settings, dict):
        why = f"its settings.json holds a {type(settings).__name__}, not a store's settings"
    elif settings.get("store_format") != STORE_FORMAT:
        found = settings.get("store_format")
        why = f"it was written by another featclust version (store format {found!r})"
    if why is None and _dim(settings) is None:
        why = "its settings.json does not give the feature length"
    if why is None:
        return settings
    if _holds_nothing(features_dir):
        report.problems.append(
            f"{'would remove' if dry_run else 'removed'} {features_dir}: {why} and it holds "
            "nothing (left by an interrupted first run)"
        )
        if not dry_run:
            shutil.rmtree(features_dir, ignore_errors=True)
    else:
        report.problems.append(
            f"skipped {features_dir}: {why}; left as it is (put its settings.json back, or "
            "delete the folder to free its space)"
        )
    return None


def _dim(settings):
    inner = settings.get("settings") if isinstance(settings, dict) else None
    dim = inner.get("dim") if isinstance(inner, dict) else None
    ok = isinstance(settings, dict) and settings.get("store_format") == STORE_FORMAT
    return dim if ok and isinstance(dim, int) and not isinstance(dim, bool) else None


def _holds_nothing(features_dir):
    """Whether the store has only locks, settings, temporary files and empty folders."""
    for _, _, names in os.walk(features_dir):
        for name in names:
            if not (
                name in ("lock", "lock.pid", "settings.json")
                or (name.startswith(".") and name.endswith(".tmp"))
            ):
                return False
    return True


def _gc_rows(rows_dir, settings, referenced, dry_run, report):
    report.bytes_freed += _clean_leftovers(rows_dir, dry_run)
    dim = _dim(settings)
    seen = set()
    for cid in _chunk_names(rows_dir):
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
            new_id, data, meta = _chunk_files(kept, feats[keep], settings)
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
