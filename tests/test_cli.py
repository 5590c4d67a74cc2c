"""The command line, called in-process through ``main(argv)`` and as a real process."""

import os
import subprocess
import sys

import pytest
from conftest import make_two_families, read_csv

from featclust.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli-images")
    truth = make_two_families(path, n_per_family=4)
    return path, truth


def test_sort_then_other_k_reuses_the_store(folder, tmp_path, capsys):
    images, truth = folder
    store = tmp_path / "store"
    code, out, err = run(
        [
            "sort",
            str(images),
            str(tmp_path / "k2"),
            "-k",
            "2",
            "--weights",
            "none",
            "--store",
            str(store),
            "--batch-size",
            "4",
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    assert f"images: {len(truth)} ({len(truth)} embedded, 0 reused)" in out
    assert "random weights" in err  # the --weights none warning
    rows = read_csv(tmp_path / "k2" / "labels.csv")
    assert sorted(r["path"] for r in rows) == sorted(truth)
    clusters = {truth[r["path"]]: set() for r in rows}
    for r in rows:
        clusters[truth[r["path"]]].add(r["cluster"])
    assert clusters["heavy"].isdisjoint(clusters["light"])

    code, out, err = run(
        ["embed", str(images), "--weights", "none", "--store", str(store), "-q"], capsys
    )
    assert code == 0, err
    assert f"(0 embedded, {len(truth)} reused)" in out
    assert f"store: {store}" in out

    code, out, err = run(
        [
            "sort",
            str(images),
            str(tmp_path / "k3"),
            "-k",
            "3",
            "--weights",
            "none",
            "--store",
            str(store),
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    assert "(0 embedded," in out
    assert len(list((tmp_path / "k3").glob("cluster_*/*.png"))) == len(truth)


def test_rerun_into_own_output_keeps_foreign_files(folder, tmp_path, capsys):
    images, truth = folder
    out_dir = tmp_path / "out"
    args = [
        "sort",
        str(images),
        str(out_dir),
        "--weights",
        "none",
        "--store",
        str(tmp_path / "store"),
        "-q",
    ]
    assert run(args + ["-k", "3"], capsys)[0] == 0
    (out_dir / "my notes.txt").write_text("mine")
    assert run(args + ["-k", "2"], capsys)[0] == 0
    assert (out_dir / "my notes.txt").read_text() == "mine"
    assert not (out_dir / "cluster_02").exists()  # the k=3 run's folders are gone
    assert len(list(out_dir.glob("cluster_*/*.png"))) == len(truth)


@pytest.mark.parametrize("case", ["inside-input", "input-inside", "foreign", "foreign-file"])
def test_unsafe_output_refused_before_writing(case, folder, tmp_path, capsys):
    images, _ = folder
    if case == "inside-input":
        out_dir = images / "out"
    elif case == "input-inside":
        out_dir = images.parent
    elif case == "foreign":
        out_dir = tmp_path / "full"
        out_dir.mkdir()
        (out_dir / "keep.txt").write_text("x")
    else:
        out_dir = tmp_path / "afile"
        out_dir.write_text("x")
    before = sorted(os.listdir(images))
    code, out, err = run(
        [
            "sort",
            str(images),
            str(out_dir),
            "-k",
            "2",
            "--weights",
            "none",
            "--store",
            str(tmp_path / "store"),
            "-q",
        ],
        capsys,
    )
    assert code == 2
    errors = [line for line in err.splitlines() if "warning" not in line]
    assert len(errors) == 1 and errors[0].startswith("featclust: error: ")
    assert sorted(os.listdir(images)) == before
    assert not (tmp_path / "store").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sort", "/nonexistent/dir", "OUT", "-k", "2", "--weights", "none"], "does not exist"),
        (["sort", "IMAGES", "OUT", "-k", "99", "--weights", "none"], "n_clusters=99 is larger"),
        (["embed", "IMAGES", "--weights", "/no/such/file.h5"], "weights='/no/such/file.h5'"),
    ],
)
def test_user_errors_are_one_line(argv, message, folder, tmp_path, capsys):
    images, _ = folder
    argv = [
        str(images) if a == "IMAGES" else str(tmp_path / "o") if a == "OUT" else a for a in argv
    ]
    code, out, err = run(argv + ["--store", str(tmp_path / "store"), "-q"], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_bad_option_exits_2(capsys):
    code, _, err = run(["sort", "a", "b", "-k", "zero"], capsys)
    assert code == 2 and "-k" in err


def test_empty_folder_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(
        [
            "embed",
            str(tmp_path / "empty"),
            "--weights",
            "none",
            "--store",
            str(tmp_path / "store"),
            "-q",
        ],
        capsys,
    )
    assert code == 2 and "no files found" in err


def test_offline_imagenet_gives_clear_message_and_exit_3(folder, tmp_path):
    images, _ = folder
    env = dict(
        os.environ,
        KERAS_HOME=str(tmp_path / "keras"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        # a closed local port: the download fails at once, with or without internet
        https_proxy="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "featclust",
            "sort",
            str(images),
            str(tmp_path / "out"),
            "-k",
            "2",
            "-q",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("featclust: error: cannot get the ImageNet weights")
    assert (
        str(tmp_path / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5")
        in last
    )
    assert "--weights PATH" in last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_help_does_not_import_tensorflow():
    code = (
        "import sys\nfrom featclust.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "import featclust, featclust.cluster\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "False False"


def test_demo_holds_every_sample(tmp_path, capsys):
    from featclust.demo import demo_images

    demo_images(tmp_path / "samples", n_per_family=3)  # demo reuses a smaller sample set
    code, out, err = run(
        [
            "demo",
            str(tmp_path / "demo"),
            "--weights",
            "none",
            "--images",
            str(tmp_path / "samples"),
            "--store",
            str(tmp_path / "store"),
            "-q",
            "--no-report",
        ],
        capsys,
    )
    assert code == 0, err
    samples = sorted(p.name for p in (tmp_path / "samples").iterdir())
    copied = sorted(p.name for p in (tmp_path / "demo").glob("cluster_*/*.png"))
    assert copied == samples and len(samples) == 12


def test_demo_never_replaces_a_foreign_folder(tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"not featclust's")
    code, _, err = run(
        ["demo", str(tmp_path / "demo"), "--weights", "none", "--images", str(mine), "-q"], capsys
    )
    assert code == 2 and "not a featclust sample set" in err
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]
    assert (mine / "holiday.jpg").read_bytes() == b"not featclust's"
