"""Writing the output folder: images sorted into cluster folders, and files beside them.

Every file featclust writes in an output folder is listed in its marker,
``featclust.json``, before it is written. A later run removes only those
files, so anything a person put there stays, and a file featclust did not
write is never overwritten.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import OutputError, UnsafeOutputError, UsageError
from .images import OUTPUT_MARKER

MODES = ("copy", "symlink", "hardlink")
MARKER_FORMAT = 1


def cluster_dir_name(label, n_clusters):
    """``cluster_07``: the label zero-padded to the width of ``n_clusters - 1``."""
    width = max(2, len(str(max(n_clusters - 1, 0))))
    return f"cluster_{label:0{width}d}"


def _inside(child, parent):
    child, parent = Path(child), Path(parent)
    return child == parent or parent in child.parents


class OutputFolder:
    """An output folder that featclust may write into.

    Parameters
    ----------
    out_dir : path-like
    image_dir : path-like, optional
        The input folder; the two must not contain one another.

    Raises
    ------
    UnsafeOutputError
        If the folders overlap, or ``out_dir`` is a file or a non-empty
        folder that is not a featclust output.
    """

    def __init__(self, out_dir, image_dir=None):
        self.path = Path(out_dir)
        real = Path(os.path.realpath(out_dir))
        if image_dir is not None:
            img = Path(os.path.realpath(image_dir))
            if _inside(real, img):
                raise UnsafeOutputError(f"output folder {str(out_dir)!r} is inside the image "
                                        f"folder {str(image_dir)!r}; choose a folder outside it")
            if _inside(img, real):
                raise UnsafeOutputError(f"image folder {str(image_dir)!r} is inside the output "
                                        f"folder {str(out_dir)!r}; choose another output folder")
        self.marker = self.path / OUTPUT_MARKER
        self.previous = {}
        if self.path.exists() and not self.path.is_dir():
            raise UnsafeOutputError(f"output path {str(out_dir)!r} exists and is not a folder")
        try:
            non_empty = self.path.is_dir() and any(self.path.iterdir())
        except OSError as e:
            raise OutputError(f"cannot read output folder {str(out_dir)!r}: {e.strerror}") \
                from None
        if non_empty:
            try:
                self.previous = json.loads(self.marker.read_text(encoding="ascii"))
                if (self.previous.get("featclust_output") != MARKER_FORMAT
                        or not isinstance(self.previous.get("files", []), list)):
                    raise ValueError("not a featclust marker")
            except (OSError, ValueError, AttributeError):
                raise UnsafeOutputError(
                    f"output folder {str(out_dir)!r} is not empty and is not a featclust output; "
                    "choose an empty or new folder") from None
        self.files = [f for f in self.previous.get("files", []) if isinstance(f, str)]
        self._real = Path(os.path.realpath(self.path))

    def owned(self, rel):
        """Whether featclust wrote ``rel`` (a path relative to the folder)."""
        return rel in self._owned_set()

    def _owned_set(self):
        if not hasattr(self, "_owned"):
            self._owned = set(self.files)
        return self._owned

    def _contained(self, rel):
        """Whether ``rel`` stays inside the folder, even through links (a user may
        have replaced a cluster folder by a link to their own files)."""
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return False
        return _inside(Path(os.path.realpath(self.path / Path(rel).parent)), self._real)

    def check_free(self, rels):
        """Refuse if any of ``rels`` exists and was not written by featclust, or
        leads out of the folder."""
        owned = self._owned_set()
        for rel in rels:
            if not self._contained(rel):
                raise UnsafeOutputError(f"{str(self.path / rel)!r} leads outside the output "
                                        "folder (through a link?); refusing to write there")
            if rel not in owned and os.path.lexists(self.path / rel):
                raise UnsafeOutputError(f"{str(self.path / rel)!r} exists and was not written by "
                                        "featclust; refusing to overwrite it")

    def clear(self):
        """Remove every file featclust wrote here before, and folders left empty."""
        dirs = set()
        for rel in self.files:
            if not self._contained(rel):
                continue
            p = self.path / rel
            try:
                if p.is_symlink() or p.is_file():
                    p.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise OutputError(f"cannot remove old output {str(p)!r}: {e.strerror}") from None
            dirs.update(Path(rel).parents)
        for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
            if d.parts:
                try:
                    (self.path / d).rmdir()
                except OSError:
                    pass
        self.files = []
        self._owned = set()

    def release(self, rels):
        """Remove files featclust wrote here (``rels``) and drop them from the marker.

        Only files recorded in the marker are touched; folders left empty go too.
        """
        owned = self._owned_set()
        rels = [rel for rel in rels if rel in owned]
        keep = [rel for rel in self.files if rel not in set(rels)]
        self.files = rels
        self.clear()
        self.files = keep
        self._owned = set(keep)
        self.write_marker(None, self.previous.get("status", "complete"))

    def claim(self, rels, info=None, status="writing"):
        """Record ``rels`` as featclust's files in the marker, before writing them."""
        self.check_free(rels)
        owned = self._owned_set()
        for rel in rels:
            if rel not in owned:
                owned.add(rel)
                self.files.append(rel)
        self.write_marker(info, status)

    def write_marker(self, info=None, status="complete"):
        """Rewrite ``featclust.json`` with the file list, ``info`` and ``status``."""
        from .store import atomic_write

        data = dict(self.previous if info is None else info)
        data.update(featclust_output=MARKER_FORMAT, status=status, files=self.files)
        self.previous = data
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(self.marker, lambda fh: fh.write(
                json.dumps(data, indent=1, sort_keys=True).encode("ascii")))
        except OSError as e:
            raise _output_error(self.marker, e) from None

    def write_text(self, rel, text):
        """Write a claimed text file atomically."""
        from .store import atomic_write

        path = self.path / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda fh: fh.write(text), "w")
        except OSError as e:
            raise _output_error(path, e) from None
        return path

    def write_bytes(self, rel, data):
        """Write a claimed binary file atomically."""
        from .store import atomic_write

        path = self.path / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda fh: fh.write(data))
        except OSError as e:
            raise _output_error(path, e) from None
        return path


def _output_error(path, e):
    if e.errno == errno.ENOSPC:
        return OutputError(f"disk full while writing {str(path)!r}; free space and run again")
    return OutputError(f"cannot write {str(path)!r}: {e.strerror or e}")


def place(src, dst, mode="copy"):
    """Put ``src`` at ``dst`` by copy, symbolic link or hard link, atomically.

    The new file is made under a temporary name beside ``dst`` and renamed,
    so an interrupted copy or a full disk never leaves a half file.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".featclust-", suffix=".tmp")
    os.close(fd)
    try:
        if mode == "copy":
            shutil.copyfile(src, tmp)
            shutil.copystat(src, tmp)
        else:
            os.unlink(tmp)
            if mode == "symlink":
                os.symlink(os.path.abspath(src), tmp)
            else:
                os.link(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_labels_csv(paths, labels, distances):
    """The text of ``labels.csv``: ``path,cluster,distance``, one row per image."""
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "cluster", "distance"])
    for p, c, d in zip(paths, labels, distances):
        w.writerow([p, int(c), f"{float(d):.6g}"])
    return buf.getvalue()


def read_labels_csv(path):
    """Read ``labels.csv`` back: lists of paths, cluster labels and distances."""
    paths, labels, dists = [], [], []
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        for row in csv.DictReader(fh):
            paths.append(row["path"])
            labels.append(int(row["cluster"]))
            dists.append(float(row["distance"]))
    return paths, labels, dists


def sort_into_folders(image_dir, out, paths, labels, n_clusters, mode="copy", progress=None):
    """Copy (or link) each image into ``cluster_XX/<its relative path>``.

    Parameters
    ----------
    image_dir : path-like
    out : OutputFolder
        Already claimed for the destinations (see :func:`destinations`).
    paths : list of str
        Relative image paths.
    labels : sequence of int
    n_clusters : int
    mode : {"copy", "symlink", "hardlink"}
    progress : callable, optional
        ``progress(n)`` after every ``n`` files placed.

    Returns
    -------
    list of str
        Destinations relative to the output folder.
    """
    if mode not in MODES:
        raise UsageError(f"mode={mode!r} is not one of {', '.join(MODES)}")
    dests = destinations(paths, labels, n_clusters)
    for p, rel in zip(paths, dests):
        try:
            place(os.path.join(image_dir, p), out.path / rel, mode)
        except OSError as e:
            if mode == "hardlink" and e.errno == errno.EXDEV:
                raise OutputError("cannot hard-link across file systems; use --mode copy or "
                                  "--mode symlink") from None
            raise _output_error(out.path / rel, e) from None
        if progress:
            progress(1)
    return dests


def destinations(paths, labels, n_clusters):
    """Destination of each image: its cluster folder plus its relative path."""
    return [f"{cluster_dir_name(int(c), n_clusters)}/{p}" for p, c in zip(paths, labels)]
