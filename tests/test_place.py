"""``assign --place`` as an edit (issue 22, point 1): O(N), safe when interrupted or
failing, and usable in a folder copied with ``cp -r``.

Stand-in features (tests/edit_helpers.py); the assignment is made up (labels
given), so no model runs: what is tested is the placement itself.
"""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from edit_helpers import (
    StandInEmbedder,
    by_cluster,
    make_families,
    sort_stand_in,
    sorted_families,
)
from test_edits import consistent

import featclust
import featclust.assign
import featclust.output.journal as journal
import featclust.output.record
from featclust.assign import AssignResult, place_images
from featclust.errors import OutputError
from featclust.store import FeatureStore


def new_images(folder, n, seed=1):
    truth = make_families(folder, n_per_family=n, seed=seed)
    return [str(folder / p) for p in sorted(truth)]


def assignment(paths, k=3):
    n = len(paths)
    return AssignResult(
        list(paths), np.arange(n) % k, np.full(n, 0.5, np.float32), np.zeros(n, bool)
    )


def kill_placement(out, tmp_path, monkeypatch, after):
    """Place 2 new images per cluster, killed (as by kill -9) after ``after`` files.

    No handler runs, so the files made stay until the folder is next opened;
    returns their paths.
    """
    made = []
    real = featclust.assign.place

    def dying(src, dst, mode):
        if len(made) == after:
            raise KeyboardInterrupt
        made.append(dst)
        return real(src, dst, mode)

    monkeypatch.setattr(featclust.assign, "place", dying)
    monkeypatch.setattr(featclust.assign, "recover_placement", lambda out: 0)
    with pytest.raises(KeyboardInterrupt):
        place_images(out, assignment(new_images(tmp_path / "new", 2)))
    return made


def snapshot(out):
    """The folder's tables and record, and every file in it (the journal left out)."""
    files = {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and journal.JOURNAL_DIR not in p.parts
    }
    record = json.loads((out / "featclust.json").read_text())
    return (out / "labels.csv").read_bytes(), record["files"], files


def test_placing_adds_files_rows_and_record_in_one_edit_that_undo_takes_back(tmp_path):
    _, out, _ = sorted_families(tmp_path)
    before = snapshot(out)
    new = new_images(tmp_path / "new", 2)
    result = place_images(out, assignment(new))
    assert len(result.placed) == 6 and not result.skipped
    for src, rel in result.placed:
        assert (out / rel).read_bytes() == open(src, "rb").read()
    assert sum(len(g) for g in by_cluster(out).values()) == 18 + 6
    f = consistent(out)
    assert f.record.counts["placed"] == 6 and not f.curated  # no person's edit
    again = place_images(out, assignment(new))  # the same images: not placed twice
    assert not again.placed and len(again.skipped) == 6
    f.undo()
    assert snapshot(out) == before
    f.redo()
    assert sum(len(g) for g in by_cluster(out).values()) == 24
    consistent(out)


def test_placing_follows_a_renamed_cluster(tmp_path):
    _, out, _ = sorted_families(tmp_path)
    featclust.open_sorted(out).rename(1, "middle")
    new = new_images(tmp_path / "new", 1)
    result = place_images(out, assignment(new))
    assert any(rel.startswith("01-middle/") for _, rel in result.placed)
    assert not (out / "cluster_01").exists()
    consistent(out)


def test_placing_writes_the_record_once_per_batch(tmp_path, monkeypatch):
    _, out, _ = sorted_families(tmp_path)
    writes = []
    real = journal.write_record

    def counting(where, record):
        writes.append(where)
        real(where, record)

    monkeypatch.setattr(journal, "write_record", counting)
    place_images(out, assignment(new_images(tmp_path / "few", 1)))
    assert [w for w in writes if w == out] == [out]
    writes.clear()
    place_images(out, assignment(new_images(tmp_path / "many", 10, seed=2)))
    assert [w for w in writes if w == out] == [out]  # once for 30 images as for 3
    assert len(writes) == 2  # and once for the journal's copy of the state


@pytest.mark.parametrize("failure", ["read-only", "ctrl-c"])
def test_a_failed_or_interrupted_placement_leaves_the_folder_as_it_was(
    tmp_path, monkeypatch, failure
):
    _, out, _ = sorted_families(tmp_path)
    before = snapshot(out)
    made = []
    real = featclust.assign.place

    def failing(src, dst, mode):
        if len(made) == 3:
            if failure == "ctrl-c":
                raise KeyboardInterrupt
            raise PermissionError(13, "Permission denied", str(dst))
        made.append(dst)
        return real(src, dst, mode)

    monkeypatch.setattr(featclust.assign, "place", failing)
    with pytest.raises(KeyboardInterrupt if failure == "ctrl-c" else OutputError):
        place_images(out, assignment(new_images(tmp_path / "new", 2)))
    assert len(made) == 3 and not any(os.path.exists(p) for p in made)
    assert snapshot(out) == before
    consistent(out)


def test_a_placement_killed_while_making_files_is_rolled_back_by_the_next_open(
    tmp_path, monkeypatch
):
    _, out, _ = sorted_families(tmp_path)
    before = snapshot(out)
    made = kill_placement(out, tmp_path, monkeypatch, after=4)
    assert all(os.path.exists(p) for p in made)
    monkeypatch.undo()
    consistent(out)  # opening rolls the placement back
    assert snapshot(out) == before
    assert not any(os.path.exists(p) for p in made)


def test_a_name_whose_fallback_is_too_long_is_skipped_not_fatal(tmp_path):
    _, out, _ = sorted_families(tmp_path)
    long_name = "x" * 251 + ".png"
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, value in ((a, 10), (b, 200)):
        folder.mkdir()
        shutil.copy(
            tmp_path / "images" / sorted(os.listdir(tmp_path / "images"))[value // 100],
            folder / long_name,
        )
    result = place_images(out, assignment([str(a / long_name), str(b / long_name)], k=1))
    assert len(result.placed) == 1 and len(result.skipped) == 1
    assert "too long" in result.skipped[0][1]
    consistent(out)
    assert featclust.open_sorted(out).record.status == "complete"


def test_a_folder_copied_with_cp_r_can_be_placed_into_edited_and_sorted_again(tmp_path):
    images, out, _ = sorted_families(tmp_path)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)  # times not kept
    result = place_images(copy, assignment(new_images(tmp_path / "new", 1)))
    assert len(result.placed) == 3
    f = consistent(copy)
    f.move([f.members(0)[0].path], 1)
    consistent(copy)
    sorted_again = sort_stand_in(images, copy, tmp_path, discard_edits=True)
    assert not sorted_again.kept  # every file recognised as featclust's, by its content
    consistent(copy)


def test_a_sort_after_a_killed_placement_rolls_it_back_first(tmp_path, monkeypatch):
    images, out, _ = sorted_families(tmp_path)
    made = kill_placement(out, tmp_path, monkeypatch, after=2)
    monkeypatch.undo()
    result = sort_stand_in(images, out, tmp_path)
    assert not result.kept and not any(os.path.exists(p) for p in made)
    consistent(out)


def test_an_edit_after_a_placement_refits_with_the_placed_images_features(tmp_path):
    _, out, _ = sorted_families(tmp_path)
    new = new_images(tmp_path / "new", 2)
    assigned = featclust.assign.assign_images(
        out, new, embedder=StandInEmbedder(), store=tmp_path / "store"
    )
    made_up = AssignResult(
        assigned.paths,
        np.zeros(len(new), np.int64),  # every new image into cluster 0, at a made-up distance
        np.full(len(new), 9.0, np.float32),
        np.zeros(len(new), bool),
    )
    place_images(out, made_up)
    f = featclust.open_sorted(out)
    placed = set(f.state.placed)
    assert len(placed) == 6
    f.move([m.path for m in f.members(1)[:1]], 0)  # cluster 0 changes: re-fitted
    f = featclust.open_sorted(out)
    paths, labels, dists = f.labels()
    in_zero = [p for p, c in zip(paths, labels) if c == 0]
    assert placed <= set(in_zero)
    # The placed images' distances were measured again, and cluster 0's centre is the mean
    # of all its members, the placed ones included (their rows found by content).
    assert all(d != 9.0 for p, d in zip(paths, dists) if p in placed)
    record = f.record
    store = FeatureStore(record.image_dir, record.feature_settings, record.store_root)
    folder0 = out / f.folder_name(0)
    X = store.read_features(in_zero, copies={p: str(folder0 / p) for p in placed})
    np.testing.assert_allclose(
        f.model.cluster_centers_[0], f.model.reduce(X).mean(axis=0), rtol=1e-4, atol=1e-5
    )
