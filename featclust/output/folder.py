"""An output folder featclust may write into, and the files it wrote there.

Every file is recorded in ``featclust.json`` (claimed) before it is
written, so a later run removes only featclust's own files and never
overwrites anyone else's; a file featclust wrote and someone changed since is
left alone. Checks are made once per folder (does it lead outside, which
names are there), not once per file, so a folder of many thousand images
costs one listing, not thousands of look-ups.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import OutputError, OutputFormatError, UnsafeOutputError
from ..fileio import atomic_write, content_hash, inside
from ..images import OUTPUT_MARKER
from .record import RunRecord, read_record, write_record

#: Temporary files of :func:`featclust.sort.place` (``.featclust-XXXXXXXX.tmp``) and of
#: :func:`featclust.fileio.atomic_write` (``.<name>.XXXXXXXX.tmp``).
_TEMPORARY = re.compile(r"^\.(?:featclust-|(?P<name>.+)\.)[a-z0-9_]{8}\.tmp$")


class OutputFolder:
    """An output folder that featclust may write into.

    Parameters
    ----------
    out_dir : path-like
    image_dir : path-like, optional
        The input folder; the two must not contain one another.

    Attributes
    ----------
    path : pathlib.Path
    record : RunRecord or None
        The folder's record (``None`` for a new or empty folder).
    files : list of str
        The files featclust wrote here.
    stamps : dict
        ``[size, mtime_ns]`` of each file as featclust wrote it.
    sources : dict
        ``[size, mtime_ns, ino, ctime_ns]`` of the image each placed file was
        made from (see :attr:`featclust.output.RunRecord.sources`).
    changed : list of str
        Files of :attr:`files` changed since featclust wrote them: never
        replaced or removed.

    Raises
    ------
    UnsafeOutputError
        If the folders overlap, or ``out_dir`` is a file or a non-empty
        folder that is not a featclust output.
    """

    def __init__(self, out_dir: str | os.PathLike, image_dir: str | os.PathLike | None = None):
        self.path = Path(out_dir)
        real = Path(os.path.realpath(out_dir))
        if image_dir is not None:
            img = Path(os.path.realpath(image_dir))
            if inside(real, img):
                raise UnsafeOutputError(
                    f"output folder {str(out_dir)!r} is inside the image "
                    f"folder {str(image_dir)!r}; choose a folder outside it"
                )
            if inside(img, real):
                raise UnsafeOutputError(
                    f"image folder {str(image_dir)!r} is inside the output "
                    f"folder {str(out_dir)!r}; choose another output folder"
                )
        self.marker = self.path / OUTPUT_MARKER
        self.record: RunRecord | None = None
        if self.path.exists() and not self.path.is_dir():
            raise UnsafeOutputError(f"output path {str(out_dir)!r} exists and is not a folder")
        try:
            non_empty = self.path.is_dir() and any(self.path.iterdir())
        except OSError as e:
            raise OutputError(f"cannot read output folder {str(out_dir)!r}: {e.strerror}") from None
        if non_empty:
            try:
                self.record = read_record(self.path)
            except OutputFormatError:
                self.record = None
            if self.record is None:
                raise UnsafeOutputError(
                    f"output folder {str(out_dir)!r} is not empty and is not a featclust output; "
                    "choose an empty or new folder"
                )
        self.files: list[str] = list(self.record.files) if self.record else []
        self.stamps: dict = dict(self.record.stamps or {}) if self.record else {}
        self.sources: dict = dict(self.record.sources or {}) if self.record else {}
        self._real = Path(os.path.realpath(self.path))
        self._root = os.fspath(self.path)
        self._dirs: dict[str, bool] = {}  # folder (relative) -> whether it stays inside
        # Each file is "intact" (as featclust wrote it), "changed" (replaced or edited
        # since) or neither: no stamp (written by an interrupted run or an older
        # version, so still featclust's) or not there.
        self._intact: set[str] = set()
        changed = []
        for rel in self.files:
            stamp = self.stamps.get(rel)
            if not isinstance(stamp, list) or len(stamp) != 2 or not self._contained(rel):
                continue
            try:
                st = os.lstat(os.path.join(self._root, rel))
            except OSError:
                continue
            if st.st_size == stamp[0] and st.st_mtime_ns == stamp[1]:
                self._intact.add(rel)
            else:
                changed.append(rel)
        self.hashes: dict = dict(self.record.hashes or {}) if self.record else {}
        if changed and self.record is not None:  # times changed, content not: cp -r
            found = recognised(self.path, self.record, changed)
            self.stamps.update(found)
            self._intact |= set(found)
            changed = [rel for rel in changed if rel not in found]
        self.changed = sorted(changed)
        self._owned = set(self.files) - set(self.changed)

    @property
    def status(self) -> str | None:
        """The recorded status (``None`` for a new folder)."""
        return self.record.status if self.record else None

    def intact(self, rel: str) -> bool:
        """Whether ``rel`` is featclust's and was, when the folder was opened, as
        featclust wrote it (its recorded size and modification time)."""
        return rel in self._intact and rel in self._owned

    def _contained(self, rel: str) -> bool:
        """Whether ``rel`` stays inside the folder, even through links (a user may
        have replaced a cluster folder by a link to their own files); checked once
        per folder."""
        parent, _, name = rel.rpartition("/")
        known = self._dirs.get(parent)
        if known is None:
            known = self._dirs[parent] = ".." not in parent.replace("\\", "/").split(
                "/"
            ) and inside(Path(os.path.realpath(self.path / parent)), self._real)
        return known and name not in ("", ".", "..") and not os.path.isabs(rel)

    def check_free(self, rels: Iterable[str]) -> None:
        """Refuse if any of ``rels`` exists and was not written by featclust (or was
        changed since), or leads out of the folder.

        Each folder is listed once, so checking many files costs one listing per
        folder rather than one look-up per file.
        """
        changed = set(self.changed)
        listings: dict[str, set] = {}
        for rel in rels:
            if not self._contained(rel):
                raise UnsafeOutputError(
                    f"{str(self.path / rel)!r} leads outside the output "
                    "folder (through a link?); refusing to write there"
                )
            if rel in self._owned:
                continue
            parent, _, name = rel.rpartition("/")
            names = listings.get(parent)
            if names is None:
                names = listings[parent] = _listing(self.path / parent)
            if name in names:
                why = (
                    "was changed since featclust wrote it"
                    if rel in changed
                    else "was not written by featclust"
                )
                raise UnsafeOutputError(
                    f"{str(self.path / rel)!r} exists and {why}; refusing "
                    "to overwrite it (move it away and run again)"
                )

    def clear(self, keep: Iterable[str] = ()) -> None:
        """Remove every file featclust wrote here before but those of ``keep`` (and
        those changed since: see :attr:`changed`), temporary files left by an
        interrupted run, and folders left empty.

        Parameters
        ----------
        keep : iterable of str
            Files to leave in place, with their stamps (only files that are
            :meth:`intact` are kept).
        """
        keep = {rel for rel in keep if self.intact(rel)}
        self._remove([rel for rel in self.files if rel not in keep], tidy=self.files)
        self.files = [rel for rel in self.files if rel in keep]
        self.stamps = {rel: s for rel, s in self.stamps.items() if rel in keep}
        self.sources = {rel: s for rel, s in self.sources.items() if rel in keep}
        self._owned = set(self.files)

    def _remove(self, rels: list[str], tidy: Iterable[str] = ()) -> None:
        """Remove ``rels`` (featclust's, not changed, inside the folder), the temporary
        files in their folders and those of ``tidy``, and folders left empty."""
        names: dict[str, set] = {}
        for rel in [*rels, *tidy]:
            parent, _, name = rel.rpartition("/")
            names.setdefault(parent, set()).add(name)
        changed = set(self.changed)
        emptied = set()
        for rel in rels:
            if rel in changed or not self._contained(rel):
                continue
            p = os.path.join(self._root, rel)
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                if not os.path.isdir(p):  # a folder where featclust wrote a file: leave it
                    raise OutputError(f"cannot remove old output {p!r}: {e.strerror}") from None
            emptied.add(rel.rpartition("/")[0])
        dirs = set()
        for d in set(names) | emptied:
            while d:
                dirs.add(d)
                d = posixpath.dirname(d)
        for d in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
            _remove_temporaries(self.path / d, names.get(d, ()))
            try:
                (self.path / d).rmdir()
            except OSError:
                pass
        _remove_temporaries(self.path, names.get("", ()))

    def release(self, rels: Iterable[str]) -> None:
        """Remove files featclust wrote here (``rels``) and drop them from the record.

        Only files recorded as featclust's are touched; folders left empty go too.
        """
        rels = [rel for rel in rels if rel in self._owned]
        self._remove(rels)
        gone = set(rels)
        self.files = [rel for rel in self.files if rel not in gone]
        self.stamps = {rel: s for rel, s in self.stamps.items() if rel not in gone}
        self.sources = {rel: s for rel, s in self.sources.items() if rel not in gone}
        self._owned = set(self.files) - set(self.changed)
        self.write_marker(None, self.status or "complete")

    def forget(self, rels: Iterable[str]) -> None:
        """Drop ``rels`` from the record (in memory: the next :meth:`write_marker`
        writes it) and remove the folders they leave empty: files featclust moved
        elsewhere, recorded under their new names with :meth:`stamp`."""
        gone = set(rels)
        if not gone:
            return
        self.files = [rel for rel in self.files if rel not in gone]
        self.stamps = {rel: s for rel, s in self.stamps.items() if rel not in gone}
        self.sources = {rel: s for rel, s in self.sources.items() if rel not in gone}
        self._owned -= gone
        dirs = set()
        for rel in gone:
            d = posixpath.dirname(rel)
            while d:
                dirs.add(d)
                d = posixpath.dirname(d)
        for d in sorted(dirs, key=lambda d: d.count("/"), reverse=True):
            try:
                (self.path / d).rmdir()
            except OSError:
                pass  # not empty

    def claim(
        self, rels: Iterable[str], record: RunRecord | None = None, status: str = "writing"
    ) -> None:
        """Record ``rels`` as featclust's files, before writing them (one write of
        the record for all of them).

        Parameters
        ----------
        rels : list of str
        record : RunRecord, optional
            The new record (default: keep the current one).
        status : str
        """
        rels = list(rels)
        self.check_free(rels)
        for rel in rels:
            if rel not in self._owned:
                self._owned.add(rel)
                self.files.append(rel)
        self.write_marker(record, status)

    def write_marker(self, record: RunRecord | None = None, status: str = "complete") -> None:
        """Rewrite ``featclust.json`` with ``record`` (or the current one), the file
        list, the stamps and ``status``."""
        record = record if record is not None else (self.record or RunRecord())
        listed = set(self.files)
        files = self.files + [rel for rel in self.changed if rel not in listed]
        stamps = {rel: self.stamps[rel] for rel in files if rel in self.stamps}
        sources = {rel: self.sources[rel] for rel in files if rel in self.sources}
        hashes = {rel: self.hashes[rel] for rel in files if rel in self.hashes}
        record = dataclasses.replace(
            record,
            status=status,
            files=files,
            stamps=stamps,
            sources=sources or None,
            hashes=hashes or None,
        )
        self.record = record
        try:
            write_record(self.path, record)
        except OSError as e:
            raise output_error(self.marker, e) from None

    def write_text(self, rel: str, text: str) -> Path:
        """Write a claimed text file atomically."""
        return self.write_bytes(rel, text.encode("utf-8", "surrogateescape"))

    def write_bytes(self, rel: str, data: bytes) -> Path:
        """Write a claimed binary file atomically."""
        path = self._write(rel, lambda fh: fh.write(data), "wb")
        self.hashes[rel] = content_hash(data)
        return path

    def _write(self, rel: str, write: Callable, mode: str) -> Path:
        if rel not in self._owned:
            raise OutputError(f"{str(self.path / rel)!r} was not claimed before writing")
        path = self.path / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, write, mode)
        except OSError as e:
            raise output_error(path, e) from None
        self.stamp(rel)
        return path

    def stamp(self, rel: str, st: os.stat_result | None = None, source: list | None = None) -> None:
        """Remember the size and modification time of ``rel`` as featclust wrote it.

        Parameters
        ----------
        rel : str
        st : os.stat_result, optional
            ``os.lstat`` of the file just written (default: taken now).
        source : list, optional
            ``[size, mtime_ns, ino, ctime_ns]`` of the image the file was made from.
        """
        if st is None:
            try:
                st = os.lstat(self.path / rel)
            except OSError:
                return
        self.stamps[rel] = [st.st_size, st.st_mtime_ns]
        if source is not None:
            self.sources[rel] = source


def recognised(root: str | os.PathLike, record: RunRecord, rels: Iterable[str]) -> dict:
    """The files of ``rels`` that featclust wrote and whose times changed but not their
    content (a folder copied with ``cp -r``), with their stamps now (a file as
    featclust wrote it costs one ``lstat``).

    A file is recognised by its content hash in the record, or as the copy
    of (or the link to) the image it was placed from.
    """
    stamps, hashes, sources = record.stamps or {}, record.hashes or {}, record.sources or {}
    found = {}
    for rel in rels:
        stamp = stamps.get(rel)
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
            if not isinstance(stamp, list) or len(stamp) != 2 or st.st_size != stamp[0]:
                continue
            if st.st_mtime_ns == stamp[1]:
                continue  # as featclust wrote it: nothing to recognise
            source = None
            if record.image_dir and rel in sources:
                source = os.path.join(record.image_dir, rel.partition("/")[2])
            if stat.S_ISLNK(st.st_mode):
                same = source is not None and os.readlink(path) == os.path.abspath(source)
            elif not stat.S_ISREG(st.st_mode):
                same = False
            else:
                with open(path, "rb") as fh:
                    data = fh.read()
                if rel in hashes:
                    same = content_hash(data) == hashes[rel]
                elif source is not None:
                    with open(source, "rb") as fh:
                        same = fh.read() == data
                else:
                    same = False
        except OSError:
            continue
        if same:
            found[rel] = [st.st_size, st.st_mtime_ns]
    return found


def _listing(folder: Path) -> set:
    """The names in ``folder`` (none when it is missing or cannot be listed)."""
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def _remove_temporaries(folder: Path, own_names: Iterable[str]) -> None:
    """Remove temporary files an interrupted featclust run left in ``folder``.

    Only names featclust's own writers make are removed: ``.featclust-*.tmp``,
    and ``.<name>.*.tmp`` where ``name`` is a file featclust wrote there.
    """
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for name in entries:
        m = _TEMPORARY.match(name)
        if not m or (m.group("name") is not None and m.group("name") not in own_names):
            continue
        if os.path.isfile(os.path.join(folder, name)):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def output_error(path: str | os.PathLike, e: OSError) -> OutputError:
    """The :class:`OutputError` for an ``OSError`` while writing ``path``."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"disk full while writing {str(path)!r}; free space and run again")
    return OutputError(f"cannot write {str(path)!r}: {e.strerror or e}")
