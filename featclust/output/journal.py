"""The journal of a sorted folder's edits: each edit is a transaction; undo and redo.

An edit moves files between the folders of a sorted output and replaces
its state: ``labels.csv``, ``clusters.csv``, ``model.npz`` and the record.
Every state the folder was in since its first edit is kept in
``.featclust-edits/state-NNNN/`` (the sort's own state as ``state-0000``).
An edit, an undo or a redo is applied in three steps:

1. the new state is written in full into its own folder of the journal and
   the intent (the files to move, the state to install) into
   ``pending.json``;
2. the files are moved (each by a hard link and the removal of the old
   name, so nothing is ever overwritten) and the state's files are copied
   into place;
3. ``journal.json`` records the new position and ``pending.json`` goes.

Every step can be repeated, so whoever opens the folder next
(:meth:`Journal.recover`) finishes an edit that was interrupted at any
moment, a ``kill -9`` included: the edit is then fully applied. One that was
interrupted before its intent was written left the folder as it was. Undo is
the journal read backwards (the moves reversed, the earlier state installed),
redo the journal read forwards.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from ..errors import OutputError, OutputFormatError, UnsafeOutputError, UsageError
from ..fileio import atomic_write, content_hash, json_bytes
from .folder import output_error
from .record import CLUSTERS_CSV, LABELS_CSV, MODEL_NPZ, RunRecord, read_record, write_record

#: The journal's folder inside a sorted output.
JOURNAL_DIR = ".featclust-edits"
JOURNAL_FORMAT = 1
#: The files an edit replaces (besides the record, which record.py writes).
STATE_FILES = (LABELS_CSV, CLUSTERS_CSV, MODEL_NPZ)
#: How many edits can be undone: the states before are dropped (each holds the tables).
MAX_UNDO = 100
_JOURNAL = "journal.json"
_PENDING = "pending.json"


def state_name(position: int) -> str:
    """``state-0003``: the folder of the state after ``position`` edits."""
    return f"state-{position:04d}"


class Journal:
    """The edits of one sorted folder (see the module's description).

    Parameters
    ----------
    out_dir : path-like

    Attributes
    ----------
    position : int
        How many of :attr:`edits` are applied (the rest can be redone).
    edits : list of dict
        Each edit's ``summary`` and ``moves`` (``[old, new]`` file pairs,
        relative to the folder).
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.root = Path(out_dir)
        self.dir = self.root / JOURNAL_DIR
        self.position = 0
        self.edits: list[dict] = []
        self._read()

    def _read(self) -> None:
        path = self.dir / _JOURNAL
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self.position, self.edits = 0, []
            return
        except (OSError, ValueError) as e:
            raise OutputFormatError(f"cannot read {str(path)!r}: {e}") from None
        if (
            not isinstance(data, dict)
            or data.get("format") != JOURNAL_FORMAT
            or not isinstance(data.get("edits"), list)
            or not isinstance(data.get("position"), int)
            or not 0 <= data["position"] <= len(data["edits"])
        ):
            raise OutputFormatError(f"{str(path)!r} is not a journal of this featclust")
        self.position, self.edits = data["position"], data["edits"]

    @property
    def pending(self) -> bool:
        """Whether an edit was interrupted (the next :meth:`recover` finishes it)."""
        return (self.dir / _PENDING).exists()

    def recover(self) -> bool:
        """Finish an edit that was interrupted; ``True`` if there was one."""
        path = self.dir / _PENDING
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as e:
            raise OutputFormatError(f"cannot read {str(path)!r}: {e}") from None
        self._apply(data)
        return True

    def commit(
        self, moves: list, files: dict[str, bytes], record: RunRecord, summary: dict
    ) -> None:
        """Apply a new edit: move ``moves``, write ``files`` and ``record``.

        Edits undone before are dropped (they can no longer be redone).

        Parameters
        ----------
        moves : list of (str, str)
            Files to move, relative to the folder; every new name must be free.
        files : dict of str to bytes
            The new content of the state's files (:data:`STATE_FILES`).
        record : RunRecord
            The new record; the stamps of ``files`` are added to it.
        summary : dict
            What the edit did, as JSON (kept in the journal).
        """
        self.recover()
        if not (self.dir / state_name(self.position)).is_dir():
            self._snapshot(self.position)
        target = self.position + 1
        stale = self.dir / f"made-{target:04d}"  # files of a placement undone and dropped
        if stale.is_dir():
            _remove_tree(stale)
        self._stage(target, files, record)
        edits = self.edits[: self.position] + [{"summary": summary, "moves": moves}]
        self._run({"position": target, "moves": moves, "edits": edits})

    def undo(self) -> dict:
        """Undo the last applied edit; returns its summary.

        Raises
        ------
        UsageError
            If there is nothing to undo.
        """
        self.recover()
        if self.position == 0:
            raise UsageError(f"{str(self.root)!r}: nothing to undo")
        if not (self.dir / state_name(self.position - 1)).is_dir():
            raise UsageError(
                f"{str(self.root)!r}: nothing more to undo (featclust keeps the last "
                f"{MAX_UNDO} edits)"
            )
        edit = self.edits[self.position - 1]
        moves = [[new, old] for old, new in reversed(edit["moves"])]
        self._run({"position": self.position - 1, "moves": moves, "edits": self.edits})
        return edit["summary"]

    def redo(self) -> dict:
        """Apply again the last edit undone; returns its summary.

        Raises
        ------
        UsageError
            If there is nothing to redo.
        """
        self.recover()
        if self.position >= len(self.edits):
            raise UsageError(f"{str(self.root)!r}: nothing to redo")
        edit = self.edits[self.position]
        self._run({"position": self.position + 1, "moves": edit["moves"], "edits": self.edits})
        return edit["summary"]

    def discard(self) -> None:
        """Forget every edit (the folder keeps its current state; nothing can be undone)."""
        if self.dir.is_dir():
            _remove_tree(self.dir)
        self.position, self.edits = 0, []

    def _snapshot(self, position: int) -> None:
        """Keep the state the folder is in (as ``state-0000`` before the first edit), to
        undo the next edit."""
        record = read_record(self.root)
        if record is None:
            raise OutputFormatError(f"{str(self.root)!r} has no record to keep")
        files = {}
        for name in STATE_FILES:
            try:
                files[name] = (self.root / name).read_bytes()
            except FileNotFoundError:
                continue
            except OSError as e:
                raise OutputError(f"cannot read {str(self.root / name)!r}: {e.strerror}") from None
        self._stage(position, files, record)

    def _stage(self, position: int, files: dict, record: RunRecord) -> None:
        """Write a whole state into ``state-NNNN`` (made beside it and renamed in)."""
        final = self.dir / state_name(position)
        tmp = self.dir / (state_name(position) + ".tmp")
        try:
            for old in (tmp, final):
                if old.exists():
                    _remove_tree(old)
            tmp.mkdir(parents=True)
            stamps = dict(record.stamps or {})
            hashes = dict(record.hashes or {})
            for name, data in files.items():
                atomic_write(tmp / name, _writer(data))
                st = os.lstat(tmp / name)
                stamps[name] = [st.st_size, st.st_mtime_ns]
                hashes[name] = content_hash(data)
            record.stamps, record.hashes = stamps, hashes
            write_record(tmp, record)
            os.replace(tmp, final)
        except OSError as e:
            raise output_error(final, e) from None

    def _run(self, pending: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write(self.dir / _PENDING, lambda fh: fh.write(json_bytes(pending)))
        except OSError as e:
            raise output_error(self.dir / _PENDING, e) from None
        self._apply(pending)

    def _apply(self, pending: dict) -> None:
        """Steps 2 and 3 of an edit; each may be repeated after an interruption."""
        position, moves, edits = pending["position"], pending["moves"], pending["edits"]
        state = self.dir / state_name(position)
        target = read_record(state)
        if target is None:
            raise OutputFormatError(f"{str(state)!r}: the journal lost a state; sort again")
        for old, new in moves:
            move_file(self.root, old, new)
        current = read_record(self.root)
        for name in STATE_FILES:
            src = state / name
            if src.is_file():
                try:
                    tmp = self.root / f".{name}.installing.tmp"
                    shutil.copy2(src, tmp)
                    os.replace(tmp, self.root / name)
                except OSError as e:
                    raise output_error(self.root / name, e) from None
        target.files, target.stamps = _merged(target, current, moves)
        try:
            write_record(self.root, target)
            atomic_write(
                self.dir / _JOURNAL,
                lambda fh: fh.write(
                    json_bytes({"format": JOURNAL_FORMAT, "position": position, "edits": edits})
                ),
            )
            for extra in self.dir.glob("state-*"):
                n = extra.name.removeprefix("state-").removesuffix(".tmp")
                if extra.name.endswith(".tmp") or (
                    n.isdigit() and not position - MAX_UNDO <= int(n) <= len(edits)
                ):
                    _remove_tree(extra)
            for extra in self.dir.glob("made-*"):  # files of placements no longer undoable
                n = extra.name.removeprefix("made-")
                if n.isdigit() and not position - MAX_UNDO < int(n) <= len(edits):
                    _remove_tree(extra)
            (self.dir / _PENDING).unlink(missing_ok=True)
        except OSError as e:
            raise output_error(self.dir, e) from None
        self.position, self.edits = position, edits


def _merged(target: RunRecord, current: RunRecord | None, moves: list) -> tuple[list, dict]:
    """The files of ``target`` and the stamps, plus what others recorded since in the
    folder's current record (the report's files, say): they stay featclust's."""
    files = list(target.files)
    stamps = dict(target.stamps or {})
    if current is None:
        return files, stamps
    known = set(files) | {old for old, _ in moves} | {new for _, new in moves}
    for rel in current.files:
        if rel not in known:
            files.append(rel)
            known.add(rel)
            old_stamps = current.stamps or {}
            if rel in old_stamps:
                stamps[rel] = old_stamps[rel]
    return files, stamps


def _writer(data: bytes):
    """A writer of ``data`` for :func:`featclust.fileio.atomic_write`."""
    return lambda fh: fh.write(data)


def move_file(root: Path, old: str, new: str) -> None:
    """Move ``root/old`` to ``root/new`` without ever replacing a file there.

    A hard link under the new name, then the old name removed (a rename where
    the file system has no hard links); folders left empty go. Repeating it
    after an interruption finishes it.

    Raises
    ------
    UnsafeOutputError
        If another file is at ``new``.
    OutputError
        If the file system refuses.
    """
    src, dst = os.path.join(root, old), os.path.join(root, new)
    try:
        there = os.lstat(dst)
    except FileNotFoundError:
        there = None
    if there is not None:
        try:
            st = os.lstat(src)
        except FileNotFoundError:
            return  # moved before an interruption
        if (st.st_ino, st.st_dev) != (there.st_ino, there.st_dev):
            raise UnsafeOutputError(
                f"{dst!r} exists and was not written by featclust; refusing to overwrite it "
                "(move it away and run again)"
            )
        os.unlink(src)
        prune(root, old)
        return
    if not os.path.lexists(src):
        return
    try:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.link(src, dst, follow_symlinks=False)
            os.unlink(src)
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            os.rename(src, dst)
    except OSError as e:
        raise output_error(dst, e) from None
    prune(root, old)


def prune(root: Path, rel: str) -> None:
    """Remove the folders of ``rel`` that are left empty."""
    parent = os.path.dirname(rel)
    while parent:
        try:
            os.rmdir(os.path.join(root, parent))
        except OSError:
            return
        parent = os.path.dirname(parent)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path)
