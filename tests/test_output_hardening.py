"""Issue 11 on the output side: files nobody can lose, names any bytes can hold,
values that are checked before any work, damaged output files that give one line.

Real CLI calls (in-process through ``main`` and as processes), real files, the
real Keras model with random weights on a few small images.
"""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_two_families

from featclust.cli import main

FEATURES = ["--weights", "none", "--batch-size", "4", "-q"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def read_rows(path):
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hardening-images")
    truth = make_two_families(folder, n_per_family=4)
    return folder, truth


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("hardening-store")


@pytest.fixture(scope="module")
def sorted_out(images, store, tmp_path_factory):
    out = tmp_path_factory.mktemp("hardening-out") / "sorted"
    code = main(["sort", str(images[0]), str(out), "-k", "2", "--store", str(store), *FEATURES])
    assert code == 0
    return out


# -- 11.5: a user's file at a path featclust once wrote is never lost ----------------


def test_edited_copy_is_never_overwritten_or_deleted(images, store, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sort", images[0], out, "-k", "2", "--store", store, *FEATURES]
    assert run(args, capsys)[0] == 0
    copy = sorted(out.glob("cluster_*/*.png"))[0]
    copy.write_bytes(copy.read_bytes() + b"edited by a person")
    edited = copy.read_bytes()
    code, _, err = run(args, capsys)  # the same sort wants that path again
    assert code == 2
    assert str(copy) in err and "changed since featclust wrote it" in err
    assert "Traceback" not in err and copy.read_bytes() == edited


def test_edited_report_file_is_kept_with_a_warning(images, store, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["sort", images[0], out, "-k", "2", "--store", store, *FEATURES], capsys)[0] == 0
    page = out / "report" / "index.html"
    page.write_text("my notes")
    code, _, err = run(
        ["sort", images[0], out, "-k", "2", "--no-report", "--store", store, *FEATURES], capsys
    )
    assert code == 0, err
    assert page.read_text() == "my notes"
    assert "report/index.html" in err and "changed" in err
    record = json.loads((out / "featclust.json").read_text())
    assert "report/index.html" in record["files"]  # still remembered, still not overwritten


# -- 11.7 / 11.8: any bytes in a name --------------------------------------------------

ODD_NAMES = [
    "line\nbreak.png",
    "carriage\rreturn.png",
    "comma,name.png",
    'quote"name.png',
    os.fsdecode(b"latin-\xe9.png"),
]


def test_odd_file_names_survive_every_csv(tmp_path, store, capsys):
    folder = tmp_path / "odd"
    truth = make_two_families(folder, n_per_family=3)
    first = sorted(truth)
    for new, old in zip(ODD_NAMES, first):
        os.rename(folder / old, folder / new)
    (folder / "bad\rfile.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    code, _, err = run(["sort", folder, out, "-k", "2", "--store", store, *FEATURES], capsys)
    assert code == 0, err
    names = sorted(p for p in os.listdir(folder) if p != "bad\rfile.png")
    assert sorted(r["path"] for r in read_rows(out / "labels.csv")) == names
    assert [r["path"] for r in read_rows(out / "bad_files.csv")] == ["bad\rfile.png"]
    for r in read_rows(out / "labels.csv"):
        assert (out / f"cluster_{int(r['cluster']):02d}" / r["path"]).is_file()
    # the report read labels.csv back and wrote its page
    assert (out / "report" / "index.html").is_file()
    utf8 = ODD_NAMES[:-1]  # the name that is not UTF-8: see the strict-output test
    code, stdout, err = run(["assign", out, *[folder / n for n in utf8]], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(stdout, newline="")))
    assert [r["path"] for r in rows] == [str(folder / n) for n in utf8]


def test_strict_utf8_output_never_fails_on_a_name(tmp_path, store):
    folder = tmp_path / "img"
    make_two_families(folder, n_per_family=2)
    os.rename(folder / sorted(os.listdir(folder))[0], folder / os.fsdecode(b"x\xff.png"))
    out = tmp_path / os.fsdecode(b"out-\xfe")
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "featclust",
            "sort",
            str(folder),
            str(out),
            "-k",
            "2",
            "--store",
            str(store),
            *FEATURES,
        ],
        env=env,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    assert b"out-\xfe" in proc.stdout  # a pipe gets the name's own bytes
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "featclust",
            "assign",
            str(out),
            str(folder / os.fsdecode(b"x\xff.png")),
            "-q",
        ],
        env=env,
        capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    rows = list(
        csv.DictReader(io.StringIO(proc.stdout.decode("utf-8", "surrogateescape"), newline=""))
    )
    assert [r["path"] for r in rows] == [str(folder / os.fsdecode(b"x\xff.png"))]


def test_a_terminal_gets_escapes(monkeypatch):
    from featclust import cli

    class Terminal(io.TextIOWrapper):
        def isatty(self):
            return True

        def fileno(self):
            return 1

    raw = io.BytesIO()
    term = Terminal(raw, encoding="utf-8", errors="strict")
    monkeypatch.setattr(sys, "stdout", term)
    cli._escape_unprintable()
    print("output: " + os.fsdecode(b"out-\xfe"))
    term.flush()
    assert raw.getvalue() == b"output: out-\\udcfe\n"


# -- 11.9: numbers checked before any work ----------------------------------------------


@pytest.mark.parametrize(
    "option, message",
    [
        (["--seed", "-5"], "--seed: '-5' must be an integer from 0 to 4294967295"),
        (["--seed", "4294967296"], "must be an integer from 0 to 4294967295"),
        (["--batch-size", "0"], "--batch-size: '0' must be an integer at least 1"),
        (["--pca", "x"], "--pca: 'x' is not an integer"),
        (["-k", "0"], "is neither a positive integer nor 'auto'"),
    ],
)
def test_bad_numbers_fail_before_any_work(option, message, images, tmp_path, capsys):
    argv = ["sort", images[0], tmp_path / "out", "--store", tmp_path / "store", *FEATURES]
    if option[0] != "-k":
        argv += ["-k", "2"]
    code, _, err = run(argv + option, capsys)
    assert code == 2
    assert message in err.strip().splitlines()[-1]  # after argparse's usage: one line
    assert "Traceback" not in err
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()


# -- 11.10: damaged output files: one line naming the file -----------------------------


def _tamper_record(change):
    def tamper(out):
        path = out / "featclust.json"
        data = json.loads(path.read_text())
        path.write_text(json.dumps(change(data)))

    return tamper


def _set(data, dotted, value):
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return data


def _tamper_labels(text):
    def tamper(out):
        (out / "labels.csv").write_text(text)

    return tamper


def _tamper_model(make):
    def tamper(out):
        path = out / "model.npz"
        with np.load(path) as npz:
            arrays = dict(npz)
        make(arrays)
        np.savez(path, **arrays)

    return tamper


def _meta(change):
    def make(arrays):
        meta = json.loads(bytes(arrays["meta"]).decode())
        change(meta)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

    return make


TAMPERED = {
    "record is a list": _tamper_record(lambda d: [d]),
    "record not JSON": lambda out: (out / "featclust.json").write_text("{nope"),
    "record other version": _tamper_record(lambda d: _set(d, "featclust_output", 7)),
    "embedder is a list": _tamper_record(lambda d: _set(d, "embedder", [])),
    "n_clusters is text": _tamper_record(lambda d: _set(d, "clustering.n_clusters", "2")),
    "n_clusters not integer": _tamper_record(lambda d: _set(d, "clustering.n_clusters", 2.5)),
    "no feature settings": _tamper_record(lambda d: _set(d, "feature_settings", None)),
    "files not a list": _tamper_record(lambda d: _set(d, "files", {"a": 1})),
    "negative label": _tamper_labels("path,cluster,distance\nimg_00000.png,-1,0.5\n"),
    "label beyond k": _tamper_labels("path,cluster,distance\nimg_00000.png,7,0.5\n"),
    "distance not a number": _tamper_labels("path,cluster,distance\nimg_00000.png,0,abc\n"),
    "labels column missing": _tamper_labels("path,distance\nimg_00000.png,0.5\n"),
    "model not an npz": lambda out: (out / "model.npz").write_bytes(b"garbage"),
    "model unknown parameter": _tamper_model(_meta(lambda m: m["params"].update(bogus=1))),
    "model params a list": _tamper_model(_meta(lambda m: m.update(params=[1, 2]))),
    "model centres wrong shape": _tamper_model(
        lambda a: a.update(cluster_centers=np.zeros((5, 3), np.float32))
    ),
    "model thresholds wrong shape": _tamper_model(
        lambda a: a.update(thresholds=np.zeros(9, np.float32))
    ),
    "model n_clusters text": _tamper_model(_meta(lambda m: m["params"].update(n_clusters="2"))),
    "model pickled array": lambda out: np.savez(
        out / "model.npz", meta=np.array([{"a": 1}], dtype=object)
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_damaged_output_files_give_one_line(case, sorted_out, images, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(sorted_out, out)
    TAMPERED[case](out)
    some = images[0] / sorted(images[1])[0]
    # assign needs the record and the model; the report the record and labels.csv (without
    # a usable model it maps the raw features); each must stop with one line on what it needs
    needs = {
        "assign": ("record", "n_clusters", "no feature", "embedder", "files", "model"),
        "report": ("record", "n_clusters", "no feature", "embedder", "files", "label", "distance"),
    }
    for argv in (["assign", out, some, "-q"], ["report", out, "-q"]):
        code, _, err = run(argv, capsys)
        assert "Traceback" not in err
        if not case.startswith(needs[argv[0]]):
            assert code in (0, 2), (argv[0], err)
            continue
        assert code == 2, (argv[0], err)
        lines = [line for line in err.splitlines() if line.startswith("featclust: error:")]
        assert len(lines) == 1, err
        assert (
            "featclust.json" in lines[0] or "labels.csv" in lines[0] or "model.npz" in lines[0]
        ), lines[0]


# -- 11.13: left-overs and races --------------------------------------------------------


def test_orphan_temporary_files_are_cleaned_on_the_next_run(images, store, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sort", images[0], out, "-k", "2", "--store", store, "--no-report", *FEATURES]
    assert run(args, capsys)[0] == 0
    orphan = out / "cluster_00" / ".featclust-abcd1234.tmp"
    orphan.write_bytes(b"half a copy")
    foreign = out / "cluster_00" / ".notes.tmp"
    foreign.write_text("mine")
    assert run(args, capsys)[0] == 0
    assert not orphan.exists()
    assert foreign.read_text() == "mine"


def test_image_deleted_between_embedding_and_copying(images, store, tmp_path, capsys, monkeypatch):
    import featclust.scores

    folder = tmp_path / "img"
    shutil.copytree(images[0], folder)
    victim = sorted(os.listdir(folder))[0]
    real = featclust.scores.judge

    def judge_then_delete(*args, **kwargs):
        os.unlink(folder / victim)
        return real(*args, **kwargs)

    monkeypatch.setattr(featclust.scores, "judge", judge_then_delete)
    out = tmp_path / "out"
    code, _, err = run(
        ["sort", folder, out, "-k", "2", "--store", store, "--no-report", *FEATURES], capsys
    )
    assert code == 0, err
    bad = read_rows(out / "bad_files.csv")
    assert [r["path"] for r in bad] == [victim] and "copying" in bad[0]["reason"]
    assert not list(out.glob(f"cluster_*/{victim}"))
    record = json.loads((out / "featclust.json").read_text())
    assert not any(f.endswith(victim) for f in record["files"])


def test_demo_images_inside_out_dir_refused_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run(
        ["demo", out, "--images", out / "samples", "--weights", "none", "-q"], capsys
    )
    assert code == 2 and "inside the output folder" in err
    assert not out.exists()


@pytest.mark.parametrize("where", ["inside", "empty"])
def test_unusable_store_is_refused_before_anything_is_written(where, tmp_path, capsys):
    folder = tmp_path / "img"
    make_two_families(folder, n_per_family=2)
    before = sorted(os.listdir(folder))
    store = str(folder / "store") if where == "inside" else ""
    code, _, err = run(
        ["sort", folder, tmp_path / "out", "-k", "2", "--store", store, *FEATURES], capsys
    )
    assert code == 2 and "Traceback" not in err
    assert ("image folder" in err) if where == "inside" else ("empty" in err)
    assert sorted(os.listdir(folder)) == before  # nothing written into the image folder
    assert not (tmp_path / "out").exists()
