"""Writing files safely, and the small file formats every module shares.

* :func:`atomic_write`: a temporary file in the same folder, ``fsync`` and
  :func:`os.replace`, so a crash never leaves a half-written file.
* :func:`csv_text` / :func:`read_csv`: every CSV featclust writes, written
  and read one way (UTF-8, names that are not UTF-8 kept with
  ``surrogateescape``).
* :func:`content_hash`: how a file's content is recognised.
* :func:`inside`: whether a path lies in a folder.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, Union

#: What a path parameter accepts.
PathLike = Union[str, "os.PathLike[str]"]


def atomic_write(path: PathLike, write: Callable[[IO], Any], mode: str = "wb") -> None:
    """Write ``path`` through a temporary file in the same folder and ``os.replace``.

    Parameters
    ----------
    path : path-like
    write : callable
        Called with the open temporary file.
    mode : str
        ``"wb"`` or ``"w"`` (UTF-8 text, surrogates kept, no newline translation).
    """
    path = Path(path)
    with replaced_atomically(path) as (fd, tmp):
        # mkstemp makes the file private (0600); the result gets the mode any new file
        # gets under the umask (0644 under the usual 022), so others can read reports.
        os.chmod(tmp, 0o666 & ~current_umask())
        kwargs: dict[str, Any] = (
            {} if "b" in mode else {"encoding": "utf-8", "errors": "surrogateescape", "newline": ""}
        )
        with os.fdopen(fd, mode, **kwargs) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def replaced_atomically(
    path: PathLike,
    prefix: str | None = None,
) -> Iterator[tuple[int, str]]:
    """Make ``path`` anew through a temporary file beside it, moved into place at the end.

    Yields ``(fd, tmp)``: the open descriptor and the name of a new, empty
    temporary file in ``path``'s folder (named ``prefix`` + random +
    ``.tmp``; default prefix ``.<name>.``). When the block ends normally the
    temporary file replaces ``path`` (:func:`os.replace`); when it raises,
    the temporary file is removed. A caller may close ``fd`` or replace
    ``tmp`` by a link; whatever is at ``tmp`` at the end is moved.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}.", suffix=".tmp")
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def json_bytes(obj: Any) -> bytes:
    """``obj`` as indented, key-sorted ASCII JSON (how featclust writes every JSON file)."""
    return json.dumps(obj, indent=1, sort_keys=True).encode("ascii")


def content_hash(data: bytes) -> str:
    """Hex digest used to recognise a file's content (BLAKE2b-128)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The text of a CSV file: ``header``, then ``rows``, every line ending in ``\\n``.

    Every field is quoted when it holds a comma, quote, newline or carriage
    return, so any file name reads back unchanged with :func:`read_csv`.
    """
    buf = io.StringIO()
    plain = csv.writer(buf, lineterminator="\n")
    # The csv module quotes a field with "\n" but not one with a lone "\r"
    # when lines end in "\n"; such rows are written fully quoted.
    quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    plain.writerow(header)
    for row in rows:
        (quoted if any("\r" in f for f in row if isinstance(f, str)) else plain).writerow(row)
    return buf.getvalue()


def read_csv(path: PathLike, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Rows of a CSV file written by :func:`csv_text` (or a person), as dicts.

    Parameters
    ----------
    path : path-like
    required : iterable of str
        Columns the file must have.

    Raises
    ------
    ValueError
        If a required column is missing or the file is not valid CSV.
    OSError
        If the file cannot be read.
    """
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        try:
            missing = set(required) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"missing column(s) {', '.join(sorted(missing))}")
            return list(reader)
        except csv.Error as e:
            raise ValueError(f"not valid CSV: {e}") from None


def fmt_num(x: Any, digits: int | None = 6) -> str:
    """A number for a file or a page: ``digits`` significant digits; ``""`` for None/NaN.

    Raises
    ------
    TypeError
        If ``x`` is not a number (a tampered file must not put text on a page).
    """
    if x is None:
        return ""
    if isinstance(x, (bool, str, bytes)):
        raise TypeError(f"not a number: {x!r}")
    x = float(x)
    return "" if math.isnan(x) else f"{x:.{digits}g}"


def norm_relpath(p: str) -> str:
    """A relative path as ``labels.csv`` writes it: ``/`` separators, no ``./`` or ``a/..``."""
    return os.path.normpath(p.strip().replace("\\", "/")).replace(os.sep, "/")


def inside(child: PathLike, parent: PathLike) -> bool:
    """Whether path ``child`` is ``parent`` or lies below it (no link resolution)."""
    child, parent = Path(child), Path(parent)
    return child == parent or parent in child.parents
