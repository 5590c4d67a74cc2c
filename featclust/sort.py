"""Placing images into cluster folders: ``OUT_DIR/cluster_XX/<relative path>``.

The output folder itself (what may be written, the record of what was) is
:class:`featclust.output.OutputFolder`; this module only puts files in it.

A re-sort costs what the file system must do: a file already at its place,
made from the same image (same size, modification time, inode and status
change time, as recorded in ``featclust.json``) and unchanged since, is left
as it is, and one in another cluster folder is moved (:func:`in_place`);
every other file is made under its own name with an exclusive create
(nothing featclust did not write can be overwritten), and removed again if
making it fails.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .checks import check_choice
from .errors import OutputError, UnsafeOutputError
from .images import READ_FAILURE, BadFile
from .output import OutputFolder, output_error
from .output.names import cluster_dir_name

MODES = ("copy", "symlink", "hardlink")


def destinations(paths: Sequence[str], labels: Sequence[int], n_clusters: int) -> list[str]:
    """Destination of each image: its cluster folder plus its relative path."""
    names = [cluster_dir_name(c, n_clusters) for c in range(n_clusters)]
    return [f"{names[int(c)]}/{p}" for p, c in zip(paths, labels)]


def place(
    src: str | os.PathLike, dst: str | os.PathLike, mode: str = "copy"
) -> tuple[os.stat_result, list]:
    """Put ``src`` at ``dst`` by copy, symbolic link or hard link; ``dst`` must not exist.

    A copy is made under a temporary name beside ``dst`` and linked to it,
    so an interrupted copy or a full disk never leaves a half file, and
    nothing at ``dst`` is ever replaced (:class:`FileExistsError`). For
    ``assign --place``; a sort makes its files with :func:`sort_into_folders`.

    Returns
    -------
    stat : os.stat_result
        ``lstat`` of the file made.
    source : list
        The :func:`source_stamp` of ``src``.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    st = os.stat(src)
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
        return os.lstat(dst), source_stamp(st)
    if mode == "hardlink":
        os.link(src, dst)
        made = os.lstat(dst)
        return made, source_stamp(made)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".featclust-", suffix=".tmp")
    try:
        os.close(fd)
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)
        try:
            os.link(tmp, dst)
        except FileExistsError:
            raise
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                raise
            if os.path.lexists(dst):  # a file system without hard links
                raise FileExistsError(errno.EEXIST, "file exists", os.fspath(dst)) from None
            os.rename(tmp, dst)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return os.lstat(dst), source_stamp(st)


def source_stamp(st: os.stat_result) -> list:
    """``[size, mtime_ns, ino, ctime_ns]``: what tells an image changed or replaced."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def in_place(
    out: OutputFolder,
    image_dir: str | os.PathLike,
    paths: Sequence[str],
    dests: Sequence[str],
    mode: str,
) -> dict[str, str]:
    """The destinations whose image the output folder already holds, and where.

    The folder holds an image when its last run placed it from the same
    image folder with the same ``mode``, the file is as featclust wrote it
    (:meth:`~featclust.output.OutputFolder.intact`), and the image has the
    size, modification time, inode and status change time recorded when it
    was placed. The file may be at the destination itself (nothing to do) or
    in another cluster folder (it is moved, not made again).

    Parameters
    ----------
    out : featclust.output.OutputFolder
    image_dir : path-like
    paths : list of str
        Relative image paths.
    dests : list of str
        Their destinations (see :func:`destinations`).
    mode : {"copy", "symlink", "hardlink"}

    Returns
    -------
    dict of str to str
        Destination to the file that holds its image, relative to the folder.
    """
    record = out.record
    if record is None or record.mode != mode or record.image_dir != os.path.abspath(image_dir):
        return {}
    held: dict[str, str] = {}
    for rel in out.sources:
        if out.intact(rel):
            held.setdefault(rel.partition("/")[2], rel)
    found = {}
    for p, rel in zip(paths, dests):
        where = held.get(p)
        if where is None:
            continue
        try:
            st = os.stat(os.path.join(image_dir, p))
        except OSError:
            continue
        if source_stamp(st) == out.sources[where]:
            found[rel] = where
    return found


def sort_into_folders(
    image_dir: str | os.PathLike,
    out: OutputFolder,
    paths: Sequence[str],
    labels: Sequence[int],
    n_clusters: int,
    mode: str = "copy",
    progress: Callable[[int], object] | None = None,
    skipped: list | None = None,
    held: Mapping[str, str] | None = None,
) -> list[str]:
    """Copy (or link) each image into ``cluster_XX/<its relative path>``.

    An image that can no longer be read (deleted or changed into something
    unreadable since it was embedded) is skipped and reported, not fatal;
    a failure to write into the output folder is.

    Parameters
    ----------
    image_dir : path-like
    out : featclust.output.OutputFolder
        Already claimed for the destinations (see :func:`destinations`), and
        cleared of featclust's earlier files but ``keep``: every other
        destination must be free.
    paths : list of str
        Relative image paths.
    labels : sequence of int
    n_clusters : int
    mode : {"copy", "symlink", "hardlink"}
    progress : callable, optional
        ``progress(n)`` after every ``n`` files placed.
    skipped : list, optional
        Images that can no longer be read are appended to it as
        :class:`featclust.images.BadFile` and left out; without it they are
        an error like any other.
    held : dict of str to str, optional
        Destinations whose image the folder already holds (see
        :func:`in_place`): left as they are when the file is the destination
        itself, moved there from another cluster folder otherwise.

    Returns
    -------
    list of str
        The destinations written or kept, relative to the output folder.

    Raises
    ------
    OutputError
        If the output folder cannot be written.
    UnsafeOutputError
        If a file appeared at a destination since the folder was checked.
    """
    check_choice("mode", mode, MODES)
    held = held or {}
    written: list[str] = []
    moved: list[str] = []
    made = set()
    root = os.fspath(out.path)
    for p, rel in zip(paths, destinations(paths, labels, n_clusters)):
        where = held.get(rel)
        if where == rel:
            written.append(rel)
            if progress:
                progress(1)
            continue
        src = os.path.join(image_dir, p)
        dst = os.path.join(root, rel)
        try:
            folder = os.path.dirname(dst)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            st = None
            if where is not None:
                st = _move(os.path.join(root, where), dst)
                if st is not None:
                    moved.append(where)
                    source = source_stamp(st) if mode == "hardlink" else out.sources[where]
            if st is None:
                st, source = _make(src, dst, mode)
        except FileExistsError:
            raise UnsafeOutputError(
                f"{dst!r} appeared while featclust was writing and was "
                "not written by featclust; refusing to overwrite it (move "
                "it away and run again)"
            ) from None
        except OSError as e:
            if skipped is not None and not _readable(src):
                skipped.append(
                    BadFile(
                        p,
                        f"{READ_FAILURE} when copying (deleted or changed "
                        f"since it was embedded?): {e.strerror or e}",
                    )
                )
                continue
            if mode == "hardlink" and e.errno == errno.EXDEV:
                raise OutputError(
                    "cannot hard-link across file systems; use mode='copy' or mode='symlink'"
                ) from None
            raise output_error(dst, e) from None
        out.stamp(rel, st, source)
        written.append(rel)
        if progress:
            progress(1)
    out.forget(moved)
    return written


def _move(old: str, new: str) -> os.stat_result | None:
    """Move featclust's file ``old`` to ``new``, which must not exist (a hard link,
    then ``old`` removed: never replaces anything); ``None`` where the file system
    has no hard links (the file is then made again)."""
    try:
        os.link(old, new, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        return None
    os.unlink(old)
    return os.lstat(new)


def _make(src: str, dst: str, mode: str) -> tuple[os.stat_result, list]:
    """Make ``dst``, which must not exist, from ``src``; nothing is left at ``dst``
    when it fails.

    Returns the ``lstat`` of ``dst`` and the :func:`source_stamp` of ``src``.
    """
    st = os.stat(src)
    if not stat.S_ISREG(st.st_mode):
        raise FileNotFoundError(errno.ENOENT, "no such file", src)
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
        return os.lstat(dst), source_stamp(st)
    if mode == "hardlink":
        os.link(src, dst)
        made = os.lstat(dst)  # the image's own inode, its status change time now updated
        return made, source_stamp(made)
    os.close(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        shutil.copyfile(src, dst)
        os.chmod(dst, stat.S_IMODE(st.st_mode))
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
        return os.lstat(dst), source_stamp(st)
    except BaseException:
        try:
            os.unlink(dst)
        except OSError:
            pass
        raise


def _readable(path: str) -> bool:
    try:
        with open(path, "rb"):
            return os.path.isfile(path)
    except OSError:
        return False
