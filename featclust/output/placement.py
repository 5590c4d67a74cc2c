"""Placing new images into a sorted folder (``assign --place``) as one edit.

The files are made first, each under a free name with an exclusive create;
their names are written beforehand to ``placing.json`` in the journal's
folder, so a placement interrupted while making them (Ctrl-C, ``kill -9``, a
full disk, a read-only cluster folder) is rolled back by whoever opens the
folder next: the files it made go, nothing else changes. Once they are all
made, ``labels.csv``, ``clusters.csv`` and the record gain them in one
transaction of the journal (:meth:`featclust.output.edits.Editor.place`):
one write of each for the whole batch, so placing N images costs O(N).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import OutputFormatError
from ..fileio import atomic_write, content_hash, json_bytes
from .folder import output_error
from .journal import JOURNAL_DIR, prune
from .record import read_record

_PLACING = "placing.json"


def begin(out_dir: str | os.PathLike, planned: list) -> None:
    """Write the intent of a placement: ``planned`` is ``[file, source, content hash, mode]``
    of each file about to be made (file relative to the folder)."""
    folder = Path(out_dir) / JOURNAL_DIR
    try:
        folder.mkdir(exist_ok=True)
        atomic_write(folder / _PLACING, lambda fh: fh.write(json_bytes({"files": planned})))
    except OSError as e:
        raise output_error(folder / _PLACING, e) from None


def done(out_dir: str | os.PathLike) -> None:
    """The placement is recorded (or rolled back): forget its intent."""
    try:
        (Path(out_dir) / JOURNAL_DIR / _PLACING).unlink(missing_ok=True)
    except OSError as e:
        raise output_error(Path(out_dir) / JOURNAL_DIR / _PLACING, e) from None


def recover(out_dir: str | os.PathLike) -> int:
    """Roll back a placement that did not finish: remove the files it made that the
    record does not list (each checked to be the placed image first). Returns how many."""
    out_dir = Path(out_dir)
    path = out_dir / JOURNAL_DIR / _PLACING
    try:
        planned = json.loads(path.read_text(encoding="utf-8"))["files"]
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OutputFormatError(f"cannot read {str(path)!r}: {e}") from None
    record = read_record(out_dir)
    recorded = set(record.files) if record is not None else set()
    removed = 0
    for rel, src, digest, mode in planned:
        if rel in recorded:
            continue
        target = out_dir / rel
        if made_from(target, src, digest, mode):
            try:
                os.unlink(target)
            except OSError as e:
                raise output_error(target, e) from None
            prune(out_dir, rel)
            removed += 1
    done(out_dir)
    return removed


def made_from(path: Path, src: str, digest: str, mode: str) -> bool:
    """Whether ``path`` is the file a placement made of ``src`` (content hash ``digest``)."""
    try:
        if mode == "symlink":
            return os.path.islink(path) and os.readlink(path) == os.path.abspath(src)
        if os.path.islink(path) or not os.path.isfile(path):
            return False
        with open(path, "rb") as fh:
            return content_hash(fh.read()) == digest
    except OSError:
        return False
