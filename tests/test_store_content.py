"""The content-addressed feature store (issues 11.3, 11.4/11.6, 12, 13): rows found by the
image's content whatever its folder or name, never stale, freed by gc, a usable root.

Unit tests with a fake embedder; the end-to-end ones use the real Keras model (random weights).
"""

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import contrast_dots
from test_store import FakeEmbedder, write_images

import featclust
from featclust import images, store
from featclust.decoding import iter_features
from featclust.errors import FeaturesUnavailableError, StoreLockedError, UsageError
from featclust.fileio import content_hash
from featclust.store import FeatureStore, check_root, default_root, gc
from featclust.store import reading as storeread

OLD_NS = 1_500_000_000 * 10**9  # 2017: far from "racy"


def _age(folder):
    """Give every file an old mtime, as after unpacking an archive."""
    for p in Path(folder).rglob("*"):
        if p.is_file():
            os.utime(p, ns=(OLD_NS, OLD_NS))


def _embed(folder, root, fake=None):
    return featclust.embed_folder(folder, embedder=fake or FakeEmbedder(), store=root)


def _tree(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file() and not p.name.startswith("lock")
    }


def _n_rows(root):
    return sum(
        len(json.loads(p.read_text())["hashes"])
        for p in Path(root).glob("features-*/rows/chunk-*.json")
    )


# -- 11.3: equal size and mtime, other content --------------------------------------------------


def test_swapped_names_with_equal_size_and_mtime_get_their_own_features(tmp_path):
    img = tmp_path / "img"
    write_images(img, [0, 80, 160], "bmp")  # uncompressed: equal sizes
    _age(img)
    first = _embed(img, tmp_path / "store")
    a, b = img / "im00.bmp", img / "im01.bmp"
    os.rename(a, tmp_path / "swap")
    os.rename(b, a)
    os.rename(tmp_path / "swap", b)
    assert os.stat(a).st_mtime_ns == os.stat(b).st_mtime_ns == OLD_NS
    fake = FakeEmbedder()
    second = _embed(img, tmp_path / "store", fake)
    # Inode numbers differ: both are hashed again, and each finds the other's row by content.
    assert (fake.seen, second.n_embedded) == (0, 0)
    np.testing.assert_array_equal(second.features, first.features[[1, 0, 2]])


def test_content_rewritten_with_the_old_mtime_restored_is_embedded_again(tmp_path):
    img = tmp_path / "img"
    write_images(img, [0, 80], "bmp")
    write_images(tmp_path / "other", [200], "bmp")
    _age(img)
    _embed(img, tmp_path / "store")
    target = img / "im00.bmp"
    ino = os.stat(target).st_ino
    with open(target, "r+b") as fh:  # in place: same inode, as `cp` onto it then `touch -d`
        fh.write((tmp_path / "other" / "im00.bmp").read_bytes())
    os.utime(target, ns=(OLD_NS, OLD_NS))
    assert os.stat(target).st_ino == ino
    fake = FakeEmbedder()
    second = _embed(img, tmp_path / "store", fake)
    assert (fake.seen, second.n_embedded) == (1, 1)  # ctime changed: hashed, new content
    assert second.features[0, 0] == pytest.approx(200 / 255, abs=1e-6)


def test_touched_file_is_hashed_again_but_not_embedded(tmp_path, monkeypatch):
    monkeypatch.setattr(storeread, "RACY_NS", 0)  # the files were written just now
    img = tmp_path / "img"
    write_images(img, [0, 80, 160])
    _age(img)
    _embed(img, tmp_path / "store")
    os.utime(img / "im01.png")  # new mtime and ctime, same bytes
    read = []
    real = images.read_bytes
    monkeypatch.setattr(images, "read_bytes", lambda f: read.append(f.path) or real(f))
    files, _ = images.scan(img)
    with FeatureStore(img, FakeEmbedder().settings(), tmp_path / "store") as st:
        cached, _, n = st.update(files, functools.partial(iter_features, embedder=FakeEmbedder()))
        assert (len(cached), n, st.last_reused_by_hash) == (3, 0, 0)
    assert read == ["im01.png"]


def test_rerun_of_an_unchanged_folder_reads_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(storeread, "RACY_NS", 0)  # the files were written just now
    img = tmp_path / "img"
    write_images(img, range(0, 250, 25))
    _embed(img, tmp_path / "store")
    read = []
    real = images.read_bytes
    monkeypatch.setattr(images, "read_bytes", lambda f: read.append(f.path) or real(f))
    again = _embed(img, tmp_path / "store")
    assert (again.n_embedded, again.n_reused, read) == (0, 10, [])


def test_files_without_inode_and_ctime_are_always_hashed(tmp_path, monkeypatch):
    monkeypatch.setattr(storeread, "RACY_NS", 0)
    img = tmp_path / "img"
    write_images(img, [0, 80])
    _embed(img, tmp_path / "store")
    files = [images.ImageFile(f.path, f.abspath, f.size, f.mtime_ns) for f in images.scan(img)[0]]
    read = []
    real = images.read_bytes
    monkeypatch.setattr(images, "read_bytes", lambda f: read.append(f.path) or real(f))
    with FeatureStore(img, FakeEmbedder().settings(), tmp_path / "store") as st:
        cached, _, missing = st.split(files)
    assert (len(cached), missing, read) == (2, [], ["im00.png", "im01.png"])


# -- 13: found by content --------------------------------------------------------------------


def test_copied_renamed_and_linked_folders_embed_nothing(tmp_path):
    img, root = tmp_path / "img", tmp_path / "store"
    write_images(img, range(0, 250, 25))
    first = _embed(img, root)
    shutil.copytree(img, tmp_path / "copy")
    (tmp_path / "links").mkdir()
    (tmp_path / "hard").mkdir()
    for p in img.iterdir():
        os.symlink(p, tmp_path / "links" / p.name)
        os.link(p, tmp_path / "hard" / p.name)
    for folder in ["copy", "links", "hard"]:
        fake = FakeEmbedder()
        again = _embed(tmp_path / folder, root, fake)
        assert (fake.seen, again.n_embedded, again.n_reused) == (0, 0, 10), folder
        np.testing.assert_array_equal(again.features, first.features)
    os.rename(tmp_path / "copy", tmp_path / "renamed")
    renamed = _embed(tmp_path / "renamed", root)
    assert (renamed.n_embedded, renamed.n_reused) == (0, 10)
    assert _n_rows(root) == 10  # one row per content, whatever the number of folders


def test_a_changed_image_in_a_copy_is_embedded_and_reuse_is_counted(tmp_path):
    img, root = tmp_path / "img", tmp_path / "store"
    write_images(img, [0, 80, 160])
    _embed(img, root)
    shutil.copytree(img, tmp_path / "copy")
    write_images(tmp_path / "new", [7])
    shutil.copy(tmp_path / "new" / "im00.png", tmp_path / "copy" / "im01.png")
    files, _ = images.scan(tmp_path / "copy")
    fake = FakeEmbedder()
    with FeatureStore(tmp_path / "copy", fake.settings(), root) as st:
        cached, _, n = st.update(files, functools.partial(iter_features, embedder=fake))
        assert ([f.path for f in cached], n) == (["im00.png", "im02.png"], 1)
        assert st.last_reused_by_hash == 2
        assert st.load(["im01.png"])[0, 0] == pytest.approx(7 / 255, abs=1e-6)
        cached, _, n = st.update(files, functools.partial(iter_features, embedder=fake))
        assert (len(cached), n, st.last_reused_by_hash) == (3, 0, 0)  # now its own index's


def test_identical_files_share_one_row_and_hash(tmp_path):
    img = tmp_path / "img"
    write_images(img, [0, 80])
    shutil.copy(img / "im00.png", img / "same.png")
    result = _embed(img, tmp_path / "store")
    assert _n_rows(tmp_path / "store") == 2
    with FeatureStore(img, FakeEmbedder().settings(), tmp_path / "store") as st:
        hashes = st.hashes(["im00.png", "im01.png", "same.png"])
    assert hashes[0] == hashes[2] != hashes[1]
    assert hashes[0] == content_hash((img / "im00.png").read_bytes())
    np.testing.assert_array_equal(result.features[0], result.features[2])


def test_two_folders_of_the_same_settings_are_used_at_once(tmp_path):
    write_images(tmp_path / "one", [0, 80])
    write_images(tmp_path / "two", [160, 240])
    settings, root = FakeEmbedder().settings(), tmp_path / "store"
    with (
        FeatureStore(tmp_path / "one", settings, root) as one,
        FeatureStore(tmp_path / "two", settings, root) as two,
    ):
        for st, folder in [(one, "one"), (two, "two")]:
            files, _ = images.scan(tmp_path / folder)
            st.update(files, functools.partial(iter_features, embedder=FakeEmbedder()))
        with pytest.raises(StoreLockedError, match="in use by another featclust run"):
            FeatureStore(tmp_path / "one", settings, root).open()
    for folder, value in [("one", 0), ("two", 160)]:
        again = _embed(tmp_path / folder, root)
        assert again.n_embedded == 0 and again.features[0, 0] == pytest.approx(value / 255)


def test_a_damaged_shared_chunk_is_embedded_again_once(tmp_path):
    root = tmp_path / "store"
    write_images(tmp_path / "one", [0, 80, 160])
    _embed(tmp_path / "one", root)
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    [chunk] = root.glob("features-*/rows/chunk-*.npy")
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0x10  # one bit of one feature
    chunk.write_bytes(bytes(data))
    reader = FeatureStore(tmp_path / "one", FakeEmbedder().settings(), root)
    before = _tree(root)
    with pytest.raises(FeaturesUnavailableError, match="is damaged"):
        reader.read_features(["im00.png"])
    assert _tree(root) == before  # a reader repairs nothing
    two = _embed(tmp_path / "two", root)
    assert two.n_embedded == 3 and any("is damaged" in p for p in two.problems)
    one = _embed(tmp_path / "one", root)
    assert (one.n_embedded, one.problems) == (0, [])  # the new rows, found by hash
    np.testing.assert_array_equal(one.features, two.features)


# -- gc --------------------------------------------------------------------------------------


def test_gc_drops_rows_of_gone_folders_and_images_with_a_dry_run(tmp_path):
    root = tmp_path / "store"
    write_images(tmp_path / "one", [0, 80, 160])
    write_images(tmp_path / "two", [0, 200, 240])  # im00 shared with "one"
    _embed(tmp_path / "one", root)
    _embed(tmp_path / "two", root)
    assert _n_rows(root) == 5
    shutil.rmtree(tmp_path / "two")
    (tmp_path / "one" / "im02.png").unlink()
    _embed(tmp_path / "one", root)  # forgets im02.png
    before = _tree(root)
    kept = gc(root, dry_run=True)  # "two" is kept until forget_gone, which would free 2 rows
    assert (kept.rows_kept, kept.rows_dropped, kept.rows_gone) == (4, 1, 2)
    assert kept.folders_gone == [os.path.realpath(tmp_path / "two")] and kept.bytes_gone > 0
    dry = gc(root, dry_run=True, forget_gone=True)
    assert _tree(root) == before
    assert (dry.rows_kept, dry.rows_dropped) == (2, 3) and dry.bytes_freed > 0
    assert dry.folders_forgotten == [os.path.realpath(tmp_path / "two")]
    done = gc(root, forget_gone=True)
    assert done == dry
    assert _n_rows(root) == 2 and len(list(root.glob("features-*/folders/*"))) == 1
    fake = FakeEmbedder()
    assert _embed(tmp_path / "one", root, fake).n_embedded == 0 and fake.seen == 0
    assert gc(root) == store.GcReport(rows_kept=2)


def test_gc_refuses_while_a_run_uses_the_store(tmp_path):
    write_images(tmp_path / "one", [0])
    _embed(tmp_path / "one", tmp_path / "store")
    with FeatureStore(tmp_path / "one", FakeEmbedder().settings(), tmp_path / "store"):
        with pytest.raises(StoreLockedError, match=f"process {os.getpid()}"):
            gc(tmp_path / "store")


def test_gc_deletes_old_format_stores_and_nothing_else(tmp_path):
    root = tmp_path / "store"
    old = root / "img-0123456789ab" / "0123456789abcdef"
    old.mkdir(parents=True)
    (old / "settings.json").write_text(
        json.dumps({"store_format": 2, "image_dir": "/x/img", "settings": {"dim": 3}})
    )
    (old / "chunk-000000.json").write_text(json.dumps({"rows": [{}, {}], "digest": "d"}))
    (old / "chunk-000000.npy").write_bytes(b"x" * 100)
    (old / "lock").write_text("")
    mine = root / "notes-0123456789ab" / "0123456789abcdef"
    mine.mkdir(parents=True)
    (mine / "settings.json").write_text(json.dumps({"store_format": 2}))
    (mine / "my notes.txt").write_text("mine")
    report = gc(root)
    assert report.folders_forgotten == ["/x/img (store format 2)"]
    assert report.rows_dropped == 2 and report.bytes_freed > 100
    assert not (root / "img-0123456789ab").exists()
    assert (mine / "my notes.txt").read_text() == "mine"


# -- the store root (11.4, 11.6, 12) -----------------------------------------------------------


def test_check_root_refuses_unusable_roots_in_words(tmp_path):
    img = tmp_path / "img"
    write_images(img, [0])
    (tmp_path / "a_file").write_text("x")
    assert check_root(None) == default_root()
    assert check_root(tmp_path / "new" / "store") == tmp_path / "new" / "store"
    for root, message in [
        ("", "store='' is empty"),
        (tmp_path / "a_file", "exists and is not a folder"),
        (tmp_path / "a_file" / "store", "cannot be created"),
        (img / "store", "is inside the image folder"),
        (img, "nothing in the image folder is ever changed"),
    ]:
        with pytest.raises(UsageError, match=message):
            check_root(root, [img])
    with pytest.raises(UsageError, match="inside the image folder"):
        FeatureStore(img, FakeEmbedder().settings(), img / "store")
    assert sorted(p.name for p in img.iterdir()) == ["im00.png"]


def test_default_root_follows_the_platform_and_xdg(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda *a, **k: str(tmp_path / "cache"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_root() == tmp_path / "cache" / "store"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "featclust" / "store"


def test_store_works_without_fcntl(tmp_path):
    """As on Windows: no ``fcntl`` module; the lock comes from filelock."""
    code = (
        "import sys, warnings; sys.modules['fcntl'] = None; warnings.simplefilter('ignore')\n"
        "import featclust, featclust.store as s\n"
        "st = s.FeatureStore(sys.argv[1], {'dim': 3}, sys.argv[2]).open(); st.close()\n"
    )
    (tmp_path / "img").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "img"), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


# -- end to end, with the real model ---------------------------------------------------------


def test_sorted_copies_and_a_renamed_folder_embed_nothing_with_the_real_model(
    two_families, tmp_path, embedder
):
    folder, _ = two_families
    root = tmp_path / "store"
    first = featclust.embed_folder(folder, embedder=embedder, store=root)
    assert first.n_embedded == 16
    out = tmp_path / "out"
    for mode in ["copy", "symlink", "hardlink"]:
        sub = out / mode
        sub.mkdir(parents=True)
        for p in first.paths[:5]:
            {"copy": shutil.copy2, "symlink": os.symlink, "hardlink": os.link}[mode](
                folder / p, sub / p
            )
        again = featclust.embed_folder(sub, embedder=embedder, store=root)
        assert (again.n_embedded, again.n_reused) == (0, 5), mode
        np.testing.assert_array_equal(again.features, first.features[:5])
    shutil.copytree(folder, tmp_path / "renamed")
    shutil.copy(folder / first.paths[1], tmp_path / "renamed" / first.paths[0])  # a known image
    contrast_dots("heavy", np.random.default_rng(99)).save(tmp_path / "renamed" / first.paths[2])
    renamed = featclust.embed_folder(tmp_path / "renamed", embedder=embedder, store=root)
    assert (renamed.n_embedded, renamed.n_reused) == (1, 15)  # only the new image
    np.testing.assert_array_equal(renamed.features[0], first.features[1])
    assert not np.allclose(renamed.features[2], first.features[2], atol=1e-3)
