"""``featclust.json``, the record of an output folder: the one owner of that file.

:class:`RunRecord` is its typed content; :func:`read_record` reads it and
:func:`write_record` writes it. Nothing else reads or writes the file.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import OutputFormatError
from ..fileio import atomic_write
from ..images import OUTPUT_MARKER

#: Format version of ``featclust.json``; a record of another version is refused.
MARKER_FORMAT = 1
LABELS_CSV = "labels.csv"
MODEL_NPZ = "model.npz"
BAD_FILES_CSV = "bad_files.csv"
CLUSTERS_CSV = "clusters.csv"
TRUTH_CSV = "truth.csv"
KSCAN_CSV = "kscan.csv"
KSCAN_PNG = "kscan.png"

_DICT_FIELDS = (
    "embedder",
    "feature_settings",
    "clustering",
    "counts",
    "scores",
    "flags",
    "truth",
    "kscan",
    "parent",
    "stamps",
    "sources",
    "curation",
    "hashes",
)
_STR_FIELDS = (
    "status",
    "command",
    "featclust_version",
    "created",
    "image_dir",
    "store",
    "store_root",
    "mode",
)


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
    sources : dict or None
        ``[size, mtime_ns, ino, ctime_ns]`` of the image each placed file of
        ``files`` was made from, when it was placed: a re-sort that puts the
        same image at the same place leaves a file whose source and stamp
        still match as it is.
    hashes : dict or None
        Content hash of files featclust wrote whose content it knew (the
        tables, the model, placed images): a file whose times changed (a
        folder copied with ``cp -r``) is still recognised as featclust's.
    curation : dict or None
        What a person changed since the sort (see
        :meth:`featclust.output.SortedFolder.move` and the other edits):
        ``names`` (cluster number as text to the name given), ``set_aside``
        (images in no cluster), ``moved`` (images a person put in a cluster),
        ``confirmed`` (cluster numbers a person confirmed), ``placed``
        (images placed by ``assign --place``, whose features are not in the
        folder's store), ``edits`` (how many edits were made). ``None``: the
        folder is as the sort left it.
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
    sources: dict | None = None
    curation: dict | None = None
    hashes: dict | None = None

    def __post_init__(self) -> None:
        if not self.created:
            self.created = datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            )

    def to_json(self) -> dict:
        """The record as the JSON object written to ``featclust.json`` (its values are
        the record's own, not copies)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data = {k: v for k, v in data.items() if v is not None}
        data["featclust_output"] = MARKER_FORMAT
        return data

    @classmethod
    def from_json(cls, data: object, where: str = "featclust.json") -> RunRecord:
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
                f"reads version {MARKER_FORMAT}: sort again with this version"
            )
        files = data.get("files", [])
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise OutputFormatError(f"{where}: 'files' must be a list of paths")
        kwargs: dict[str, Any] = {"files": files}
        for name in _STR_FIELDS:
            if name in data:
                if not isinstance(data[name], str) and data[name] is not None:
                    raise OutputFormatError(
                        f"{where}: {name!r} must be text, got {type(data[name]).__name__}"
                    )
                kwargs[name] = data[name]
        for name in _DICT_FIELDS:
            if name in data:
                if not isinstance(data[name], dict) and data[name] is not None:
                    raise OutputFormatError(
                        f"{where}: {name!r} must be an object, got {type(data[name]).__name__}"
                    )
                kwargs[name] = data[name]
        return cls(**kwargs)


def read_record(out_dir: str | os.PathLike) -> RunRecord | None:
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


def write_record(out_dir: str | os.PathLike, record: RunRecord) -> Path:
    """Write ``record`` to ``out_dir/featclust.json`` atomically (the folder is made if need be).

    Raises
    ------
    OSError
        As the file system reports it (the caller names the file in its error).
    """
    marker = Path(out_dir) / OUTPUT_MARKER
    data = _json_lines(record.to_json())
    marker.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, lambda fh: fh.write(data))
    return marker


def _json_lines(data: dict) -> bytes:
    """``data`` as ASCII JSON, one line per key, keys sorted.

    Not indented throughout like featclust's other JSON files: the record
    lists every file of the folder, three times over (files, stamps, sources),
    and Python encodes indented JSON several times slower.
    """
    lines = [f"{json.dumps(k)}: {json.dumps(data[k], sort_keys=True)}" for k in sorted(data)]
    return ("{\n " + ",\n ".join(lines) + "\n}\n").encode("ascii")
