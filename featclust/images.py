"""Finding image files in a folder and decoding them to model-sized grayscale.

Files are recognised by content: :func:`scan` lists every regular file, and
:func:`decode` decides, with Pillow, whether it is an image. A file that is
not is reported with the reason, never a crash. :func:`thumbnail` makes the
colour pictures of the report with the same rules (first frame, EXIF
orientation, transparency on white, 16-bit and float images scaled).
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .checks import check_int
from .errors import FeatclustError, UsageError
from .fileio import content_hash

#: Bumped whenever decoding changes the pixels handed to the model.
DECODE_VERSION = 1
#: Side of the square images the model sees.
INPUT_SIZE = 224
#: Marker files that make :func:`scan` skip a folder (featclust's own outputs).
OUTPUT_MARKER = "featclust.json"
STORE_MARKER = "featclust-store.json"
#: Files larger than this are not read into memory.
MAX_FILE_BYTES = 1 << 30
#: Start of the reason given for a file that could not be read at all (no
#: permission, I/O error): worth trying again on the next run.
READ_FAILURE = "cannot read"


@dataclass(frozen=True)
class ImageFile:
    """A candidate file found by :func:`scan`.

    Attributes
    ----------
    path : str
        Path relative to the image folder, with ``/`` separators.
    abspath : str
        Absolute path, for reading.
    size : int
        Size in bytes.
    mtime_ns : int
        Modification time in nanoseconds.
    """

    path: str
    abspath: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class BadFile:
    """A file that could not be used, and why."""

    path: str
    reason: str


class BadImageError(FeatclustError):
    """A single file cannot be decoded as an image; it is skipped, not fatal."""


def scan(image_dir, exclude=()):
    """List the regular files below ``image_dir`` in sorted order.

    Hidden files and folders (names starting with ``.``), the folders named in
    ``exclude`` and folders holding a featclust output or store marker are
    skipped. Symbolic links to files are followed; links to folders are not,
    so a link loop cannot hang the walk.

    Parameters
    ----------
    image_dir : str or path-like
        The folder to walk.
    exclude : iterable of path-like
        Folders to leave out (for example the output folder and the store).

    Returns
    -------
    files : list of ImageFile
        Candidate files, sorted by relative path.
    problems : list of BadFile
        Entries that could not even be looked at (broken links, no permission).

    Raises
    ------
    UsageError
        If ``image_dir`` is not an existing folder.
    """
    root = Path(image_dir)
    if not root.is_dir():
        raise UsageError(f"image folder {str(image_dir)!r} does not exist or is not a folder")
    root = root.resolve()
    skip = {os.path.realpath(p) for p in exclude}
    files, problems = [], []

    def on_error(err):
        problems.append(BadFile(_rel(root, err.filename), f"cannot list folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith(".") or os.path.realpath(full) in skip or os.path.islink(full):
                continue
            if os.path.exists(os.path.join(full, OUTPUT_MARKER)) or os.path.exists(
                os.path.join(full, STORE_MARKER)
            ):
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            if name.startswith(".") or name in (OUTPUT_MARKER, STORE_MARKER):
                continue
            full = os.path.join(dirpath, name)
            rel = _rel(root, full)
            try:
                st = os.stat(full)
            except OSError as e:
                problems.append(BadFile(rel, f"cannot stat: {e.strerror}"))
                continue
            if stat.S_ISREG(st.st_mode):
                files.append(ImageFile(rel, full, st.st_size, st.st_mtime_ns))
    files.sort(key=lambda f: f.path)
    problems.sort(key=lambda b: b.path)
    return files, problems


def _rel(root, full):
    return Path(os.path.relpath(full, root)).as_posix()


def read_bytes(file):
    """Read a file's bytes and their content hash.

    Returns
    -------
    data : bytes
    digest : str
        BLAKE2b-128 hex digest of ``data``.

    Raises
    ------
    BadImageError
        If the file cannot be read or is too large.
    """
    too_large = f"file is larger than {MAX_FILE_BYTES >> 20} MiB"
    if file.size > MAX_FILE_BYTES:
        raise BadImageError(too_large)
    try:
        with open(file.abspath, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise BadImageError(f"{READ_FAILURE}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BadImageError(too_large)
    return data, content_hash(data)


def decode(data, size=INPUT_SIZE):
    """Decode image bytes to a ``size`` x ``size`` uint8 grayscale array.

    The first frame is used; EXIF orientation is applied; transparent areas
    become white; 16-bit, 32-bit and float images are scaled to 0-255 by the
    range of their values (a constant one becomes white, NaN pixels white);
    the image is padded with white to a square (nothing is cropped) and
    resized with a bilinear (antialiasing) filter. Images of more pixels than
    ``PIL.Image.MAX_IMAGE_PIXELS`` are refused before any pixel is decoded.

    Parameters
    ----------
    data : bytes
        The file's content.
    size : int
        Side of the output square.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` uint8 array, 255 is white.

    Raises
    ------
    BadImageError
        With a readable reason, for anything that is not a decodable image.
    """
    return _square_resize(_open(data, "L", size, _to_gray), size)


def _open(data, draft_mode, size, convert):
    """``convert(image)`` of the first frame of ``data``, EXIF-rotated.

    Every failure becomes a :class:`BadImageError` with a readable reason.
    """
    if not data:
        raise BadImageError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > Image.MAX_IMAGE_PIXELS:
                raise BadImageError(
                    f"image of {w}x{h} pixels exceeds Pillow's limit of "
                    f"{Image.MAX_IMAGE_PIXELS} pixels (decompression bomb guard)"
                )
            im.draft(draft_mode, (size, size))
            im = ImageOps.exif_transpose(im)
            return convert(im)
    except BadImageError:
        raise
    except Image.DecompressionBombError as e:
        raise BadImageError(f"decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImageError("not an image, or its header is damaged "
                            "(Pillow cannot identify the format)") from None
    except Exception as e:  # Pillow raises many types (struct.error too) on damaged files
        raise BadImageError(f"cannot decode: {type(e).__name__}: {e}") from None


def _to_gray(im):
    mode = im.mode
    if _is_wide(im):
        # Pillow's convert("L") would clamp these to 0-255 instead of scaling.
        arr = np.asarray(im).astype(np.float64)
        shown = np.isfinite(arr)
        if isinstance(im.info.get("transparency"), (int, float)):
            shown &= arr != im.info["transparency"]
        if not shown.any():
            return Image.new("L", im.size, 255)
        lo, hi = arr[shown].min(), arr[shown].max()
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.full(arr.shape, 255.0)
        scaled[~shown] = 255.0
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8), "L")
    if _has_alpha(im):
        return _on_white(im).convert("L")
    if mode == "CMYK":
        return im.convert("RGB").convert("L")
    return im.convert("L")


def _to_rgb(im):
    if _is_wide(im):
        return _to_gray(im).convert("RGB")
    if _has_alpha(im):
        return _on_white(im).convert("RGB")
    return im.convert("RGB")


def _is_wide(im):
    """16-bit, 32-bit and float images, which are scaled by their range."""
    return im.mode.startswith("I") or im.mode == "F"


def _has_alpha(im):
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info


def _on_white(im):
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba)


def _square_resize(gray, size):
    w, h = gray.size
    if w != h:
        side = max(w, h)
        canvas = Image.new("L", (side, side), 255)
        canvas.paste(gray, ((side - w) // 2, (side - h) // 2))
        gray = canvas
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def load(file, size=INPUT_SIZE):
    """Read and decode one :class:`ImageFile`.

    Returns
    -------
    pixels : numpy.ndarray
        See :func:`decode`.
    digest : str
        Content hash of the bytes that were decoded.
    """
    data, digest = read_bytes(file)
    return decode(data, size), digest


def thumbnail(path, size):
    """A colour picture of an image file that fits in ``size`` x ``size``.

    Decoded as :func:`decode` does, in colour: the first frame, EXIF
    orientation applied, transparent areas white, 16-bit, 32-bit and float
    images scaled by the range of their values (as gray); then shrunk,
    aspect ratio kept (never enlarged).

    Parameters
    ----------
    path : path-like
    size : int
        The longest side of the picture, in pixels.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, at most ``size`` pixels wide and high.

    Raises
    ------
    BadImageError
        If the file cannot be read or decoded, with the reason.
    """
    size = check_int("size", size)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise BadImageError(f"{READ_FAILURE}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BadImageError(f"file is larger than {MAX_FILE_BYTES >> 20} MiB")

    def shrink(im):
        rgb = _to_rgb(im)
        rgb.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return rgb

    return _open(data, "RGB", size, shrink)
