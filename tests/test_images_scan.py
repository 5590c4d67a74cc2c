"""scan(): what it records about each file.

And the entries it does not use (listed with a reason).
"""

import os
import socket
import stat

import numpy as np
import pytest
from conftest import contrast_dots, read_csv
from PIL import Image

from featclust import images
from featclust.cli import main
from featclust.images import ImageFile, scan


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (32, 24), 128).save(path)


def test_scan_records_inode_and_ctime(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub" / "b.png")
    files, problems = scan(tmp_path)
    assert problems == []
    for f in files:
        st = os.stat(f.abspath)
        assert (f.size, f.mtime_ns, f.ino, f.ctime_ns) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
            st.st_ctime_ns,
        )
        assert f.ino > 0 and f.ctime_ns > 0
        assert f == ImageFile.from_stat(f.path, f.abspath, st)


def test_image_file_without_inode_and_ctime_defaults_to_zero():
    f = ImageFile("a.png", "/x/a.png", 10, 5)
    assert (f.ino, f.ctime_ns) == (0, 0)


def test_swapped_files_with_same_size_and_mtime_differ_in_inode(tmp_path):
    # The case of issue 11.3: equal size and mtime, names swapped.
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"A" * 100)
    b.write_bytes(b"B" * 100)
    os.utime(a, ns=(1, 10**18))
    os.utime(b, ns=(1, 10**18))
    before = {f.path: f for f in scan(tmp_path)[0]}
    os.rename(a, tmp_path / "tmp")
    os.rename(b, a)
    os.rename(tmp_path / "tmp", b)
    after = {f.path: f for f in scan(tmp_path)[0]}
    for name in ("a.png", "b.png"):
        assert (after[name].size, after[name].mtime_ns) == (
            before[name].size,
            before[name].mtime_ns,
        )
        assert after[name].ino != before[name].ino


def test_fifo_socket_and_folder_link_are_listed_with_a_reason(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "real").mkdir()
    _png(tmp_path / "real" / "inside.png")
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink("real", tmp_path / "linked")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock.png"))
    except OSError:
        sock = None
    try:
        files, problems = scan(tmp_path)
    finally:
        if sock is not None:
            sock.close()
    assert [f.path for f in files] == ["ok.png", "real/inside.png"]
    reasons = {b.path: b.reason for b in problems}
    assert reasons["pipe.png"] == "not a regular file (named pipe (FIFO))"
    assert reasons["linked"] == images.LINK_TO_FOLDER
    if sock is not None:
        assert reasons["sock.png"] == "not a regular file (socket)"
    assert set(reasons) <= {"pipe.png", "linked", "sock.png"}


def test_device_file_is_listed(tmp_path):
    if not os.path.exists("/dev/null") or not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("no /dev/null character device")
    os.symlink("/dev/null", tmp_path / "null.png")  # mknod needs root; a link is followed
    _png(tmp_path / "ok.png")
    files, problems = scan(tmp_path)
    assert [f.path for f in files] == ["ok.png"]
    assert [(b.path, b.reason) for b in problems] == [
        ("null.png", "not a regular file (character device)")
    ]


def test_sort_lists_pipes_and_folder_links_in_bad_files_csv(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, family in enumerate(["heavy", "light"] * 2):
        contrast_dots(family, rng).save(folder / f"img{i}.png")
    os.mkfifo(folder / "pipe.png")
    os.symlink(".", folder / "again")
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
            "--batch-size",
            "4",
            "--store",
            str(tmp_path / "store"),
            "-q",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    reasons = {r["path"]: r["reason"] for r in read_csv(out / "bad_files.csv")}
    assert reasons == {
        "pipe.png": "not a regular file (named pipe (FIFO))",
        "again": images.LINK_TO_FOLDER,
    }
