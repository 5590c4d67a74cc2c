"""Finding image files in a folder and decoding them to model-sized grayscale.

Files are recognised by content: :func:`scan` lists every regular file, and
:func:`decode` decides, with Pillow, whether it is an image. A file that is
not is reported with the reason, never a crash. :func:`thumbnail` makes the
colour pictures of the report with the same rules (first frame, EXIF
orientation, transparency on white, 16-bit and float images scaled).

Over 500 lines: one module decides what the model sees (the bounded-memory strips and budget too).
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .checks import check_int
from .errors import FeatclustError, UsageError
from .fileio import PathLike, content_hash

#: Bumped whenever decoding changes the pixels handed to the model.
DECODE_VERSION = 2
#: Side of the square images the model sees.
INPUT_SIZE = 224
#: Marker files that make :func:`scan` skip a folder (featclust's own outputs).
OUTPUT_MARKER = "featclust.json"
STORE_MARKER = "featclust-store.json"
#: The report folder of an output folder (left out when the output is scanned).
OUTPUT_REPORT_DIR = "report"
#: Files larger than this are not read into memory.
MAX_FILE_BYTES = 1 << 30
#: Start of the reason given for a file that could not be read at all (no
#: permission, I/O error): worth trying again on the next run.
READ_FAILURE = "cannot read"
#: Reason given for a symbolic link to a folder (never followed: a link loop
#: could make the walk endless, and the images would be listed twice).
LINK_TO_FOLDER = "link to a folder: not followed (list the folder itself to include it)"


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
    ino : int
        Inode number (``st_ino``; 0 when unknown).
    ctime_ns : int
        Status change time in nanoseconds (``st_ctime_ns``; 0 when unknown).
        No user tool can set it back, so together with ``ino`` it tells a
        file replaced or rewritten with its old size and mtime.
    """

    path: str
    abspath: str
    size: int
    mtime_ns: int
    ino: int = 0
    ctime_ns: int = 0

    @classmethod
    def from_stat(cls, path: str, abspath: str, st: os.stat_result) -> ImageFile:
        """An :class:`ImageFile` from an ``os.stat_result``.

        Parameters
        ----------
        path : str
            Path relative to the image folder, with ``/`` separators.
        abspath : str
            Absolute path.
        st : os.stat_result
            The result of ``os.stat(abspath)`` (links followed).
        """
        return cls(path, abspath, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@dataclass(frozen=True)
class BadFile:
    """A file that could not be used, and why."""

    path: str
    reason: str


class BadImageError(FeatclustError):
    """A single file cannot be decoded as an image; it is skipped, not fatal."""


def scan(
    image_dir: PathLike,
    exclude: Iterable[PathLike] = (),
) -> tuple[list[ImageFile], list[BadFile]]:
    """List the regular files below ``image_dir`` in sorted order.

    Hidden files and folders (names starting with ``.``), the folders named in
    ``exclude`` and folders holding a featclust output or store marker are
    skipped. When ``image_dir`` is itself a featclust output (a sorted
    folder), featclust's own files in it are left out: the files directly in
    it (``labels.csv``, ``model.npz``, the k scan's plot ...) and its
    ``report/`` folder; its cluster folders are scanned like any folder.
    Symbolic links to files are followed; links to folders are not, so a
    link loop cannot hang the walk: they are listed in ``problems``, as are
    named pipes, sockets and device files (never opened: reading a pipe
    could block forever).

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
        Entries that are not used, with the reason: broken links, no
        permission, links to folders, pipes, sockets and devices.

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
    is_output = (root / OUTPUT_MARKER).exists()
    if is_output:
        skip.add(os.path.realpath(root / OUTPUT_REPORT_DIR))
    files, problems = [], []

    def on_error(err):
        problems.append(BadFile(_rel(root, err.filename), f"cannot list folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith(".") or os.path.realpath(full) in skip:
                continue
            if os.path.islink(full):
                problems.append(BadFile(_rel(root, full), LINK_TO_FOLDER))
                continue
            if os.path.exists(os.path.join(full, OUTPUT_MARKER)) or os.path.exists(
                os.path.join(full, STORE_MARKER)
            ):
                continue
            kept.append(d)
        dirnames[:] = kept
        folder = _rel(root, dirpath)
        if folder == "." and is_output:
            continue  # featclust's own files of a sorted folder given as the image folder
        prefix = "" if folder == "." else folder + "/"
        for name in filenames:
            if name.startswith(".") or name in (OUTPUT_MARKER, STORE_MARKER):
                continue
            full = os.path.join(dirpath, name)
            rel = prefix + name
            try:
                st = os.stat(full)
            except OSError as e:
                problems.append(BadFile(rel, f"cannot stat: {e.strerror}"))
                continue
            if stat.S_ISREG(st.st_mode):
                files.append(ImageFile.from_stat(rel, full, st))
            elif stat.S_ISDIR(st.st_mode):  # a link to a folder that os.walk saw as a file
                problems.append(BadFile(rel, LINK_TO_FOLDER))
            else:
                problems.append(BadFile(rel, f"not a regular file ({_file_kind(st.st_mode)})"))
    files.sort(key=lambda f: f.path)
    problems.sort(key=lambda b: b.path)
    return files, problems


def _file_kind(mode):
    """What a non-regular file is, in words."""
    for test, words in (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return words
    return f"file type {stat.S_IFMT(mode):o}"


def _rel(root, full):
    return Path(os.path.relpath(full, root)).as_posix()


def read_bytes(file: ImageFile) -> tuple[bytes, str]:
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
    if file.size > MAX_FILE_BYTES:
        raise BadImageError(_TOO_LARGE)
    data = _read_limited(file.abspath)
    return data, content_hash(data)


_TOO_LARGE = f"file is larger than {MAX_FILE_BYTES >> 20} MiB"


def _read_limited(path):
    """A file's bytes, at most :data:`MAX_FILE_BYTES` of them, in a buffer of its size.

    (``read(MAX_FILE_BYTES + 1)`` would reserve a whole GiB for every file.)
    """
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise BadImageError(_TOO_LARGE)
            data = fh.read(size + 1)
            if len(data) > size:  # it grew while being read
                data += fh.read(MAX_FILE_BYTES + 1 - len(data))
    except OSError as e:
        raise BadImageError(f"{READ_FAILURE}: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BadImageError(_TOO_LARGE)
    return data


def decode(data: bytes, size: int = INPUT_SIZE) -> np.ndarray:
    """Decode image bytes to a ``size`` x ``size`` uint8 grayscale array.

    The first frame is used; EXIF orientation is applied; transparent areas
    become white; 16-bit, 32-bit and float images are scaled to 0-255 by the
    range of their values (a constant one becomes white, NaN pixels white);
    the image is resized with a bilinear (antialiasing) filter so that its
    longer side is ``size``, aspect ratio kept, and padded with white to a
    square (nothing is cropped). Images of more pixels than
    ``PIL.Image.MAX_IMAGE_PIXELS`` are refused before any pixel is decoded.

    Memory: besides the decoded image itself (at most ``MAX_IMAGE_PIXELS``
    pixels; JPEGs are decoded already shrunk) it takes one byte per pixel
    for the grayscale copy and a strip of ``STRIP_PIXELS`` pixels for
    conversions, whatever the shape: a 200000x1 strip costs what its pixels
    cost. Across threads, images are decoded while their cost fits in
    :data:`DECODE_BUDGET_BYTES` (one larger image is decoded alone).

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
        With a readable reason, for anything that is not a decodable image,
        and for any failure while preparing it (out of memory included).
    """
    return _pad_square(_open(data, "L", size, lambda im: _fit(_to_gray(im), size)), size)


class _Budget:
    """Bytes of decoded pixels held at once, across threads (a counting semaphore).

    A request larger than the whole budget is granted when nothing else is
    held, so one large image waits for the others and then decodes alone.
    """

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes):
        with self._cond:
            while self.used and self.used + nbytes > self.limit:
                self._cond.wait()
            self.used += nbytes
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


#: Bytes of decoded pixels (with their grayscale copy) held at once by all
#: decoding threads of a process together.
DECODE_BUDGET_BYTES = 512 << 20
_BUDGET = _Budget(DECODE_BUDGET_BYTES)
#: Pixels converted at once (one strip of rows) in mode and range conversions.
STRIP_PIXELS = 1 << 20
#: Bytes per pixel Pillow keeps in memory, by mode (others: 4).
_BYTES_PER_PIXEL = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I;16": 2,
    "I;16L": 2,
    "I;16B": 2,
    "I;16N": 2,
    "LA": 4,
    "La": 4,
    "PA": 4,
    "RGB": 4,
    "RGBA": 4,
}
_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def decode_cost(mode: str, width: int, height: int) -> int:
    """Bytes an image of this mode and size holds while :func:`decode` prepares it."""
    return width * height * (_BYTES_PER_PIXEL.get(mode, 4) + 1) + 8 * STRIP_PIXELS


def _open(data, draft_mode, size, prepare):
    """``prepare(image)`` of the first frame of ``data``, then EXIF-rotated.

    ``prepare`` makes the small picture (at most ``size`` pixels a side);
    the rotation is applied to it, not to the full image. Every failure
    (Pillow's, numpy's, ``MemoryError``) becomes a :class:`BadImageError`
    with a readable reason.
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
            im.draft(draft_mode, _fit_size(w, h, size))
            orientation = im.getexif().get(_EXIF_ORIENTATION)
            with _BUDGET.hold(decode_cost(im.mode, *im.size)):
                im.load()
                small = prepare(im)
            method = _TRANSPOSE.get(orientation)
            return small.transpose(method) if method is not None else small
    except BadImageError:
        raise
    except Image.DecompressionBombError as e:
        raise BadImageError(f"decompression bomb: {e}") from None
    except Image.UnidentifiedImageError:
        raise BadImageError(
            "not an image, or its header is damaged (Pillow cannot identify the format)"
        ) from None
    except MemoryError:
        raise BadImageError("out of memory while decoding") from None
    except Exception as e:  # Pillow raises many types (struct.error too) on damaged files
        raise BadImageError(f"cannot decode: {type(e).__name__}: {e}") from None


def _fit_size(w, h, size):
    """Width and height of a ``w`` x ``h`` image shrunk (or enlarged) to fit ``size``."""
    scale = size / max(w, h, 1)
    return max(1, min(size, round(w * scale))), max(1, min(size, round(h * scale)))


def _fit(im, size):
    target = _fit_size(*im.size, size)
    return im if im.size == target else im.resize(target, Image.Resampling.BILINEAR)


def _pad_square(gray, size):
    w, h = gray.size
    if (w, h) != (size, size):
        canvas = Image.new("L", (size, size), 255)
        canvas.paste(gray, ((size - w) // 2, (size - h) // 2))
        gray = canvas
    return np.asarray(gray, dtype=np.uint8)


def _strips(im):
    """Row ranges ``(top, bottom)`` of about :data:`STRIP_PIXELS` pixels each."""
    w, h = im.size
    rows = max(1, STRIP_PIXELS // max(w, 1))
    return [(top, min(h, top + rows)) for top in range(0, h, rows)]


def _by_strips(im, mode, convert):
    """``convert`` applied strip by strip, into one image of ``mode``.

    Conversions that take several bytes a pixel (RGBA on white) then cost a
    strip, not the whole image.
    """
    if im.width * im.height <= STRIP_PIXELS:
        return convert(im)
    out = Image.new(mode, im.size, 255 if mode == "L" else (255, 255, 255))
    for top, bottom in _strips(im):
        out.paste(convert(im.crop((0, top, im.width, bottom))), (0, top))
    return out


def _gray_of(im):
    if _has_alpha(im):
        return _on_white(im).convert("L")
    if im.mode == "CMYK":
        return im.convert("RGB").convert("L")
    return im.convert("L")


def _rgb_of(im):
    return _on_white(im).convert("RGB") if _has_alpha(im) else im.convert("RGB")


def _to_gray(im):
    """The full-size image as mode ``"L"``."""
    if _is_wide(im):
        return _wide_to_gray(im)
    if im.mode == "L" and not _has_alpha(im):
        return im
    return _by_strips(im, "L", _gray_of)


def _wide_to_gray(im):
    """A 16-bit, 32-bit or float image scaled by its range to mode ``"L"``.

    Pillow's convert("L") would clamp these to 0-255 instead of scaling. Two
    passes over strips (range, then scaling in float64 in place), so the only
    full-size copy is the uint8 result.
    """
    transparent = im.info.get("transparency")
    if not isinstance(transparent, (int, float)):
        transparent = None
    strips = _strips(im)

    def values(top, bottom):
        arr = np.asarray(im.crop((0, top, im.width, bottom)), dtype=np.float64)
        shown = np.isfinite(arr)
        if transparent is not None:
            shown &= arr != transparent
        return arr, shown

    lo, hi = np.inf, -np.inf
    for top, bottom in strips:
        arr, shown = values(top, bottom)
        if shown.any():
            lo, hi = min(lo, arr[shown].min()), max(hi, arr[shown].max())
    out = np.full((im.height, im.width), 255, np.uint8)
    if hi > lo:
        for top, bottom in strips:
            arr, shown = values(top, bottom)
            arr -= lo
            arr *= 255.0 / (hi - lo)
            arr += 0.5
            np.clip(arr, 0, 255, out=arr)
            arr[~shown] = 255.0
            out[top:bottom] = arr
    return Image.fromarray(out)


def _is_wide(im):
    """16-bit, 32-bit and float images, which are scaled by their range."""
    return im.mode.startswith("I") or im.mode == "F"


def _has_alpha(im):
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info


def _on_white(im):
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba)


def load(file: ImageFile, size: int = INPUT_SIZE) -> tuple[np.ndarray, str]:
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


def thumbnail(path: PathLike, size: int) -> Image.Image:
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
    data = _read_limited(path)

    def shrink(im):
        if _is_wide(im):
            small = _wide_to_gray(im)
        elif im.mode in ("L", "RGB") and not _has_alpha(im):
            small = im  # shrunk first, converted after: no full-size copy
        else:
            small = _by_strips(im, "RGB", _rgb_of)
        small.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return small.convert("RGB")

    return _open(data, "RGB", size, shrink)
