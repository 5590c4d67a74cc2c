"""Bad input: each case is built here, checked at the decoder, then all together in one CLI run.

The decoding tests call :func:`featclust.images.decode` and :func:`scan`
directly (no TensorFlow). The end-to-end test sorts a folder that mixes
good images in every odd format with every kind of bad file, and checks that
the good ones arrive in their clusters, the bad ones are listed with a
reason, and no input file changed.
"""

import contextlib
import ctypes
import errno
import hashlib
import io
import os
import resource
import stat
import struct
import zlib

import numpy as np
import pytest
from conftest import contrast_dots, read_csv
from PIL import Image, PngImagePlugin

from featclust import images, store
from featclust.cli import main
from featclust.images import BadImageError, decode, scan

NON_UTF8 = b"caf\xe9.png"
LONG_NAME = "h" * 251 + ".png"  # 255 bytes, the longest name most file systems allow


# -- building inputs ---------------------------------------------------------------------------


def encode(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def halves(w=96, h=64, dark=0, light=255):
    """Left half ``dark``, right half ``light`` (a uint8 or wider array)."""
    arr = np.full((h, w), light)
    arr[:, : w // 2] = dark
    return arr


def quadrant(w=96, h=64):
    """White with a black top-left quadrant: any rotation or flip shows."""
    arr = np.full((h, w), 255, np.uint8)
    arr[: h // 2, : w // 2] = 0
    return Image.fromarray(arr)


def png_chunk(kind, data):
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_header_only(width, height):
    """A tiny PNG file whose header claims ``width`` x ``height`` pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def ztxt_bomb(im):
    """A PNG whose compressed text chunk inflates past Pillow's MAX_TEXT_CHUNK."""
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * (PngImagePlugin.MAX_TEXT_CHUNK + 1024), zip=True)
    return encode(im, "PNG", pnginfo=info)


def on_white(im, mode):
    """``im`` (black on white, mode L) with its white made transparent, in ``mode``."""
    dark = np.asarray(im) < 128
    if mode == "RGBA":
        arr = np.zeros(dark.shape + (4,), np.uint8)  # transparent black: the trap
        arr[dark, 3] = 255
        return Image.fromarray(arr, "RGBA")
    if mode == "LA":
        arr = np.zeros(dark.shape + (2,), np.uint8)
        arr[dark, 1] = 255
        return Image.fromarray(arr, "LA")
    pal = Image.new("P", im.size, 0)
    pal.putpalette([0, 0, 0, 0, 0, 0] + [0] * 762)  # index 0: transparent black
    pal.paste(1, mask=Image.fromarray((dark * 255).astype(np.uint8)))
    return pal


def as_16bit(im, dark=1000, light=4000):
    arr = np.where(np.asarray(im) < 128, dark, light).astype(np.uint16)
    return Image.fromarray(arr)


def as_int32(im, dark=-5, light=300_000):
    return Image.fromarray(np.where(np.asarray(im) < 128, dark, light).astype(np.int32))


def as_float(im, dark=0.25, light=0.75):
    return Image.fromarray(np.where(np.asarray(im) < 128, dark, light).astype(np.float32))


def exif_rotated_jpeg(im):
    """``im`` stored turned a quarter to the left, with EXIF orientation 6 to turn it back."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(
        im.transpose(Image.Transpose.ROTATE_90).convert("RGB"), "JPEG", quality=95, exif=exif
    )


def two_frames(first, second, fmt):
    return encode(first, fmt, save_all=True, append_images=[second])


def truncated(data):
    return data[: len(data) // 2]


def noisy_jpeg():
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (128, 128, 3), np.uint8)), "JPEG")


def assert_bad(data, *words):
    with pytest.raises(BadImageError) as info:
        decode(data)
    for word in words:
        assert word in str(info.value)
    return str(info.value)


def same(a, b, tol=2.0):
    return np.abs(a.astype(float) - b.astype(float)).mean() <= tol


# -- denying a read, even to root ----------------------------------------------------------------

_DAC = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@contextlib.contextmanager
def permissions_enforced():
    """Make this thread (and threads it starts) subject to file permissions.

    A non-root user already is. Root is not, so for root the two capabilities
    that bypass permission checks are dropped from the effective set of the
    calling thread and restored afterwards (they stay in the permitted set).
    Yields whether a file of mode 000 is now unreadable.
    """
    if os.geteuid() != 0:
        yield True
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        yield False
        return
    saved = data[0].effective
    data[0].effective &= ~_DAC
    if libc.capset(ctypes.byref(header), data) != 0:
        yield False
        return
    try:
        yield True
    finally:
        data[0].effective = saved
        if libc.capset(ctypes.byref(header), data) != 0:
            raise OSError(ctypes.get_errno(), "cannot restore capabilities")


# -- decoding, case by case ---------------------------------------------------------------------


def test_good_png_and_jpeg_decode_to_white_padded_squares():
    arr = halves().astype(np.uint8)
    for data in (
        encode(Image.fromarray(arr), "PNG"),
        encode(Image.fromarray(arr).convert("RGB"), "JPEG", quality=95),
    ):
        out = decode(data)
        assert out.shape == (224, 224) and out.dtype == np.uint8
        # 96x64 padded to 96x96: white bands top and bottom, the dark half kept.
        assert out[5].min() == 255 and out[-5].min() == 255
        assert out[112, 5] < 10 and out[112, 200] > 245


def test_truncated_png_and_jpeg_are_bad():
    png = encode(quadrant(), "PNG")
    assert_bad(truncated(png), "truncated")
    assert_bad(png[:60], "truncated")
    assert_bad(truncated(noisy_jpeg()), "truncated")


def test_zero_byte_file_is_bad():
    assert_bad(b"", "empty file")


def test_text_file_named_png_is_bad(tmp_path):
    (tmp_path / "notes.png").write_text("shopping list: milk, eggs\n")
    files, problems = scan(tmp_path)
    assert [f.path for f in files] == ["notes.png"] and problems == []
    with pytest.raises(BadImageError, match="not an image"):
        images.load(files[0])


def test_gif_named_jpg_is_decoded_by_content(tmp_path):
    im = quadrant()
    (tmp_path / "photo.jpg").write_bytes(encode(im, "GIF"))
    (file,), _ = scan(tmp_path)
    pixels, _ = images.load(file)
    assert np.array_equal(pixels, decode(encode(im, "PNG")))


def test_decompression_bomb_is_refused_before_decoding():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # 10^10 pixels claimed by a 100-byte file: decoding it would need 10 GB.
    reason = assert_bad(png_header_only(100_000, 100_000), "decompression bomb")
    assert "exceeds limit" in reason
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100 * 1024


def test_image_just_over_the_pixel_limit_is_refused(monkeypatch):
    im = quadrant(100, 100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # 10,000 pixels: 1-2x the limit
    with pytest.warns(Image.DecompressionBombWarning):
        assert_bad(encode(im, "PNG"), "exceeds Pillow's limit of 6000 pixels")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # over twice the limit
    assert_bad(encode(im, "PNG"), "decompression bomb")


def test_png_with_oversized_text_chunk_is_bad():
    assert_bad(ztxt_bomb(quadrant()), "ValueError", "MAX_TEXT_CHUNK")


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA"])
def test_transparent_areas_become_white(mode):
    im = quadrant()
    made = on_white(im, mode)
    kw = {"transparency": 0} if mode == "P" else {}
    data = encode(made, "PNG", **kw)
    assert Image.open(io.BytesIO(data)).mode == mode
    out = decode(data)
    assert np.array_equal(out, decode(encode(im, "PNG")))
    assert out.min() == 0 and out.mean() > 150  # not turned black


def test_palette_png_with_transparency_keeps_its_colours():
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (0, 0, 32, 64))  # left half red, right half transparent black
    out = decode(encode(pal, "PNG", transparency=0))
    assert out[112, 5] == 76  # red's luminance
    assert out[112, 200] == 255


def test_16bit_png_is_scaled_by_its_range():
    data = encode(as_16bit(Image.fromarray(halves().astype(np.uint8))), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    out = decode(data)
    # Clamping would give 255 everywhere (1000 and 4000 are both above 255).
    assert out[112, 5] == 0 and out[112, 200] == 255
    mid = np.full((8, 8), 2500, np.uint16)
    mid[0, 0], mid[0, 1] = 1000, 4000
    assert decode(encode(Image.fromarray(mid), "PNG"))[112, 112] in (127, 128)


@pytest.mark.parametrize("kind", ["int32", "float32"])
def test_32bit_tiff_is_scaled_by_its_range(kind):
    im = Image.fromarray(halves().astype(np.uint8))
    made = as_int32(im) if kind == "int32" else as_float(im)
    data = encode(made, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == ("I" if kind == "int32" else "F")
    out = decode(data)
    assert out[112, 5] == 0 and out[112, 200] == 255
    if kind == "float32":
        # In 0-1, clamping would make everything black.
        mid = np.full((8, 8), 0.5, np.float32)
        mid[0, 0], mid[0, 1] = 0.25, 0.75
        assert decode(encode(Image.fromarray(mid), "TIFF"))[112, 112] in (127, 128)


def test_cmyk_jpeg_is_decoded():
    im = quadrant()
    data = encode(im.convert("RGB").convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    assert same(decode(data), decode(encode(im, "PNG")))


def test_exif_orientation_is_applied_first():
    im = quadrant()
    data = exif_rotated_jpeg(im)
    assert Image.open(io.BytesIO(data)).size == (64, 96)  # stored on its side
    out = decode(data)
    assert same(out, decode(encode(im, "PNG")))
    assert not same(out, decode(encode(im.transpose(Image.Transpose.ROTATE_90), "PNG")))


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_animated_gif_and_multipage_tiff_use_the_first_frame(fmt):
    first = quadrant()
    second = Image.fromarray(255 - np.asarray(first))
    data = two_frames(first, second, fmt)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = decode(data)
    assert np.array_equal(out, decode(encode(first, "PNG")))
    assert not same(out, decode(encode(second, "PNG")))


def test_odd_file_names_are_found_and_read(tmp_path):
    data = encode(quadrant(), "PNG")
    with open(os.path.join(os.fsencode(tmp_path), NON_UTF8), "wb") as fh:
        fh.write(data)
    (tmp_path / LONG_NAME).write_bytes(data)
    assert len(os.fsencode(LONG_NAME)) == 255
    files, problems = scan(tmp_path)
    assert problems == []
    assert sorted(os.fsencode(f.path) for f in files) == sorted([NON_UTF8, os.fsencode(LONG_NAME)])
    for f in files:
        pixels, _ = images.load(f)
        assert np.array_equal(pixels, decode(data))


def test_symlink_loops_do_not_hang_the_scan(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "img.png").write_bytes(encode(quadrant(), "PNG"))
    os.symlink(".", tmp_path / "a" / "again")  # a folder link back to itself
    os.symlink("..", tmp_path / "a" / "up")
    os.symlink("self", tmp_path / "self")  # a link to itself
    os.symlink("ping", tmp_path / "pong")
    os.symlink("pong", tmp_path / "ping")
    files, problems = scan(tmp_path)
    assert [f.path for f in files] == ["a/img.png"]
    reasons = {b.path: b.reason for b in problems}
    assert set(reasons) == {"self", "ping", "pong", "a/again", "a/up"}
    assert all(os.strerror(errno.ELOOP) in reasons[p] for p in ("self", "ping", "pong"))
    # Links to folders are not followed, and listed with the reason.
    assert reasons["a/again"] == reasons["a/up"] == images.LINK_TO_FOLDER


def test_unreadable_file_and_folder_are_reported(tmp_path):
    (tmp_path / "secret.png").write_bytes(encode(quadrant(), "PNG"))
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "inside.png").write_bytes(encode(quadrant(), "PNG"))
    os.chmod(tmp_path / "secret.png", 0)
    os.chmod(tmp_path / "locked", 0)
    try:
        with permissions_enforced() as enforced:
            if not enforced:
                pytest.skip(
                    "running as root without the capability calls to drop "
                    "CAP_DAC_OVERRIDE: a permission check cannot be made to fail"
                )
            files, problems = scan(tmp_path)
            assert [f.path for f in files] == ["secret.png"]
            assert [(b.path, b.reason) for b in problems] == [
                ("locked", f"cannot list folder: {os.strerror(errno.EACCES)}")
            ]
            with pytest.raises(BadImageError, match=os.strerror(errno.EACCES)) as info:
                images.load(files[0])
            assert str(info.value).startswith(images.READ_FAILURE)
    finally:
        os.chmod(tmp_path / "locked", 0o755)


def test_unreadable_files_are_tried_again_but_broken_ones_are_remembered(tmp_path):
    folder = tmp_path / "images"  # the store lies outside the image folder
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.png").write_bytes(b"")
    files, _ = scan(folder)
    by_path = {f.path: f for f in files}
    settings = {"dim": 4, "test": "retry"}
    with store.FeatureStore(folder, settings, tmp_path / "store") as st:
        st.add_bad(
            by_path,
            [
                images.BadFile("a.png", f"{images.READ_FAILURE}: Permission denied"),
                images.BadFile("b.png", "empty file"),
            ],
        )
        st.finish(files)
    with store.FeatureStore(folder, settings, tmp_path / "store") as st:
        cached, bad, missing = st.split(files)
    assert [b.path for b in bad] == ["b.png"] and [f.path for f in missing] == ["a.png"]


def test_empty_folder_exits_2_with_a_clear_message(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_text("not looked at")
    out = tmp_path / "out"
    rc = main(
        [
            "sort",
            str(tmp_path / "empty"),
            str(out),
            "-k",
            "2",
            "--weights",
            "none",
            "--store",
            str(tmp_path / "store"),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "error: no files found in" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "store").exists()


def test_folder_of_only_bad_files_exits_2_and_lists_them(tmp_path, capsys):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image")
    (folder / "cut.png").write_bytes(truncated(encode(quadrant(), "PNG")))
    out = tmp_path / "out"
    rc = main(
        [
            "sort",
            str(folder),
            str(out),
            "-k",
            "2",
            "--weights",
            "none",
            "--store",
            str(tmp_path / "store"),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "none of the 3 files" in err and "is a readable image" in err
    csv_path = err.split("(see ")[1].split(")")[0]
    assert {r["path"] for r in read_csv(csv_path)} == {"empty.png", "notes.png", "cut.png"}
    assert not out.exists()


# -- all of it in one sort run ------------------------------------------------------------------


def _sha256_tree(root):
    """SHA-256 and mode of every file below ``root`` (names as bytes), and every link's target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in filenames + dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                found[full] = ("link", os.readlink(full))
            elif name in filenames and stat.S_ISFIFO(os.stat(full).st_mode):
                found[full] = ("fifo", os.stat(full).st_mode)
            elif name in filenames:
                with open(full, "rb") as fh:
                    found[full] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(full).st_mode)
    return found


def _mixed_folder(folder, with_unreadable):
    """Good images in every odd format, with their family, and bad files, with a reason word."""
    rng = np.random.default_rng(3)
    heavy = lambda: contrast_dots("heavy", rng)  # noqa: E731
    light = lambda: contrast_dots("light", rng)  # noqa: E731
    h_frame, l_frame = heavy(), light()
    good = {
        "plain.png": ("heavy", encode(heavy(), "PNG")),
        "gif_named.jpg": ("heavy", encode(heavy(), "GIF")),
        "palette_transparent.png": ("light", encode(on_white(light(), "P"), "PNG", transparency=0)),
        "rgba.png": ("heavy", encode(on_white(heavy(), "RGBA"), "PNG")),
        "la.png": ("light", encode(on_white(light(), "LA"), "PNG")),
        "gray16.png": ("heavy", encode(as_16bit(heavy()), "PNG")),
        "int32.tif": ("light", encode(as_int32(light()), "TIFF")),
        "float32.tif": ("heavy", encode(as_float(heavy()), "TIFF")),
        "cmyk.jpg": ("light", encode(light().convert("RGB").convert("CMYK"), "JPEG", quality=95)),
        "exif_rotated.jpg": ("heavy", exif_rotated_jpeg(heavy())),
        "animated.gif": ("light", two_frames(light(), h_frame, "GIF")),
        "multipage.tif": ("heavy", two_frames(heavy(), l_frame, "TIFF")),
        os.fsdecode(NON_UTF8): ("light", encode(light(), "PNG")),
        LONG_NAME: ("heavy", encode(heavy(), "PNG")),
        "a/same.png": ("light", encode(light(), "PNG")),
        "b/same.png": ("heavy", encode(heavy(), "PNG")),
    }
    bad = {
        "truncated.png": ("truncated", truncated(encode(heavy(), "PNG"))),
        "truncated.jpg": ("truncated", truncated(noisy_jpeg())),
        "empty.png": ("empty file", b""),
        "notes.png": ("not an image", b"this is a text file\n"),
        "bomb.png": ("decompression bomb", png_header_only(100_000, 100_000)),
        "text_bomb.png": ("MAX_TEXT_CHUNK", ztxt_bomb(light())),
    }
    if with_unreadable:
        bad["unreadable.png"] = (os.strerror(errno.EACCES), encode(heavy(), "PNG"))
        bad["locked"] = ("cannot list folder", None)
    for rel, (_, data) in {**good, **bad}.items():
        path = folder / rel
        if data is None:
            path.mkdir()
            (path / "inside.png").write_bytes(encode(light(), "PNG"))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.symlink("loop", folder / "loop")
    bad["loop"] = (os.strerror(errno.ELOOP), None)
    os.symlink(".", folder / "a" / "around")  # a folder link: not followed, listed
    bad["a/around"] = ("link to a folder", None)
    os.mkfifo(folder / "pipe.png")  # never opened (reading it would block)
    bad["pipe.png"] = ("named pipe", None)
    return (
        {rel: fam for rel, (fam, _) in good.items()},
        {rel: word for rel, (word, _) in bad.items()},
    )


def test_sort_skips_every_bad_file_and_sorts_every_good_one(tmp_path, capsys):
    folder, out, st_root = tmp_path / "images", tmp_path / "out", tmp_path / "store"
    folder.mkdir()
    with permissions_enforced() as enforced:
        pass  # only asking whether a permission can be denied here
    good, bad = _mixed_folder(folder, with_unreadable=enforced)
    before = _sha256_tree(folder)
    hidden = [folder / "unreadable.png", folder / "locked"] if enforced else []
    for p in hidden:
        os.chmod(p, 0)
    try:
        with permissions_enforced():
            rc = main(
                [
                    "sort",
                    str(folder),
                    str(out),
                    "-k",
                    "2",
                    "--weights",
                    "none",
                    "--batch-size",
                    "8",
                    "--store",
                    str(st_root),
                    "-q",
                ]
            )
        assert all(os.stat(p).st_mode & 0o777 == 0 for p in hidden)
    finally:
        for p, mode in zip(hidden, (0o644, 0o755)):
            os.chmod(p, mode)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "Traceback" not in captured.err
    assert (
        f"images: {len(good)} ({len(good)} embedded, 0 reused), skipped: {len(bad)}" in captured.out
    )
    assert _sha256_tree(folder) == before  # nothing in the image folder changed

    rows = read_csv(out / "labels.csv")
    assert sorted(r["path"] for r in rows) == sorted(good)
    clusters = {
        fam: {int(r["cluster"]) for r in rows if good[r["path"]] == fam}
        for fam in ("heavy", "light")
    }
    assert len(clusters["heavy"]) == 1 and len(clusters["light"]) == 1, clusters
    assert clusters["heavy"] != clusters["light"]
    for r in rows:
        copy = out / f"cluster_{int(r['cluster']):02d}" / r["path"]
        assert copy.read_bytes() == (folder / r["path"]).read_bytes()

    (store_csv,) = st_root.rglob("bad_files.csv")  # wherever the store keeps it
    for listing in (out / "bad_files.csv", store_csv):
        reasons = {r["path"]: r["reason"] for r in read_csv(listing)}
        assert set(reasons) == set(bad), listing
        for rel, word in bad.items():
            assert word in reasons[rel], (rel, reasons[rel])
