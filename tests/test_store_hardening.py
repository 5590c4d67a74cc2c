"""Hardening of the feature store, round three (issue 21, "The store", cases 1-6, and 16's
failed files of ``embed_inputs``): gc on stores without usable settings, damaged indexes,
renamed folders, copies embedded once, a ``rows`` file, swapped chunks, a lost settings.json.

Unit tests with a counting fake embedder (tests/test_store.py) and real files.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image
from test_store import FakeEmbedder, write_images

import featclust
from featclust import decoding
from featclust.errors import FeaturesUnavailableError, StoreError
from featclust.store import FeatureStore, gc


def _embed(folder, root, fake=None):
    return featclust.embed_folder(folder, embedder=fake or FakeEmbedder(), store=root)


def _features_dir(root):
    (found,) = Path(root).glob("features-*")
    return found


def _n_rows(root):
    return sum(
        len(json.loads(p.read_text())["hashes"])
        for p in Path(root).glob("features-*/rows/chunk-*.json")
    )


# -- 1: a features-* folder without settings.json, or with one that is not an object ----------


def test_case1_gc_skips_a_store_without_usable_settings_in_one_line(tmp_path):
    root = tmp_path / "store"
    write_images(tmp_path / "one", [0, 100])
    _embed(tmp_path / "one", root)
    real = _features_dir(root)
    # Features but no settings.json (and chunks that do not record theirs): left alone.
    kept = root / "features-00000000000000aa"
    shutil.copytree(real / "rows", kept / "rows")
    for meta in (kept / "rows").glob("chunk-*.json"):
        record = json.loads(meta.read_text())
        record.pop("store", None)
        meta.write_text(json.dumps(record))
    # A settings.json that is a list, as a first run on a full disk left it, and nothing else.
    empty = root / "features-00000000000000bb"
    (empty / "rows").mkdir(parents=True)
    (empty / "folders" / "img-0123456789ab").mkdir(parents=True)
    (empty / "folders" / "img-0123456789ab" / "lock").write_text("")
    (empty / "settings.json").write_text("[]")
    code, out, err = run_cli("store", "gc", "--store", str(root))
    assert (code, err) == (0, ""), err
    skipped = [line for line in out.splitlines() if str(kept) in line]
    removed = [line for line in out.splitlines() if str(empty) in line]
    assert len(skipped) == 1 and "skipped" in skipped[0] and "no settings.json" in skipped[0]
    assert len(removed) == 1 and "removed" in removed[0] and "list" in removed[0]
    assert len(list((kept / "rows").iterdir())) == 2 and not empty.exists()
    assert "dropped 0 rows" in out and "2 rows kept" in out  # the good store is collected


# -- 2: a live folder whose index.json is damaged ----------------------------------------------


def test_case2_gc_keeps_every_row_while_an_index_cannot_be_read(tmp_path):
    root = tmp_path / "store"
    write_images(tmp_path / "one", [0, 50, 100])
    write_images(tmp_path / "two", [150, 200, 250])
    _embed(tmp_path / "one", root)
    _embed(tmp_path / "two", root)
    (tmp_path / "one" / "im02.png").unlink()
    _embed(tmp_path / "one", root)  # one row now unused
    (index,) = [
        p
        for p in _features_dir(root).glob("folders/*/index.json")
        if "two" in json.loads(p.read_text())["image_dir"]
    ]
    index.write_text('{"store_format": 3, "image_dir": "/x", "fi')
    report = gc(root)
    assert (report.rows_dropped, report.rows_kept) == (0, 6) and _n_rows(root) == 6
    assert len(report.problems) == 1 and "cannot be read" in report.problems[0]
    assert str(index) in report.problems[0]
    fake = FakeEmbedder()
    _embed(tmp_path / "two", root, fake)  # its index is rebuilt by hashing; nothing embedded
    assert fake.seen == 0
    assert gc(root).rows_dropped == 1  # readable again: the unused row goes


# -- 3: a renamed image folder -----------------------------------------------------------------


def test_case3_a_renamed_folder_keeps_its_rows_and_gc_says_what_it_would_free(tmp_path):
    root = tmp_path / "store"
    old, new = tmp_path / "photos", tmp_path / "photos-2024"
    write_images(old, [0, 100, 200])
    _embed(old, root)
    old.rename(new)
    code, out, err = run_cli("store", "gc", "--store", str(root))
    assert code == 0, err
    assert "dropped 0 rows" in out and "3 rows kept" in out and str(old) in out
    assert "`featclust store gc --forget-gone` would free 3 rows" in out
    assert _n_rows(root) == 3
    fake = FakeEmbedder()
    assert _embed(new, root, fake).n_reused == 3 and fake.seen == 0
    code, out, err = run_cli("store", "gc", "--forget-gone", "--store", str(root))
    assert code == 0 and f"forgot {old}" in out and "dropped 0 rows" in out
    assert _n_rows(root) == 3  # the renamed folder's index references them
    assert _embed(new, root, fake).n_embedded == 0 and fake.seen == 0


# -- 4: the same content under many names ------------------------------------------------------


def test_case4_copies_and_hard_links_are_embedded_once_per_run(tmp_path):
    folder = tmp_path / "img"
    write_images(folder / "originals", [0, 40, 80, 120, 160, 200])
    (folder / "originals" / "broken.png").write_bytes(b"not an image at all")
    originals = sorted((folder / "originals").iterdir())
    for i in range(50):
        sub = folder / f"copy{i:02d}"
        sub.mkdir()
        for src in originals:
            if i % 2:
                os.link(src, sub / src.name)
            else:
                shutil.copyfile(src, sub / src.name)
    fake = FakeEmbedder()
    emb = _embed(folder, tmp_path / "store", fake)
    assert fake.seen == 6 and emb.n_embedded == 6 and emb.n_reused == 300
    assert len(emb.paths) == 306 and len(emb.bad_files) == 51
    assert {b.reason for b in emb.bad_files} == {emb.bad_files[0].reason}
    by_name = {}
    for path, row in zip(emb.paths, emb.features):
        by_name.setdefault(Path(path).name, set()).add(tuple(row))
    assert all(len(rows) == 1 for rows in by_name.values())
    # Copies added later, and queried as files: found by content, nothing embedded.
    shutil.copytree(folder / "originals", folder / "later")
    again = FakeEmbedder()
    assert _embed(folder, tmp_path / "store", again).n_embedded == 0 and again.seen == 0
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(20):
        shutil.copyfile(originals[1 + i % 2], loose / f"q{i}.png")  # im00, im01
    queried = FakeEmbedder()
    found = featclust.embed_inputs(
        sorted(loose.iterdir()), embedder=queried, store=tmp_path / "store2"
    )
    assert queried.seen == 2 and len(found.paths) == 20


def test_case4_copies_of_a_file_that_changed_after_hashing_get_their_own_row(tmp_path, monkeypatch):
    folder = tmp_path / "img"
    write_images(folder, [10, 10, 10])
    from featclust.store import copies  # new in this round: imported here so that the other
    # tests of this file run (and fail) on the code before it

    real = copies.distinct

    def then_change(files, known):
        out = real(files, known)  # im00.png is embedded for all three ...
        Image.fromarray(np.full((20, 20), 99, np.uint8)).save(folder / "im00.png")
        return out  # ... but changes before it is read

    monkeypatch.setattr("featclust.store.core.distinct", then_change)
    fake = FakeEmbedder()
    emb = _embed(folder, tmp_path / "store", fake)
    assert fake.seen == 3 and emb.n_embedded == 3
    assert emb.features[:, 0] == pytest.approx([99 / 255, 10 / 255, 10 / 255])


# -- 5: a rows/ path that is a file; chunks whose names do not match their content ------------


def test_case5_a_rows_file_is_a_clear_error(tmp_path):
    root = tmp_path / "store"
    write_images(tmp_path / "img", [0, 100])
    _embed(tmp_path / "img", root)
    rows = _features_dir(root) / "rows"
    shutil.rmtree(rows)
    rows.write_text("not a folder")
    with pytest.raises(StoreError, match="is a file, not a folder; move it away"):
        _embed(tmp_path / "img", root)
    code, out, err = run_cli("store", "gc", "--store", str(root))
    assert (code, err) == (0, "") and "is a file, not a folder" in out
    assert rows.read_text() == "not a folder"


def test_case5_swapped_chunks_are_reported_dropped_and_embedded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATCLUST_CHUNK_SIZE", "2")
    root = tmp_path / "store"
    write_images(tmp_path / "img", [0, 60, 120, 180])
    first = _embed(tmp_path / "img", root)
    rows = _features_dir(root) / "rows"
    a, b = sorted({p.name.split(".")[0] for p in rows.iterdir()})
    for suffix in (".npy", ".json"):
        (rows / f"{a}{suffix}").rename(rows / f"x{suffix}")
        (rows / f"{b}{suffix}").rename(rows / f"{a}{suffix}")
        (rows / f"x{suffix}").rename(rows / f"{b}{suffix}")
    settings = FakeEmbedder().settings()
    with pytest.raises(FeaturesUnavailableError, match="does not match its content"):
        FeatureStore(tmp_path / "img", settings, root).read_features(first.paths)
    fake = FakeEmbedder()
    again = _embed(tmp_path / "img", root, fake)
    assert fake.seen == 4 and len(again.problems) == 2
    assert all("does not match its content" in p for p in again.problems)
    np.testing.assert_array_equal(again.features, first.features)
    assert _embed(tmp_path / "img", root, fake).problems == [] and fake.seen == 4


# -- 6: a missing settings.json in a store shared by several folders --------------------------


def test_case6_a_lost_settings_json_is_recovered_from_the_chunks(tmp_path):
    root = tmp_path / "store"
    write_images(tmp_path / "one", [0, 100])
    write_images(tmp_path / "two", [150, 250])
    _embed(tmp_path / "one", root)
    _embed(tmp_path / "two", root)
    settings = _features_dir(root) / "settings.json"
    saved = settings.read_bytes()
    settings.unlink()
    reader = FeatureStore(tmp_path / "one", FakeEmbedder().settings(), root)
    assert reader.read_features(["im00.png", "im01.png"]).shape == (2, 3)  # read-only
    assert not settings.exists()
    fake = FakeEmbedder()
    one = _embed(tmp_path / "one", root, fake)
    assert fake.seen == 0 and settings.read_bytes() == saved
    assert one.problems == ["settings.json was missing; recovered from the records of its 2 chunks"]
    assert _embed(tmp_path / "two", root, fake).n_reused == 2 and fake.seen == 0
    settings.unlink()  # gc recovers it too
    report = gc(root)
    assert report.rows_kept == 4 and "recovered the missing settings.json" in report.problems[0]
    assert settings.read_bytes() == saved


def test_case6_chunks_that_do_not_record_their_settings_say_what_to_do(tmp_path):
    root = tmp_path / "store"
    write_images(tmp_path / "one", [0, 100])
    _embed(tmp_path / "one", root)
    for meta in _features_dir(root).glob("rows/chunk-*.json"):
        record = json.loads(meta.read_text())
        record.pop("store", None)  # as written by featclust before this round
        meta.write_text(json.dumps(record))
    (_features_dir(root) / "settings.json").unlink()
    with pytest.raises(StoreError, match="put its settings.json back, or delete that folder"):
        _embed(tmp_path / "one", root)
    assert _n_rows(root) == 2  # nothing emptied


# -- 16: failed files of embed_inputs ----------------------------------------------------------


def test_case16_embed_inputs_decodes_a_failed_file_once(tmp_path, monkeypatch):
    write_images(tmp_path / "q", [0])
    (tmp_path / "q" / "broken.png").write_bytes(b"not an image")
    for i in range(3):
        shutil.copyfile(tmp_path / "q" / "broken.png", tmp_path / "q" / f"broken{i}.png")
    decoded = []
    real = decoding.load_one
    monkeypatch.setattr(
        decoding, "load_one", lambda f, size=224: decoded.append(f) or real(f, size)
    )
    inputs = [tmp_path / "q" / n for n in ("im00.png", "broken.png", "broken0.png")]
    for _ in range(2):
        found = featclust.embed_inputs(
            [*inputs, tmp_path / "q"], embedder=FakeEmbedder(), store=tmp_path / "store"
        )
        assert len(found.paths) == 1 and len(found.bad_files) == 4
    assert len(decoded) == 2  # im00.png and one of the identical broken files, first call only
