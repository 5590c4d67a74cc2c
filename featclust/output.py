"""The output folder and its record, ``featclust.json``: the one owner of both.

* :class:`RunRecord` is the typed content of ``featclust.json``: what was
  sorted, with which feature and clustering settings, the scores, and every
  file featclust wrote in the folder. It is read and written only here.
* :class:`OutputFolder` writes into a folder: every file is recorded in the
  record (claimed) before it is written, so a later run removes only
  featclust's own files and never overwrites anyone else's.
* :func:`open_sorted` opens a folder written by ``sort`` for reading: its
  record, model, labels and k scan. ``assign``, the report, the estimator and
  the CLI use it.

It is longer than the other modules because it is the single owner of the
output folder's format: nothing else reads or writes ``featclust.json``.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ._version import __version__
from .errors import OutputError, OutputFormatError, UnsafeOutputError, UsageError
from .fileio import atomic_write, inside, json_bytes
from .images import OUTPUT_MARKER

#: Format version of ``featclust.json``; a record of another version is refused.
MARKER_FORMAT = 1
LABELS_CSV = "labels.csv"
MODEL_NPZ = "model.npz"
BAD_FILES_CSV = "bad_files.csv"
CLUSTERS_CSV = "clusters.csv"
TRUTH_CSV = "truth.csv"
KSCAN_CSV = "kscan.csv"
KSCAN_PNG = "kscan.png"

_DICT_FIELDS = ("embedder", "feature_settings", "clustering", "counts", "scores", "flags",
                "truth", "kscan", "parent", "stamps")
_STR_FIELDS = ("status", "command", "featclust_version", "created", "image_dir", "store",
               "store_root", "mode")


@dataclass
class RunRecord:
    """The content of ``featclust.json``.

    Attributes
    ----------
    status : str
        ``"writing"`` while files are being written, ``"complete"`` after.
    files : list of str
        Every file featclust wrote in the folder, relative to it.
    command : str
        ``"sort"`` or ``"scan-k"``: the command that made the folder.
    featclust_version, created : str
    image_dir : str or None
        The folder that was clustered (absolute).
    store : str or None
        The feature store folder of ``image_dir`` under these settings.
    store_root : str or None
        The store root given by the user (``None``: the default one).
    mode : str or None
        How images were placed: ``"copy"``, ``"symlink"`` or ``"hardlink"``.
    embedder : dict or None
        :meth:`featclust.embed.Embedder.get_params` of the embedder used.
    feature_settings : dict or None
        :meth:`featclust.embed.Embedder.settings`: the store's key.
    clustering : dict or None
        The clustering's parameters and ``pca_components``.
    counts : dict or None
        ``images``, ``embedded``, ``reused``, ``bad_files``, ``cluster_sizes``.
    scores, flags, truth : dict or None
        From :meth:`featclust.scores.Judgement.info`.
    kscan : dict or None
        ``ks``, ``suggested_k``, ``reason`` of a k scan made for this folder.
    parent : dict or None
        For a sort of one cluster folder of an earlier sort (sub-clustering):
        ``out_dir`` (that sort's folder, absolute) and ``cluster`` (the
        cluster folder's name).
    stamps : dict or None
        ``[size, mtime_ns]`` of each file of ``files`` as featclust wrote it:
        a file that no longer matches was changed by someone else and is
        left alone.
    """

    status: str = "writing"
    files: list = field(default_factory=list)
    command: str = "sort"
    featclust_version: str = __version__
    created: str = ""
    image_dir: str | None = None
    store: str | None = None
    store_root: str | None = None
    mode: str | None = None
    embedder: dict | None = None
    feature_settings: dict | None = None
    clustering: dict | None = None
    counts: dict | None = None
    scores: dict | None = None
    flags: dict | None = None
    truth: dict | None = None
    kscan: dict | None = None
    parent: dict | None = None
    stamps: dict | None = None

    def __post_init__(self):
        if not self.created:
            self.created = datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")

    def to_json(self):
        """The record as the JSON object written to ``featclust.json``."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        data["featclust_output"] = MARKER_FORMAT
        return data

    @classmethod
    def from_json(cls, data, where="featclust.json"):
        """Read a record, checking its format version and the type of every field.

        Parameters
        ----------
        data : dict
            The parsed JSON.
        where : str
            How to name the file in messages.

        Raises
        ------
        OutputFormatError
            For another format version, a missing or mistyped field.
        """
        if not isinstance(data, dict):
            raise OutputFormatError(f"{where} does not hold a JSON object")
        version = data.get("featclust_output")
        if version != MARKER_FORMAT:
            raise OutputFormatError(
                f"{where} has format version {version!r}; this featclust ({__version__}) "
                f"reads version {MARKER_FORMAT}: sort again with this version")
        files = data.get("files", [])
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise OutputFormatError(f"{where}: 'files' must be a list of paths")
        kwargs = {"files": files}
        for name in _STR_FIELDS:
            if name in data:
                if not isinstance(data[name], str) and data[name] is not None:
                    raise OutputFormatError(f"{where}: {name!r} must be text, "
                                            f"got {type(data[name]).__name__}")
                kwargs[name] = data[name]
        for name in _DICT_FIELDS:
            if name in data:
                if not isinstance(data[name], dict) and data[name] is not None:
                    raise OutputFormatError(f"{where}: {name!r} must be an object, "
                                            f"got {type(data[name]).__name__}")
                kwargs[name] = data[name]
        return cls(**kwargs)


def read_record(out_dir):
    """The record of ``out_dir``, or ``None`` if it has no ``featclust.json``.

    Raises
    ------
    OutputFormatError
        If the file exists but is not a readable record of this format.
    """
    marker = Path(out_dir) / OUTPUT_MARKER
    try:
        text = marker.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise OutputFormatError(f"cannot read {str(marker)!r}: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise OutputFormatError(f"{str(marker)!r} is not valid JSON: {e}") from None
    return RunRecord.from_json(data, repr(str(marker)))


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
            if inside(real, img):
                raise UnsafeOutputError(f"output folder {str(out_dir)!r} is inside the image "
                                        f"folder {str(image_dir)!r}; choose a folder outside it")
            if inside(img, real):
                raise UnsafeOutputError(f"image folder {str(image_dir)!r} is inside the output "
                                        f"folder {str(out_dir)!r}; choose another output folder")
        self.marker = self.path / OUTPUT_MARKER
        self.record = None
        if self.path.exists() and not self.path.is_dir():
            raise UnsafeOutputError(f"output path {str(out_dir)!r} exists and is not a folder")
        try:
            non_empty = self.path.is_dir() and any(self.path.iterdir())
        except OSError as e:
            raise OutputError(f"cannot read output folder {str(out_dir)!r}: {e.strerror}") \
                from None
        if non_empty:
            try:
                self.record = read_record(self.path)
            except OutputFormatError:
                self.record = None
            if self.record is None:
                raise UnsafeOutputError(
                    f"output folder {str(out_dir)!r} is not empty and is not a featclust output; "
                    "choose an empty or new folder")
        self.files = list(self.record.files) if self.record else []
        self.stamps = dict(self.record.stamps or {}) if self.record else {}
        self._real = Path(os.path.realpath(self.path))
        self.changed = sorted(rel for rel in self.files if self._changed(rel))
        self._owned = set(self.files) - set(self.changed)

    def _changed(self, rel):
        """Whether featclust's file ``rel`` was replaced or edited since it was written."""
        stamp = self.stamps.get(rel)
        if not isinstance(stamp, list) or len(stamp) != 2 or not self._contained(rel):
            return False  # written by an interrupted run or an older version: still ours
        try:
            st = os.lstat(self.path / rel)
        except OSError:
            return False
        return [st.st_size, st.st_mtime_ns] != stamp

    @property
    def status(self):
        """The recorded status (``None`` for a new folder)."""
        return self.record.status if self.record else None

    def _contained(self, rel):
        """Whether ``rel`` stays inside the folder, even through links (a user may
        have replaced a cluster folder by a link to their own files)."""
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return False
        return inside(Path(os.path.realpath(self.path / Path(rel).parent)), self._real)

    def check_free(self, rels):
        """Refuse if any of ``rels`` exists and was not written by featclust (or was
        changed since), or leads out of the folder."""
        changed = set(self.changed)
        for rel in rels:
            if not self._contained(rel):
                raise UnsafeOutputError(f"{str(self.path / rel)!r} leads outside the output "
                                        "folder (through a link?); refusing to write there")
            if rel not in self._owned and os.path.lexists(self.path / rel):
                why = ("was changed since featclust wrote it" if rel in changed
                       else "was not written by featclust")
                raise UnsafeOutputError(f"{str(self.path / rel)!r} exists and {why}; refusing "
                                        "to overwrite it (move it away and run again)")

    def clear(self):
        """Remove every file featclust wrote here before (except those changed since:
        see :attr:`changed`), temporary files left by an interrupted run, and
        folders left empty."""
        self._remove(self.files)
        self.files = []
        self.stamps = {}
        self._owned = set()

    def _remove(self, rels):
        dirs = set()
        names = {}
        changed = set(self.changed)
        for rel in rels:
            names.setdefault(Path(rel).parent, set()).add(Path(rel).name)
            if rel in changed:
                continue
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
            _remove_temporaries(self.path / d, names.get(d, ()))
            if d.parts:
                try:
                    (self.path / d).rmdir()
                except OSError:
                    pass

    def release(self, rels):
        """Remove files featclust wrote here (``rels``) and drop them from the record.

        Only files recorded as featclust's are touched; folders left empty go too.
        """
        rels = [rel for rel in rels if rel in self._owned]
        self._remove(rels)
        gone = set(rels)
        self.files = [rel for rel in self.files if rel not in gone]
        self.stamps = {rel: s for rel, s in self.stamps.items() if rel not in gone}
        self._owned = set(self.files) - set(self.changed)
        self.write_marker(None, self.status or "complete")

    def claim(self, rels, record=None, status="writing"):
        """Record ``rels`` as featclust's files, before writing them.

        Parameters
        ----------
        rels : list of str
        record : RunRecord, optional
            The new record (default: keep the current one).
        status : str
        """
        self.check_free(rels)
        for rel in rels:
            if rel not in self._owned:
                self._owned.add(rel)
                self.files.append(rel)
        self.write_marker(record, status)

    def write_marker(self, record=None, status="complete"):
        """Rewrite ``featclust.json`` with ``record`` (or the current one), the file
        list and ``status``."""
        record = record if record is not None else (self.record or RunRecord())
        kept = [rel for rel in self.changed if rel not in self._owned]
        files = self.files + [rel for rel in kept if rel not in self.files]
        stamps = {rel: self.stamps[rel] for rel in files if rel in self.stamps}
        record = dataclasses.replace(record, status=status, files=files, stamps=stamps)
        self.record = record
        data = json_bytes(record.to_json())
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(self.marker, lambda fh: fh.write(data))
        except OSError as e:
            raise output_error(self.marker, e) from None

    def write_text(self, rel, text):
        """Write a claimed text file atomically."""
        return self._write(rel, lambda fh: fh.write(text), "w")

    def write_bytes(self, rel, data):
        """Write a claimed binary file atomically."""
        return self._write(rel, lambda fh: fh.write(data), "wb")

    def _write(self, rel, write, mode):
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

    def stamp(self, rel):
        """Remember the size and modification time of ``rel`` as featclust wrote it."""
        try:
            st = os.lstat(self.path / rel)
        except OSError:
            return
        self.stamps[rel] = [st.st_size, st.st_mtime_ns]


#: Temporary files of :func:`featclust.sort.place` (``.featclust-XXXXXXXX.tmp``) and of
#: :func:`featclust.fileio.atomic_write` (``.<name>.XXXXXXXX.tmp``).
_TEMPORARY = re.compile(r"^\.(?:featclust-|(?P<name>.+)\.)[a-z0-9_]{8}\.tmp$")


def _remove_temporaries(folder, own_names):
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


def output_error(path, e):
    """The :class:`OutputError` for an ``OSError`` while writing ``path``."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"disk full while writing {str(path)!r}; free space and run again")
    return OutputError(f"cannot write {str(path)!r}: {e.strerror or e}")


class SortedFolder:
    """A complete folder written by ``sort``, opened for reading.

    Use :func:`open_sorted` to make one.

    Attributes
    ----------
    path : pathlib.Path
    record : RunRecord
    """

    def __init__(self, path, record):
        self.path = Path(path)
        self.record = record
        self._model = None

    @property
    def image_dir(self):
        """The folder that was clustered."""
        return self.record.image_dir

    @property
    def n_clusters(self):
        """Number of clusters of the sort."""
        return int(self.record.clustering["n_clusters"])

    @property
    def model(self):
        """The fitted :class:`featclust.cluster.FeatureKMeans` from ``model.npz``.

        Raises
        ------
        OutputFormatError
            If the file cannot be read or does not fit the record.
        """
        if self._model is None:
            from .cluster import FeatureKMeans

            path = self.path / MODEL_NPZ
            if not path.is_file():
                raise OutputFormatError(f"{str(path)!r} is missing; run featclust sort again")
            try:
                model, _ = FeatureKMeans.load(path)
            except OutputFormatError:
                raise
            except Exception as e:  # FeatureKMeans.load names the file in its own errors
                raise OutputFormatError(f"cannot read {str(path)!r}: {e}") from None
            if int(model.n_clusters) != self.n_clusters:
                raise OutputFormatError(f"{str(path)!r} has {model.n_clusters} clusters but "
                                        f"featclust.json says {self.n_clusters}")
            self._model = model
        return self._model

    def labels(self, outliers=False):
        """Paths, cluster labels and distances from ``labels.csv``.

        Parameters
        ----------
        outliers : bool
            Also return the recorded outlier flags (see
            :func:`featclust.tables.read_labels_csv`).

        Returns
        -------
        paths : list of str
        labels : ndarray of int64
        distances : ndarray of float64
        outlier : ndarray of bool or None
            Only with ``outliers=True``.

        Raises
        ------
        OutputFormatError
            If the file is damaged or names a cluster the sort does not have.
        """
        from .tables import read_labels_csv

        path = self.path / LABELS_CSV
        columns = read_labels_csv(path, outliers)
        labels = columns[1]
        if len(labels) and labels.max() >= self.n_clusters:
            raise OutputFormatError(f"{str(path)!r} names cluster {int(labels.max())}, but the "
                                    f"sort has {self.n_clusters} clusters")
        return columns

    def kscan_scores(self):
        """The k scan saved in this folder (``kscan.csv``), or ``None``.

        Returns
        -------
        scores : dict of 1-D arrays or None
            As :attr:`featclust.KScan.scores_`.
        """
        from .tables import read_kscan_csv

        path = self.path / KSCAN_CSV
        if KSCAN_CSV not in self.record.files or not path.is_file():
            return None
        return read_kscan_csv(path)[0]


def open_sorted(out_dir):
    """Open a folder written by ``featclust sort``.

    Raises
    ------
    UsageError
        If ``out_dir`` is not a featclust output or holds no complete sort.
    OutputFormatError
        If its record is of another format version or damaged.
    """
    out_dir = Path(out_dir)
    record = read_record(out_dir)
    if record is None:
        raise UsageError(f"{str(out_dir)!r} is not a featclust output folder (no "
                         f"{OUTPUT_MARKER}); run featclust sort first")
    if record.command != "sort" or record.clustering is None:
        raise UsageError(f"{str(out_dir)!r} holds no clustering (it was written by "
                         f"featclust {record.command}); run featclust sort first")
    if record.status != "complete":
        raise UsageError(f"{str(out_dir)!r} holds no complete sort (it was interrupted or "
                         "failed); run featclust sort again")
    where = repr(str(out_dir / OUTPUT_MARKER))
    n = record.clustering.get("n_clusters")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise OutputFormatError(f"{where}: clustering.n_clusters must be a positive integer, "
                                f"got {n!r}")
    if not isinstance(record.feature_settings, dict) or not isinstance(record.embedder, dict):
        raise OutputFormatError(f"{where} does not record the feature settings")
    if not isinstance(record.image_dir, str):
        raise OutputFormatError(f"{where} does not record the image folder")
    return SortedFolder(out_dir, record)


def kscan_info(scan):
    """What a record keeps of a fitted :class:`featclust.KScan`."""
    return {"ks": [int(k) for k in scan.ks_], "suggested_k": int(scan.suggested_k_),
            "reason": scan.reason_}


def write_kscan(out, scan):
    """Write ``kscan.csv`` and ``kscan.png`` into an :class:`OutputFolder` that claimed them."""
    from .report.render import plot_kscan
    from .tables import kscan_csv

    out.write_text(KSCAN_CSV, kscan_csv(scan.scores_, scan.suggested_k_))
    png = io.BytesIO()
    plot_kscan(scan.scores_, scan.suggested_k_, png)
    out.write_bytes(KSCAN_PNG, png.getvalue())


def save_kscan(out_dir, scan, record=None, image_dir=None):
    """Write ``kscan.csv`` and ``kscan.png`` into ``out_dir``, claimed in its record first.

    ``out_dir`` may be new, empty or any featclust output (a sorted folder,
    say: ``featclust report`` then shows the plot); a file there that
    featclust did not write is never overwritten.

    Parameters
    ----------
    out_dir : path-like
    scan : featclust.KScan
        Fitted.
    record : RunRecord, optional
        The record of a new folder (``command="scan-k"``).
    image_dir : path-like, optional
        The scanned folder; ``out_dir`` must not overlap it.

    Returns
    -------
    list of pathlib.Path
    """
    out = OutputFolder(out_dir, image_dir)
    base = out.record or record or RunRecord(command="scan-k")
    base = dataclasses.replace(base, kscan=kscan_info(scan))
    status = out.status or "complete"
    files = [KSCAN_CSV, KSCAN_PNG]
    out.claim(files, base, status="writing" if out.record is None else status)
    write_kscan(out, scan)
    out.write_marker(None, status)
    return [out.path / f for f in files]
