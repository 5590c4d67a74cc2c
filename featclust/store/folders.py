"""Which feature settings the store holds a folder's features under.

So a command run on a folder embedded before (``featclust similar photos/ q.png``
after ``featclust sort photos/ out/ --weights none``) can take the settings it
was embedded with, instead of the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fileio import PathLike
from .files import INDEX, _folder_id, _read_json, check_root


def folder_settings(image_dir: PathLike, root: PathLike | None = None) -> list[dict[str, Any]]:
    """The feature settings of every store of ``root`` that indexes ``image_dir``.

    Parameters
    ----------
    image_dir : path-like
    root : path-like, optional
        Store root; default :func:`~featclust.store.default_root`.

    Returns
    -------
    list of dict
        As :meth:`featclust.embed.Embedder.settings` returns them, the folder's
        most recently written index first; stores whose ``settings.json`` cannot
        be read are left out.
    """
    root = check_root(root)
    folder = _folder_id(image_dir)
    found = []
    for features_dir in Path(root).glob("features-*"):
        try:
            written = (features_dir / "folders" / folder / INDEX).stat().st_mtime_ns
        except OSError:
            continue
        record, _ = _read_json(features_dir / "settings.json")
        settings = record.get("settings") if isinstance(record, dict) else None
        if isinstance(settings, dict):
            found.append((written, features_dir.name, settings))
    found.sort(key=lambda item: item[:2], reverse=True)
    return [settings for _, _, settings in found]
