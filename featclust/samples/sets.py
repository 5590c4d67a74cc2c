"""Labelled image sets on disk: many drawings of each family, shuffled, with their truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checks import check_choice, check_int
from ..errors import UsageError
from ..fileio import atomic_write, csv_text
from . import dots, glyphs, lines, silhouettes, symbols, textures
from ._canvas import MIN_SIZE as _MIN_SIZE

#: The kinds of images, each a module with ``FAMILIES`` and ``draw(family, rng, size)``.
KINDS = {
    "dots": dots,
    "silhouettes": silhouettes,
    "glyphs": glyphs,
    "textures": textures,
    "lines": lines,
    "symbols": symbols,
}


def make_image_set(
    out_dir, n_per_family=10, families=None, kind="dots", size=200, seed=0, subfolders=False
):
    """Write a labelled synthetic image set as PNG files.

    ``n_per_family`` images are drawn for every family and written in a
    seeded, shuffled order as ``img_00000.png``, ``img_00001.png``, ... so
    that the family cannot be read from the file name.  With
    ``subfolders=True`` each image goes to ``<family>/img_XXXXX.png``
    instead (the index is still the global shuffled index, so the same seed
    gives the same image for the same index either way).  Nothing else is
    written.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Destination directory; created (with parents) if missing.
    n_per_family : int, default=10
        Number of images per family (at least 1).
    families : iterable of str or str, optional
        Families to draw, each one of ``FAMILIES[kind]``.  A single string
        means one family.  Defaults to all families of ``kind``.
    kind : {'dots', 'silhouettes', 'glyphs', 'textures', 'lines', 'symbols'}, default='dots'
        Type of images (see :data:`KINDS`).
    size : int, default=200
        Width and height of every image in pixels (at least 32).
    seed : int, default=0
        Seed of the random generator; identical arguments give
        byte-identical files.
    subfolders : bool, default=False
        Put each family's images into a sub-directory named after it.

    Returns
    -------
    dict of str to str
        Mapping from each written file's path relative to ``out_dir``
        (POSIX separators) to its family, in index order.

    Raises
    ------
    UsageError
        If ``kind`` or a family is unknown, a family is repeated, or
        ``n_per_family`` or ``size`` is invalid.
    FileExistsError
        If any target file already exists.  The check happens before
        anything is written, and files are opened in exclusive-create mode,
        so existing files are never overwritten.
    """
    check_choice("kind", kind, tuple(KINDS))
    all_families = KINDS[kind].FAMILIES
    draw = KINDS[kind].draw

    if families is None:
        fams = list(all_families)
    else:
        fams = [families] if isinstance(families, str) else list(families)
        if not fams:
            raise UsageError("families=[] must name at least one family")
        for fam in fams:
            check_choice("family", fam, all_families)
        dupes = sorted({f for f in fams if fams.count(f) > 1})
        if dupes:
            raise UsageError(f"families={fams!r} names {', '.join(dupes)} more than once")
    n_per_family = check_int("n_per_family", n_per_family)
    size = check_int("size", size, low=_MIN_SIZE)

    out = Path(out_dir)
    labels = [fam for fam in fams for _ in range(n_per_family)]
    ss = np.random.SeedSequence(seed)
    order_ss, images_ss = ss.spawn(2)
    order = np.random.default_rng(order_ss).permutation(len(labels))
    labels = [labels[i] for i in order]
    image_seeds = images_ss.spawn(len(labels))

    width = max(5, len(str(len(labels) - 1)))
    rel_paths = []
    for i, fam in enumerate(labels):
        name = f"img_{i:0{width}d}.png"
        rel_paths.append(f"{fam}/{name}" if subfolders else name)

    existing = [p for p in rel_paths if (out / p).exists()]
    if existing:
        raise FileExistsError(
            f"{len(existing)} target file(s) already exist in {str(out)!r}, "
            f"e.g. {existing[0]!r}; refusing to overwrite."
        )

    out.mkdir(parents=True, exist_ok=True)
    if subfolders:
        for fam in fams:
            (out / fam).mkdir(exist_ok=True)

    truth = {}
    for rel, fam, child in zip(rel_paths, labels, image_seeds):
        img = draw(fam, np.random.default_rng(child), size)
        with open(out / rel, "xb") as fh:
            img.save(fh, format="PNG")
        truth[rel] = fam
    return truth


def write_truth_csv(truth, path):
    """Write a ground-truth mapping as a CSV file with header ``path,label``.

    Parameters
    ----------
    truth : dict of str to str
        Mapping from image path (as returned by :func:`make_image_set`) to
        its family label.  Rows are written in the mapping's order.
    path : str or os.PathLike
        Destination CSV file; overwritten if it exists.

    Returns
    -------
    None
    """
    text = csv_text(["path", "label"], truth.items())
    atomic_write(path, lambda fh: fh.write(text), "w")
