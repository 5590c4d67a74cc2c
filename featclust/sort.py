"""Placing images into cluster folders: ``OUT_DIR/cluster_XX/<relative path>``.

The output folder itself (what may be written, the record of what was) is
:class:`featclust.output.OutputFolder`; this module only puts files in it.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .checks import check_choice
from .errors import OutputError
from .fileio import replaced_atomically
from .images import READ_FAILURE, BadFile
from .output import output_error

MODES = ("copy", "symlink", "hardlink")


def cluster_dir_name(label, n_clusters):
    """``cluster_07``: the label zero-padded to the width of ``n_clusters - 1``."""
    width = max(2, len(str(max(n_clusters - 1, 0))))
    return f"cluster_{label:0{width}d}"


def destinations(paths, labels, n_clusters):
    """Destination of each image: its cluster folder plus its relative path."""
    return [f"{cluster_dir_name(int(c), n_clusters)}/{p}" for p, c in zip(paths, labels)]


def place(src, dst, mode="copy"):
    """Put ``src`` at ``dst`` by copy, symbolic link or hard link, atomically.

    The new file is made under a temporary name beside ``dst`` and renamed,
    so an interrupted copy or a full disk never leaves a half file.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(dst, prefix=".featclust-") as (fd, tmp):
        os.close(fd)
        if mode == "copy":
            shutil.copyfile(src, tmp)
            shutil.copystat(src, tmp)
        else:
            os.unlink(tmp)
            if mode == "symlink":
                os.symlink(os.path.abspath(src), tmp)
            else:
                os.link(src, tmp)


def sort_into_folders(image_dir, out, paths, labels, n_clusters, mode="copy", progress=None,
                      skipped=None):
    """Copy (or link) each image into ``cluster_XX/<its relative path>``.

    An image that can no longer be read (deleted or changed into something
    unreadable since it was embedded) is skipped and reported, not fatal;
    a failure to write into the output folder is.

    Parameters
    ----------
    image_dir : path-like
    out : featclust.output.OutputFolder
        Already claimed for the destinations (see :func:`destinations`).
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

    Returns
    -------
    list of str
        The destinations written, relative to the output folder.

    Raises
    ------
    OutputError
        If the output folder cannot be written.
    """
    check_choice("mode", mode, MODES)
    written = []
    for p, rel in zip(paths, destinations(paths, labels, n_clusters)):
        src = os.path.join(image_dir, p)
        try:
            if not os.path.isfile(src):
                raise FileNotFoundError(errno.ENOENT, "no such file", src)
            place(src, out.path / rel, mode)
        except OSError as e:
            if skipped is not None and not _readable(src):
                skipped.append(BadFile(p, f"{READ_FAILURE} when copying (deleted or changed "
                                          f"since it was embedded?): {e.strerror or e}"))
                continue
            if mode == "hardlink" and e.errno == errno.EXDEV:
                raise OutputError("cannot hard-link across file systems; use mode='copy' or "
                                  "mode='symlink'") from None
            raise output_error(out.path / rel, e) from None
        out.stamp(rel)
        written.append(rel)
        if progress:
            progress(1)
    return written


def _readable(path):
    try:
        with open(path, "rb"):
            return os.path.isfile(path)
    except OSError:
        return False
