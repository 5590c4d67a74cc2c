"""The review page's thumbnail cache: each picture made once, on first request.

The cache is the review's own folder, ``OUT_DIR/.featclust-review/thumbs/``
(this module owns its format). A thumbnail is named by a hash of the image's
path as ``labels.csv`` records it, the size and modification time of the file
it was made from, and the thumbnail size: a moved image (same file, other
cluster folder) keeps its thumbnail, a changed file gets a new one. Files are
written atomically, so threads making the same thumbnail at once are harmless.
No other featclust command writes here; deleting the folder only costs the
time to make the thumbnails again.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from ..fileio import atomic_write
from ..images import BadImageError, thumbnail

#: The review's folder inside the output folder (lock file, thumbnail cache).
REVIEW_DIR = ".featclust-review"
#: Longest side of a grid thumbnail and of the larger preview, in pixels.
THUMB_SIZE = 128
PREVIEW_SIZE = 640
THUMBS_VERSION = 1
_README = (
    "Thumbnails made by `featclust review` (a cache: safe to delete; it is made again "
    "when needed). Nothing else in the output folder depends on it.\n"
)


class ThumbnailCache:
    """JPEG thumbnails of image files, cached under ``OUT_DIR/.featclust-review/thumbs``.

    Parameters
    ----------
    out_dir : path-like
        The sorted folder under review.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.root = Path(out_dir) / REVIEW_DIR / "thumbs"

    def _name(self, key: str, st: os.stat_result, size: int) -> Path:
        text = f"{THUMBS_VERSION}\0{key}\0{st.st_size}\0{st.st_mtime_ns}\0{size}"
        digest = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16)
        h = digest.hexdigest()
        return self.root / h[:2] / f"{h}.jpg"

    def get(self, key: str, source: str | os.PathLike, size: int = THUMB_SIZE) -> bytes:
        """The JPEG bytes of ``source``'s thumbnail, made and cached if not cached yet.

        Parameters
        ----------
        key : str
            The image's path as ``labels.csv`` records it.
        source : path-like
            The file to draw it from.
        size : int
            The longest side, in pixels.

        Raises
        ------
        BadImageError
            If the file cannot be read or decoded.
        """
        try:
            st = os.stat(source)
        except OSError as e:
            raise BadImageError(f"cannot read: {e.strerror}") from None
        path = self._name(key, st, size)
        try:
            return path.read_bytes()
        except OSError:
            pass
        buf = io.BytesIO()
        thumbnail(source, size).save(buf, "JPEG", quality=82)
        data = buf.getvalue()
        try:
            if not self.root.is_dir():
                self.root.mkdir(parents=True, exist_ok=True)
                atomic_write(self.root.parent / "README.txt", lambda f: f.write(_README), "w")
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, lambda f: f.write(data))
        except OSError:
            pass  # a read-only output folder: the page still gets its picture, uncached
        return data


__all__ = ["ThumbnailCache", "REVIEW_DIR", "THUMB_SIZE", "PREVIEW_SIZE", "BadImageError"]
