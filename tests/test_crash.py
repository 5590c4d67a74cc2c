"""Crashes, interruptions, damaged stores, concurrent runs, full disks and unsafe output folders.

The features of a small folder are computed once (``prepared``); most tests
then work on a copy of that store, so that only the crash test and the
damaged-chunk test run the model.
"""

import _thread
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import make_two_families, read_csv

import featclust
from featclust import sort, store
from featclust.cli import main
from featclust.errors import StoreError
from featclust.fileio import content_hash
from featclust.images import scan

N_IMAGES = 8


def _chunk_indexes(root):
    return sorted(root.glob("features-*/rows/chunk-*.json"))


def _committed(root, folder):
    """Features of every whole chunk in the store, by the path of the image in ``folder``
    whose content hash the row has."""
    by_hash = {content_hash(p.read_bytes()): p.name for p in folder.iterdir()}
    found = {}
    for index in _chunk_indexes(root):
        feats = np.load(index.with_suffix(".npy"))
        for digest, vec in zip(json.loads(index.read_text())["hashes"], feats):
            found[by_hash[digest]] = vec
    return found


def _wait_for(condition, proc=None, timeout=900):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _tree(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _leftovers(root):
    """Temporary files, and features files without their index."""
    return list(root.rglob("*.tmp")) + [
        p for p in root.rglob("chunk-*.npy") if not p.with_suffix(".json").exists()
    ]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, embedder):
    """A folder of 8 images and a store of their features in chunks of 2 (uninterrupted run)."""
    base = tmp_path_factory.mktemp("crash")
    folder = base / "images"
    make_two_families(folder, n_per_family=N_IMAGES // 2)
    old = os.environ.get("FEATCLUST_CHUNK_SIZE")
    os.environ["FEATCLUST_CHUNK_SIZE"] = "2"
    try:
        ref = featclust.embed_folder(folder, embedder=embedder, store=base / "store")
    finally:
        if old is None:
            del os.environ["FEATCLUST_CHUNK_SIZE"]
        else:
            os.environ["FEATCLUST_CHUNK_SIZE"] = old
    assert ref.n_embedded == N_IMAGES and len(_chunk_indexes(base / "store")) == N_IMAGES // 2
    return folder, base / "store", dict(zip(ref.paths, ref.features))


@pytest.fixture
def store_copy(prepared, tmp_path):
    folder, root, _ = prepared
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store"


def _sort_argv(folder, out, st_root, *more):
    return [
        "sort",
        str(folder),
        str(out),
        "-k",
        "2",
        "--weights",
        "none",
        "--store",
        str(st_root),
        "-q",
        "--no-report",
        *more,
    ]


# -- interrupted and killed runs ----------------------------------------------------------------


def test_ctrl_c_then_sigkill_then_rerun_finishes_with_the_same_features(
    prepared, tmp_path, monkeypatch, capsys, embedder, request
):
    folder, _, reference = prepared
    st_root = tmp_path / "store"
    argv = [
        "embed",
        str(folder),
        "--weights",
        "none",
        "--batch-size",
        "2",
        "--store",
        str(st_root),
        "-q",
    ]
    monkeypatch.setenv("FEATCLUST_CHUNK_SIZE", "2")
    # interrupt_main() does nothing unless Python's own SIGINT handler is in
    # place; a library loaded earlier in the session may have replaced it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    # Ctrl-C once the first chunk is written.
    returned = threading.Event()

    def press_ctrl_c():
        _wait_for(lambda: returned.is_set() or len(_chunk_indexes(st_root)) >= 1)
        if not returned.is_set():
            _thread.interrupt_main()

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    try:
        rc = main(argv)
        returned.set()
        presser.join()
    except KeyboardInterrupt:
        pytest.fail("the run finished before Ctrl-C reached it")
    err = capsys.readouterr().err
    assert rc == 130
    assert "interrupted" in err and "next run resumes" in err and "Traceback" not in err
    kept = _committed(st_root, folder)
    assert 2 <= len(kept) < N_IMAGES
    n_chunks = len(_chunk_indexes(st_root))

    # The same command in another process, killed with SIGKILL after one more chunk.
    with open(tmp_path / "killed.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "featclust", *argv],
            stdout=log,
            stderr=log,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        try:
            _wait_for(lambda: len(_chunk_indexes(st_root)) > n_chunks, proc)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -9, (tmp_path / "killed.log").read_text()
    whole = _committed(st_root, folder)
    assert len(kept) < len(whole) < N_IMAGES
    for path, vec in kept.items():  # the killed run reused the chunks of the interrupted one
        np.testing.assert_array_equal(whole[path], vec)

    # The same command again finishes the job and reuses every whole chunk.
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert (
        f"images: {N_IMAGES} ({N_IMAGES - len(whole)} embedded, {len(whole)} reused), skipped: 0"
    ) in out
    assert _leftovers(st_root) == []

    final = featclust.embed_folder(folder, embedder=embedder, store=st_root)
    assert (final.n_embedded, final.n_reused) == (0, N_IMAGES)
    for path, vec in zip(final.paths, final.features):
        if path in whole:
            np.testing.assert_array_equal(vec, whole[path])
        np.testing.assert_allclose(vec, reference[path], rtol=1e-4, atol=1e-5)


def test_damaged_chunks_are_detected_reported_and_embedded_again(
    prepared, store_copy, embedder, capsys
):
    folder, _, reference = prepared
    indexes = _chunk_indexes(store_copy)
    truncated_npy, garbage_index, flipped_npy = (
        indexes[0].with_suffix(".npy"),
        indexes[1],
        indexes[2].with_suffix(".npy"),
    )
    truncated_npy.write_bytes(truncated_npy.read_bytes()[:-100])
    garbage_index.write_bytes(b"\x00{not json")
    data = bytearray(flipped_npy.read_bytes())
    data[-7] ^= 0x40  # one bit of one feature: same size, same shape
    flipped_npy.write_bytes(bytes(data))

    argv = [
        "embed",
        str(folder),
        "--weights",
        "none",
        "--batch-size",
        "8",
        "--store",
        str(store_copy),
        "-q",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert f"images: {N_IMAGES} (6 embedded, 2 reused)" in captured.out
    repaired = [line for line in captured.err.splitlines() if "store repaired" in line]
    assert len(repaired) == 3 and all("damaged" in line for line in repaired)
    assert _leftovers(store_copy) == []

    again = featclust.embed_folder(folder, embedder=embedder, store=store_copy)
    assert (again.n_embedded, again.problems) == (0, [])
    for path, vec in zip(again.paths, again.features):
        np.testing.assert_allclose(vec, reference[path], rtol=1e-4, atol=1e-5)


# -- the store on its own (synthetic features) --------------------------------------------------

SETTINGS = {"dim": 4, "model": "synthetic"}


def _small_store(tmp_path, n=3):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        (folder / f"f{i}.png").write_bytes(bytes([i]) * (i + 1))
    files, _ = scan(folder)
    feats = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    return folder, files, feats


def test_store_of_other_version_or_settings_is_emptied_not_read(tmp_path):
    folder, files, feats = _small_store(tmp_path)
    root = tmp_path / "store"

    def fill():
        with store.FeatureStore(folder, SETTINGS, root, chunk_size=2) as st:
            st.add([(f, f"h{i}") for i, f in enumerate(files)], feats)
            st.finish(files)
            return st.features_dir

    def reopen():
        with store.FeatureStore(folder, SETTINGS, root) as st:
            return len(st), st.problems

    path = fill()
    assert reopen() == (3, [])
    settings = json.loads((path / "settings.json").read_text())
    for damage, word in [
        (
            lambda: (path / "settings.json").write_text(
                json.dumps({**settings, "store_format": store.STORE_FORMAT - 1})
            ),
            "another featclust version",
        ),
        (
            lambda: (path / "settings.json").write_text(
                json.dumps({**settings, "settings": {**SETTINGS, "pooling": "max"}})
            ),
            "other settings",
        ),
        (lambda: (path / "settings.json").write_text("{garbage"), "damaged"),
    ]:  # a lost settings.json is recovered: test_store_hardening.py (issue 21.6)
        fill()
        damage()
        n, problems = reopen()
        assert n == 0 and len(problems) == 1 and word in problems[0], problems
        assert not list(path.glob("rows/chunk-*"))


def test_leftovers_of_a_killed_write_are_cleaned_and_whole_chunks_kept(tmp_path):
    folder, files, feats = _small_store(tmp_path)
    root = tmp_path / "store"
    with store.FeatureStore(folder, SETTINGS, root, chunk_size=2) as st:
        st.add([(f, f"h{i}") for i, f in enumerate(files)], feats)
        rows, path = st.rows_dir, st.path
    whole = sorted(p.name for p in rows.iterdir())
    assert len(whole) == 4  # two chunks, .npy and .json each
    # A kill between the .npy and its index, and one in the middle of a write:
    (rows / "chunk-00000000000000aa.npy").write_bytes(b"\x93NUMPY half")
    (rows / ".chunk-00000000000000aa.json.x1y2.tmp").write_bytes(b'{"hashes": [')
    (path / ".index.json.x1y2.tmp").write_bytes(b'{"files": [')
    (path / "index.json").write_text("[1, 2")
    with store.FeatureStore(folder, SETTINGS, root) as st:
        assert len(st) == 0 and len(st.problems) == 1
        assert st.problems[0].startswith("the index of this folder is damaged")
        cached, _, missing = st.split(files)  # the files are hashed again: nothing to embed
        assert (len(cached), missing) == (0, files)  # fake hashes "h0".. are not their content
    assert sorted(p.name for p in rows.iterdir()) == whole
    assert sorted(p.name for p in path.iterdir()) == ["index.json", "lock", "lock.pid"]


def test_full_disk_while_writing_the_store_leaves_the_old_files(tmp_path, monkeypatch):
    folder, files, feats = _small_store(tmp_path)
    root = tmp_path / "store"
    with store.FeatureStore(folder, SETTINGS, root, chunk_size=2) as st:
        st.add([(f, f"h{i}") for i, f in enumerate(files[:2])], feats[:2])
        st.finish(files[:2])
        path = st.features_dir
    before = {k: v for k, v in _tree(path).items() if not k.endswith(("lock", "lock.pid"))}

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StoreError, match="disk full while writing the feature store"):
        with store.FeatureStore(folder, SETTINGS, root, chunk_size=2) as st:
            st.add([(files[2], "h2")], feats[2:])
            st.finish(files)
    monkeypatch.undo()
    assert {k: v for k, v in _tree(path).items() if not k.endswith(("lock", "lock.pid"))} == before
    with store.FeatureStore(folder, SETTINGS, root) as st:
        np.testing.assert_array_equal(st.load([f.path for f in files[:2]]), feats[:2])


def test_full_disk_in_a_cli_run_gives_a_clear_message(
    prepared, store_copy, tmp_path, monkeypatch, capsys
):
    folder, _, _ = prepared

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    rc = main(_sort_argv(folder, tmp_path / "out", store_copy))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 4 and "Traceback" not in err
    assert "error: disk full while writing the feature store" in err
    assert not (tmp_path / "out").exists() and _leftovers(store_copy) == []


# -- two runs at once ---------------------------------------------------------------------------

_LOCKS = ("/lock", "/lock.pid")
HOLD_LOCK = """
import json, sys
from featclust.store import FeatureStore
st = FeatureStore(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]).open()
print("locked", flush=True)
sys.stdin.readline()
"""


def test_second_run_on_the_same_store_is_refused_while_the_first_holds_it(
    prepared, store_copy, embedder, capsys
):
    folder, _, _ = prepared
    before = _tree(store_copy)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD_LOCK,
            str(folder),
            json.dumps(embedder.settings()),
            str(store_copy),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        argv = ["embed", str(folder), "--weights", "none", "--store", str(store_copy), "-q"]
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 4 and "Traceback" not in err
        assert f"is in use by another featclust run (process {holder.pid})" in err
        assert {k: v for k, v in _tree(store_copy).items() if not k.endswith(_LOCKS)} == {
            k: v for k, v in before.items() if not k.endswith(_LOCKS)
        }
    finally:
        holder.communicate("\n")
    assert main(argv) == 0  # free again once the first run has ended
    assert f"(0 embedded, {N_IMAGES} reused)" in capsys.readouterr().out


# -- output folders -----------------------------------------------------------------------------


def test_full_disk_while_copying_leaves_no_half_file(
    prepared, store_copy, tmp_path, monkeypatch, capsys
):
    folder, _, _ = prepared
    before = _tree(folder)
    out = tmp_path / "out"
    # Links first, so that the copying run makes every file again (a re-sort in the
    # same mode leaves the files already in place as they are).
    assert main(_sort_argv(folder, out, store_copy, "--mode", "symlink")) == 0
    real_copyfile, copied = shutil.copyfile, []

    def copy_until_full(src, dst, **kw):
        if len(copied) == 3:
            with open(src, "rb") as s, open(dst, "wb") as d:
                d.write(s.read(100))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        copied.append(src)
        return real_copyfile(src, dst, **kw)

    monkeypatch.setattr(sort.shutil, "copyfile", copy_until_full)
    rc = main(_sort_argv(folder, out, store_copy))
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 4 and "error: disk full while writing" in err and "Traceback" not in err
    assert _leftovers(out) == []
    copies = [p for p in out.glob("cluster_*/*") if p.is_file() and not p.is_symlink()]
    assert len(copies) == 3
    for p in copies:  # every file there is whole
        assert p.read_bytes() == (folder / p.name).read_bytes()
    assert json.loads((out / "featclust.json").read_text())["status"] == "writing"
    assert _tree(folder) == before

    assert main(_sort_argv(folder, out, store_copy)) == 0  # space again: the run completes
    assert len(read_csv(out / "labels.csv")) == N_IMAGES
    assert json.loads((out / "featclust.json").read_text())["status"] == "complete"


@pytest.mark.parametrize(
    "where",
    ["inside input", "input itself", "holds input", "link into input", "foreign folder", "a file"],
)
def test_unsafe_output_folder_is_refused_before_anything_is_written(
    where, prepared, tmp_path, capsys
):
    folder, _, _ = prepared
    before = _tree(folder)
    st_root = tmp_path / "store"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    (tmp_path / "a_file").write_text("mine")
    os.symlink(folder, tmp_path / "link")
    out, message = {
        "inside input": (folder / "sorted", "is inside the image folder"),
        "input itself": (folder, "is inside the image folder"),
        "holds input": (folder.parent, "is inside the output folder"),
        "link into input": (tmp_path / "link" / "sorted", "is inside the image folder"),
        "foreign folder": (foreign, "is not empty and is not a featclust output"),
        "a file": (tmp_path / "a_file", "exists and is not a folder"),
    }[where]
    others = _tree(tmp_path)
    rc = main(_sort_argv(folder, out, st_root))
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert _tree(folder) == before
    assert _tree(tmp_path) == others
    assert not (folder / "sorted").exists() and not st_root.exists()


def test_rerun_into_a_previous_output_replaces_only_featclusts_files(
    prepared, store_copy, tmp_path, capsys
):
    folder, _, _ = prepared
    out = tmp_path / "out"
    assert main(_sort_argv(folder, out, store_copy)) == 0
    (out / "my notes.txt").write_text("mine")
    (out / "cluster_00" / "my pick.png").write_bytes(b"mine")
    assert main(_sort_argv(folder, out, store_copy, "-k", "3")) == 0
    assert (out / "my notes.txt").read_text() == "mine"
    assert (out / "cluster_00" / "my pick.png").read_bytes() == b"mine"
    rows = read_csv(out / "labels.csv")
    assert {int(r["cluster"]) for r in rows} == {0, 1, 2}
    marker = json.loads((out / "featclust.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(marker["files"]) | {
        "featclust.json",
        "my notes.txt",
        "cluster_00/my pick.png",
    }

    # A cluster folder replaced by a link to the user's own folder: never written through.
    mine = tmp_path / "mine"
    shutil.move(out / "cluster_00", mine)
    os.symlink(mine, out / "cluster_00")
    before = _tree(mine)
    capsys.readouterr()
    rc = main(_sort_argv(folder, out, store_copy, "-k", "3"))
    err = capsys.readouterr().err
    assert rc == 2 and "leads outside the output folder" in err
    assert _tree(mine) == before
