"""Edits of a sorted folder as a library (issue 22, point 1).

Real files in tmp folders; stand-in features (tests/edit_helpers.py) so a
sort takes a second. Each test checks the files on disk, labels.csv,
clusters.csv, featclust.json and model.npz.
"""

import json
import os

import numpy as np
import pytest
from conftest import read_csv, run_cli
from edit_helpers import StandInEmbedder, by_cluster, sort_stand_in, sorted_families

import featclust
import featclust.output.journal as journal
from featclust.cluster import FeatureKMeans
from featclust.errors import UnsafeOutputError, UsageError
from featclust.flags import FLAGS
from featclust.store import FeatureStore


@pytest.fixture
def folder(tmp_path):
    images, out, truth = sorted_families(tmp_path)
    return images, out, truth


def files_of(out):
    """Every file under the cluster folders and set_aside, relative to ``out``."""
    return {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if (p.is_file() or p.is_symlink())
        and not p.relative_to(out).parts[0].startswith(".")
        and "/" in p.relative_to(out).as_posix()
    }


def consistent(out):
    """The folder's parts agree: every labels.csv row has its file in its cluster's
    folder, the record lists every file with its stamp, the model has k clusters."""
    f = featclust.open_sorted(out)
    record = json.loads((out / "featclust.json").read_text())
    assert record["status"] == "complete"
    paths, labels, _ = f.labels()
    expected = {f"{f.folder_name(c)}/{p}" for p, c in zip(paths, labels)}
    expected |= {m.file for m in f.set_aside_images()}
    assert files_of(out) == expected
    assert expected <= set(record["files"])
    for rel in expected | {"labels.csv", "clusters.csv", "model.npz"}:
        st = os.lstat(out / rel)
        assert record["stamps"][rel] == [st.st_size, st.st_mtime_ns], rel
    assert f.model.n_clusters == f.n_clusters == len(f.clusters())
    rows = read_csv(out / "clusters.csv")
    assert [int(r["size"]) for r in rows] == [c.size for c in f.clusters()]
    assert [r["folder"] for r in rows] == [c.folder for c in f.clusters()]
    assert not (out / journal.JOURNAL_DIR / "pending.json").exists()
    return f


def features(tmp_path, paths):
    record = featclust.open_sorted(tmp_path / "out").record
    return FeatureStore(record.image_dir, record.feature_settings, record.store_root).read_features(
        paths
    )


def test_move_puts_the_file_rows_and_model_in_the_new_cluster(folder, tmp_path):
    _, out, truth = folder
    f = featclust.open_sorted(out)
    source, target = 0, 1
    moved = [m.path for m in f.members(source)[:2]]
    result = f.move(moved, target)
    assert result.kind == "move" and len(result.moved) == 2
    assert set(moved) <= by_cluster(out)[target]
    for p in moved:
        assert (out / f.folder_name(target) / p).is_file()
        assert not (out / f.folder_name(source) / p).exists()
    f = consistent(out)
    assert {m.path for m in f.members(target) if m.moved} == set(moved)
    # The model follows: its centres are the members' means, so assign answers the new cluster
    model, _ = FeatureKMeans.load(out / "model.npz")
    members = sorted(by_cluster(out)[target])
    X = features(tmp_path, members)
    np.testing.assert_allclose(
        model.cluster_centers_[target], model.reduce(X).mean(axis=0), rtol=1e-4, atol=1e-5
    )
    thresholds = model.thresholds_
    _, _, dists = featclust.open_sorted(out).labels()
    assert thresholds[target] > 0 and np.isfinite(dists).all()


def test_a_file_given_as_a_file_of_the_folder_and_a_cluster_given_by_name(folder):
    _, out, _ = folder
    f = featclust.open_sorted(out)
    f.rename(2, "dark ones")
    assert (out / "02-dark-ones").is_dir() and not (out / "cluster_02").exists()
    first = f.members(0)[0]
    f.move([first.file], "dark ones")
    assert first.path in by_cluster(out)[2]
    assert (out / "02-dark-ones" / first.path).is_file()
    f.move([str(out / "02-dark-ones" / first.path)], "cluster_01")
    assert first.path in by_cluster(out)[1]
    with pytest.raises(UsageError, match="not a cluster"):
        f.move([first.path], "no such name")
    with pytest.raises(UsageError, match="not an image"):
        f.move(["nothing.png"], 0)
    consistent(out)


def test_rename_is_filesystem_safe_and_names_are_kept(folder):
    _, out, _ = folder
    f = featclust.open_sorted(out)
    f.rename(1, "rings/../../etc: <b>")
    folder_ = f.folder_name(1)
    assert folder_.startswith("01-") and "/" not in folder_ and ".." not in folder_
    assert (out / folder_).is_dir()
    assert read_csv(out / "clusters.csv")[1]["name"] == "rings/../../etc: <b>"
    with pytest.raises(UsageError, match="name"):
        f.rename(0, "///")
    with pytest.raises(UsageError, match="already"):
        f.rename(0, "RINGS/../../etc: <b>")
    consistent(out)


def test_merge_renumbers_the_clusters_after_and_keeps_names(folder):
    _, out, _ = folder
    f = featclust.open_sorted(out)
    f.rename(2, "last")
    before = by_cluster(out)
    f.merge([0, 1])
    after = by_cluster(out)
    assert after[0] == before[0] | before[1] and after[1] == before[2]
    assert f.clusters()[1].name == "last" and f.folder_name(1) == "01-last"
    assert not (out / "cluster_01").exists() and not (out / "02-last").exists()
    f = consistent(out)
    assert json.loads((out / "featclust.json").read_text())["clustering"]["n_clusters"] == 2


def test_split_in_two_and_auto(tmp_path):
    _, out, truth = sorted_families(tmp_path, k=2)
    f = featclust.open_sorted(out)
    mixed = max(range(2), key=lambda c: len({truth[p] for p in by_cluster(out)[c]}))
    result = f.split(mixed, k=2)
    assert result.clusters == [mixed, 2]
    groups = by_cluster(out)
    assert all(len({truth[p] for p in g}) == 1 for g in groups.values())
    consistent(out)
    f.undo()
    assert len(by_cluster(out)) == 2
    f.split(mixed, k="auto")
    assert len(by_cluster(out)) == 3
    consistent(out)


def test_set_aside_is_no_cluster_and_moving_back_works(folder):
    _, out, _ = folder
    f = featclust.open_sorted(out)
    gone = [m.path for m in f.members(0)[:2]]
    f.set_aside(gone)
    assert {m.path for m in f.set_aside_images()} == set(gone)
    assert all((out / "set_aside" / p).is_file() for p in gone)
    paths, _, _ = f.labels()
    assert not set(gone) & set(paths)
    consistent(out)
    f.move([f"set_aside/{gone[0]}"], 2)
    assert gone[0] in by_cluster(out)[2]
    consistent(out)


def test_undo_and_redo_walk_the_journal(folder):
    _, out, _ = folder
    original = {n: (out / n).read_bytes() for n in ("labels.csv", "clusters.csv", "model.npz")}
    files = files_of(out)
    f = featclust.open_sorted(out)
    f.move([f.members(0)[0].path], 1)
    f.rename(1, "one")
    f.merge([1, 2])
    after = {n: (out / n).read_bytes() for n in original}
    after_files = files_of(out)
    for _ in range(3):
        f.undo()
    assert {n: (out / n).read_bytes() for n in original} == original
    assert files_of(out) == files
    consistent(out)
    with pytest.raises(UsageError, match="nothing to undo"):
        f.undo()
    for _ in range(3):
        f.redo()
    assert {n: (out / n).read_bytes() for n in original} == after
    assert files_of(out) == after_files
    with pytest.raises(UsageError, match="nothing to redo"):
        f.redo()
    f.undo()
    f.confirm(0)  # a new edit drops what was undone
    assert not f.can_redo and f.clusters()[0].confirmed
    consistent(out)


def test_files_featclust_did_not_write_are_never_touched(folder):
    _, out, _ = folder
    f = featclust.open_sorted(out)
    mine = out / "cluster_00" / "my notes.txt"
    mine.write_text("mine")
    f.rename(0, "zero")
    assert mine.read_text() == "mine"  # stays in the old folder
    assert (out / "00-zero").is_dir()
    # A file of someone else's where an image would go: the edit is refused, nothing moves
    victim = f.members(1)[0].path
    (out / "00-zero" / victim).write_text("someone else's")
    state = {n: (out / n).read_bytes() for n in ("labels.csv", "featclust.json")}
    with pytest.raises(UnsafeOutputError, match="refusing to overwrite"):
        f.move([victim], 0)
    assert (out / "00-zero" / victim).read_text() == "someone else's"
    assert {n: (out / n).read_bytes() for n in state} == state
    assert (out / f.folder_name(1) / victim).is_file()


@pytest.mark.parametrize("crash_at", [0, 1, 3, "install", "record"])
def test_an_edit_interrupted_at_any_step_is_finished_by_the_next_open(
    folder, monkeypatch, crash_at
):
    _, out, _ = folder
    f = featclust.open_sorted(out)
    moving = [m.path for m in f.members(0)[:4]]
    calls = []
    real_move, real_write = journal.move_file, journal.write_record

    def crashing_move(root, old, new):
        if calls.count("move") == crash_at:
            raise KeyboardInterrupt  # as a kill between two steps
        calls.append("move")
        real_move(root, old, new)

    def crashing_write(where, record):
        if crash_at == "record" and os.path.samefile(where, out):
            raise KeyboardInterrupt
        real_write(where, record)

    monkeypatch.setattr(journal, "move_file", crashing_move)
    monkeypatch.setattr(journal, "write_record", crashing_write)
    if crash_at == "install":
        monkeypatch.setattr(
            journal.shutil, "copy2", lambda *a: (_ for _ in ()).throw(OSError(5, "io"))
        )
    with pytest.raises((KeyboardInterrupt, featclust.errors.OutputError)):
        f.set_aside(moving)
    monkeypatch.undo()
    assert (out / journal.JOURNAL_DIR / "pending.json").exists()
    again = consistent(out)  # opening finishes the edit
    assert {m.path for m in again.set_aside_images()} == set(moving)
    again.undo()
    assert not again.set_aside_images()
    consistent(out)


def test_kill_9_during_an_edit_leaves_a_folder_the_next_open_makes_whole(folder, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    _, out, _ = folder
    script = tmp_path / "edit.py"
    script.write_text(
        "import sys, time\n"
        "import featclust, featclust.output.journal as j\n"
        "real = j.move_file\n"
        "def slow(*a):\n"
        "    time.sleep(0.05)\n"
        "    real(*a)\n"
        "j.move_file = slow\n"
        "f = featclust.open_sorted(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "f.merge([0, 1, 2])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out)], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout.readline().strip() == b"ready"
    deadline = time.time() + 30
    while not (out / journal.JOURNAL_DIR / "pending.json").exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    f = consistent(out)
    assert len(f.clusters()) == 1


def test_no_store_no_refit_error_names_it(folder, tmp_path):
    import shutil

    _, out, _ = folder
    shutil.rmtree(tmp_path / "store")
    f = featclust.open_sorted(out)
    f.rename(0, "still fine")  # a rename needs no features
    with pytest.raises(featclust.errors.FeaturesUnavailableError, match="feature store"):
        f.move([f.members(0)[0].path], 1)
    consistent(out)


def test_stand_in_embedder_is_what_the_sort_recorded(folder):
    _, out, _ = folder
    record = json.loads((out / "featclust.json").read_text())
    assert record["feature_settings"] == StandInEmbedder().settings()


def test_resort_keeps_what_the_person_decided_and_is_one_undoable_edit(tmp_path):
    _, out, truth = sorted_families(tmp_path, k=3)
    f = featclust.open_sorted(out)
    with pytest.raises(UsageError, match="nothing to learn from"):
        f.resort()
    # The person moves two images where they do not belong and confirms cluster 2
    wrong = [m.path for m in f.members(0)[:2]]
    f.move(wrong, 1)
    f.confirm(2)
    before = by_cluster(out)
    result = f.resort()
    assert result.kind == "resort"
    after = by_cluster(out)
    assert set(wrong) <= after[1]  # moved images stay where the person put them
    assert before[2] <= after[2]  # a confirmed cluster keeps every member
    assert sum(len(g) for g in after.values()) == 18
    consistent(out)
    f.undo()
    assert by_cluster(out) == before
    consistent(out)


def test_a_sort_into_an_edited_folder_refuses_unless_told(folder, tmp_path):
    images, out, _ = folder
    f = featclust.open_sorted(out)
    f.rename(0, "mine")
    code, _, err = run_cli("sort", images, out, "-k", "3", "--weights", "none", "-q")
    errors = [line for line in err.splitlines() if line.startswith("featclust: error")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err
    assert "1 edit" in err and "--discard-edits" in err
    assert (out / "00-mine").is_dir()  # nothing thrown away
    with pytest.raises(UsageError, match="discard_edits=True"):
        featclust.sort_folder(images, out, n_clusters=3, embedder=StandInEmbedder())
    sort_stand_in(images, out, tmp_path, discard_edits=True)
    assert not (out / "00-mine").exists() and (out / "cluster_00").is_dir()
    assert not (out / journal.JOURNAL_DIR).exists()
    f = consistent(out)
    assert not f.curated and not f.can_undo


def test_the_edit_commands(folder):
    _, out, truth = folder
    f = featclust.open_sorted(out)
    first = f.members(0)[0]
    code, text, err = run_cli("move", out, "--to", "1", first.file)
    assert code == 0 and "moved 1 image to cluster_01" in text, err
    assert first.path in by_cluster(out)[1]
    assert run_cli("rename", out, "1", "rings")[0] == 0
    assert (out / "01-rings").is_dir()
    code, text, _ = run_cli("merge", out, "rings", "2", "--into", "rings")
    assert code == 0 and "merged cluster_02 into 01-rings" in text
    assert len(by_cluster(out)) == 2
    assert run_cli("undo", out)[0] == 0 and len(by_cluster(out)) == 3
    assert run_cli("redo", out)[0] == 0 and len(by_cluster(out)) == 2
    code, text, _ = run_cli("split", out, "rings", "-k", "2")
    assert code == 0 and len(by_cluster(out)) == 3
    second = featclust.open_sorted(out).members(0)[0]
    assert run_cli("set-aside", out, second.path)[0] == 0
    assert (out / "set_aside" / second.path).is_file()
    assert run_cli("confirm", out, "0")[0] == 0
    code, text, _ = run_cli("resort", out)
    assert code == 0 and "re-sorted the rest" in text
    consistent(out)
    code, _, err = run_cli("rename", out, "9", "x")
    assert code == 2 and err.startswith("featclust: error: cluster='9' is not a cluster")
    code, _, err = run_cli("split", out, "0", "-k", "1")
    assert code == 2 and "at least 2" in err


def test_assign_answers_the_cluster_a_person_moved_an_image_to(folder, tmp_path):
    images, out, truth = folder
    f = featclust.open_sorted(out)
    moved = f.members(0)[0].path
    other = f.members(0)[1].path
    f.move([moved], 2)
    result = featclust.assign_images(
        out, [images / moved, images / other], embedder=StandInEmbedder(), store=tmp_path / "store"
    )
    assert list(result.labels) == [2, 0]
    assert np.isfinite(result.distances).all()
    inside = featclust.assign_images(
        out, [out / f.folder_name(2) / moved], embedder=StandInEmbedder(), store=tmp_path / "store"
    )
    assert list(inside.labels) == [2]


def test_the_journal_keeps_the_last_edits_only(folder, monkeypatch):
    _, out, _ = folder
    monkeypatch.setattr(journal, "MAX_UNDO", 2)
    f = featclust.open_sorted(out)
    for name in ("a", "b", "c", "d"):
        f.rename(0, name)
    states = sorted(p.name for p in (out / journal.JOURNAL_DIR).glob("state-*"))
    assert states == ["state-0002", "state-0003", "state-0004"]
    f.undo()
    f.undo()
    assert f.folder_name(0) == "00-b"
    with pytest.raises(UsageError, match="keeps the last 2 edits"):
        f.undo()
    f.redo()
    assert f.folder_name(0) == "00-c"
    consistent(out)


def test_an_edit_records_every_flag_the_sort_records(folder):
    _, out, _ = folder
    f = featclust.open_sorted(out)
    sorted_flags = set(f.record.flags)
    f.move([m.path for m in f.members(0)[:2]], 1)
    edited = featclust.open_sorted(out).record.flags
    assert set(edited) == sorted_flags == set(FLAGS)
    assert all(isinstance(v, list) for v in edited.values())


def test_an_edit_refits_only_the_clusters_whose_members_changed(folder):
    _, out, _ = folder
    f = featclust.open_sorted(out)
    before = f.model.cluster_centers_.copy()
    _, _, dists_before = f.labels()
    f.move([m.path for m in f.members(0)[:1]], 1)
    f = featclust.open_sorted(out)
    after = f.model.cluster_centers_
    np.testing.assert_array_equal(after[2], before[2])  # untouched: its centre and distances
    assert not np.allclose(after[0], before[0]) and not np.allclose(after[1], before[1])
    paths, labels, dists = f.labels()
    np.testing.assert_array_equal(dists[labels == 2], dists_before[labels == 2])
