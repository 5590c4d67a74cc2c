"""The same content under many names: each distinct content is decoded and embedded once.

Files to embed are grouped by content hash before any is decoded (only files
whose size equals another's are read for it), so copies and hard links of an
image cost one forward pass; the copies get the row of the one embedded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from .. import images
from ..images import BadFile, ImageFile


def distinct(
    files: Sequence[ImageFile], known: dict[str, str]
) -> tuple[list[ImageFile], dict[str, list[tuple[ImageFile, str]]]]:
    """One file of each content, and the copies of each.

    Parameters
    ----------
    files : list of ImageFile
        Files to embed.
    known : dict
        Content hashes already computed, by relative path.

    Returns
    -------
    firsts : list of ImageFile
        The files to decode and embed, in the order given.
    copies : dict
        ``path of a file in firsts -> [(copy, its content hash), ...]``.
    """
    by_size: dict[int, list[ImageFile]] = {}
    for f in files:
        by_size.setdefault(f.size, []).append(f)
    hashes = {}
    for group in by_size.values():
        if len(group) < 2:
            continue
        for f in group:
            digest = known.get(f.path)
            if digest is None:
                try:
                    _, digest = images.read_bytes(f)
                except images.BadImageError:
                    continue  # decoded (and reported) on its own
            hashes[f.path] = digest
    first_of: dict[str, ImageFile] = {}
    firsts: list[ImageFile] = []
    copies: dict[str, list[tuple[ImageFile, str]]] = {}
    for f in files:
        digest = hashes.get(f.path)
        if digest is None or first_of.setdefault(digest, f) is f:
            firsts.append(f)
        else:
            copies.setdefault(first_of[digest].path, []).append((f, digest))
    return firsts, copies


def with_copies(
    batches: Iterator[tuple[list, np.ndarray, list]],
    copies: dict[str, list[tuple[ImageFile, str]]],
    again: list[ImageFile],
) -> Iterator[tuple[list, np.ndarray, list, int]]:
    """The batches of :func:`distinct`'s ``firsts``, each copy added beside its first.

    A copy takes its first's row when their hashes are equal, and its
    failure when the first could not be decoded. A copy whose first changed
    since it was hashed, or could not be read at all (its own permissions may
    differ), is appended to ``again``, to be embedded on its own.

    Yields
    ------
    good, features, bad
        As the batches, with the copies.
    n_copies : int
        How many of ``good`` are copies (served, not embedded).
    """
    for good, feats, bad in batches:
        extra, rows, extra_bad = [], [], []
        for (f, digest), vec in zip(good, feats):
            for copy, h in copies.pop(f.path, ()):
                if h == digest:
                    extra.append((copy, digest))
                    rows.append(vec)
                else:
                    again.append(copy)
        for b in bad:
            for copy, _ in copies.pop(b.path, ()):
                if b.reason.startswith(images.READ_FAILURE):
                    again.append(copy)
                else:
                    extra_bad.append(BadFile(copy.path, b.reason))
        if extra:
            feats = np.concatenate([np.asarray(feats), np.stack(rows)])
        yield good + extra, feats, bad + extra_bad, len(extra)
    for left in copies.values():  # firsts the batches never reached
        again.extend(copy for copy, _ in left)
    copies.clear()
