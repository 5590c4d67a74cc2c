"""The built-in demo: generated dot-pattern images of known families, sorted."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import samples
from .clusterjobs import SortResult, sort_folder
from .errors import UnsafeOutputError
from .fileio import current_umask, read_csv
from .output import OutputFolder
from .store import default_root

DEMO_FAMILIES = ("ring", "line", "grid", "clusters")


def demo_images(
    images_dir: str | os.PathLike | None = None, *, n_per_family: int = 12, seed: int = 0
) -> tuple[Path, dict]:
    """Write (once) the built-in sample set of dot-pattern images.

    Parameters
    ----------
    images_dir : path-like, optional
        Default: ``demo-images-<n>-<seed>`` beside the default store.
    n_per_family : int
    seed : int
        Seed of the drawing.

    Returns
    -------
    images_dir : pathlib.Path
    truth : dict
        Relative path to shape family.

    Raises
    ------
    UnsafeOutputError
        If ``images_dir`` exists and is not a sample set featclust wrote.
    """
    if images_dir is None:
        images_dir = default_root().parent / f"demo-images-{n_per_family}-{seed}"
    images_dir = Path(images_dir)
    truth_csv = images_dir.parent / f"{images_dir.name}-truth.csv"
    if images_dir.is_dir() and truth_csv.is_file():
        return images_dir, {r["path"]: r["label"] for r in read_csv(truth_csv)}
    if images_dir.exists() and (not images_dir.is_dir() or any(images_dir.iterdir())):
        raise UnsafeOutputError(
            f"sample folder {str(images_dir)!r} exists and is not a featclust "
            "sample set; choose a new folder"
        )
    images_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=images_dir.parent, prefix=".demo-"))
    try:
        truth = samples.make_image_set(
            tmp, n_per_family=n_per_family, families=DEMO_FAMILIES, seed=seed
        )
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it private
        os.replace(tmp, images_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    samples.write_truth_csv(truth, truth_csv)
    return images_dir, truth


def demo(
    out_dir: str | os.PathLike,
    *,
    images_dir: str | os.PathLike | None = None,
    n_per_family: int = 12,
    **sort_params: Any,
) -> SortResult:
    """Sort the built-in sample set into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
    images_dir : path-like, optional
        Where the sample images are written (see :func:`demo_images`).
    n_per_family : int
    sort_params
        Passed to :func:`featclust.sort_folder` (``embedder``, ``store``,
        ``progress`` ...).

    Returns
    -------
    featclust.SortResult
        With ``truth`` (relative path to family) and ``images_dir`` set as
        extra attributes.
    """
    OutputFolder(out_dir, images_dir)  # refuse unsafe folders before writing samples
    images_dir, truth = demo_images(images_dir, n_per_family=n_per_family)
    result = sort_folder(
        images_dir, out_dir, n_clusters=len(DEMO_FAMILIES), truth=truth, **sort_params
    )
    result.truth = truth  # type: ignore[attr-defined]
    result.images_dir = images_dir  # type: ignore[attr-defined]
    return result
