"""Issue 12 on the CLI and output side: readable files, the CLI's words, progress bars,
placing new images into a sorted folder, and a package that builds.

Real CLI calls, real files, the real Keras model with random weights.
"""

import csv
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_two_families
from PIL import Image, ImageDraw

from featclust.cli import build_parser, main

FEATURES = ["--weights", "none", "--batch-size", "4", "-q"]
ROOT = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ux-images")
    return folder, make_two_families(folder, n_per_family=4)


def test_written_files_get_the_umask_mode(images, tmp_path, capsys):
    old = os.umask(0o022)
    try:
        out, store = tmp_path / "out", tmp_path / "store"
        code, _, err = run(["sort", images[0], out, "-k", "2", "--store", store, *FEATURES], capsys)
        assert code == 0, err
    finally:
        os.umask(old)
    modes = {}
    for base in (out, store):
        for path in base.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.name != "lock":
                modes[str(path.relative_to(tmp_path))] = stat.S_IMODE(path.stat().st_mode)
    assert any(p.endswith("index.html") for p in modes)
    assert any(p.endswith(".npy") for p in modes)
    wrong = {p: oct(m) for p, m in modes.items() if m != 0o644}
    assert not wrong


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_command_explains_its_arguments_and_ends_with_examples():
    for name, sub in _subparsers().items():
        text = sub.format_help()
        assert "examples:\n  featclust " in text, name
        assert "%%" not in text, name
        for action in sub._actions:
            if not action.option_strings:  # positional
                assert action.help, (name, action.dest)


def test_assign_help_does_not_claim_defaults_it_does_not_use():
    text = " ".join(_subparsers()["assign"].format_help().split())
    assert "95% of the cluster's own members" in text
    features = text[text.index("features (default: as the model") :]
    assert "(default: imagenet)" not in features and "(default: max)" not in features


def test_scan_k_takes_k_like_sort(images, tmp_path, capsys):
    for flag in ("-k", "--clusters"):
        code, out, err = run(
            ["scan-k", images[0], flag, "2:3", "--store", tmp_path / "s", *FEATURES], capsys
        )
        assert code == 0, err
        assert "suggested k:" in out


def test_demo_says_where_the_sample_images_are(tmp_path, capsys):
    code, out, err = run(
        [
            "demo",
            tmp_path / "out",
            "--images",
            tmp_path / "samples",
            "--store",
            tmp_path / "store",
            "--no-report",
            *FEATURES,
        ],
        capsys,
    )
    assert code == 0, err
    assert f"sample images: {tmp_path / 'samples'}" in out


class Recording:
    """A tqdm-like class that records what the library asked it to show."""

    made = []

    def __init__(self, desc=None, total=None, **kwargs):
        self.desc, self.total, self.n, self.kwargs = desc, total, 0, kwargs
        Recording.made.append(self)

    def update(self, n=1):
        self.n += n

    def close(self):
        pass


def test_python_api_takes_a_progress_class_or_false(images, tmp_path, capsys):
    import featclust

    Recording.made = []
    emb = featclust.embed_folder(
        images[0], store=tmp_path / "s", weights="none", batch_size=4, progress=Recording
    )
    bar = next(b for b in Recording.made if b.desc == "embedding")
    assert bar.total == len(emb.paths) == bar.n and bar.kwargs["leave"] is True
    capsys.readouterr()
    featclust.embed_folder(
        images[0], store=tmp_path / "s2", weights="none", batch_size=4, progress=False
    )
    assert capsys.readouterr().err == ""


def test_cli_writes_no_bar_frames_into_a_redirected_stderr(images, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "featclust",
            "embed",
            str(images[0]),
            "--weights",
            "none",
            "--store",
            str(tmp_path / "s"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "img/s" not in proc.stderr


def _dots(path, n, r, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    im = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(im)
    for x, y in rng.uniform(20, 180, (n, 2)):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
    im.save(path)


def test_assign_place_puts_new_images_into_the_sorted_folder(images, tmp_path, capsys):
    out, store = tmp_path / "out", tmp_path / "store"
    assert (
        run(
            ["sort", images[0], out, "-k", "2", "--store", store, "--no-report", *FEATURES], capsys
        )[0]
        == 0
    )
    new = tmp_path / "new"
    new.mkdir()
    _dots(new / "heavy_new.png", 60, 7, 1)
    _dots(new / "light_new.png", 15, 2, 2)
    code, stdout, err = run(["assign", out, new, "--place", "--store", store, "-q"], capsys)
    assert code == 0, err
    assigned = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(stdout))}
    labels = {r["path"]: r for r in csv.DictReader(open(out / "labels.csv", newline=""))}
    record = json.loads((out / "featclust.json").read_text())
    for name, row in assigned.items():
        dest = out / f"cluster_{int(row['cluster']):02d}" / name
        assert dest.read_bytes() == (new / name).read_bytes()
        assert labels[name]["cluster"] == row["cluster"]
        assert labels[name]["outlier"] == row["outlier"]
        assert f"cluster_{int(row['cluster']):02d}/{name}" in record["files"]
    assert record["counts"]["placed"] == 2
    assert sum(record["counts"]["cluster_sizes"]) == len(images[1]) + 2
    # the same images again: not placed twice
    code, _, err = run(["assign", out, new, "--place", "--store", store, "-q"], capsys)
    assert code == 0 and "placed 0 images" in err
    assert len(list(out.glob("cluster_*/*_new*.png"))) == 2
    # a later sort into the folder replaces them as featclust's own files
    assert (
        run(
            ["sort", images[0], out, "-k", "2", "--store", store, "--no-report", *FEATURES], capsys
        )[0]
        == 0
    )
    assert not list(out.glob("cluster_*/*_new*.png"))


def test_package_metadata_builds_with_the_declared_setuptools():
    import re

    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (requirement,) = meta["build-system"]["requires"]
    minimum = re.fullmatch(r"setuptools>=(\d+)", requirement.replace(" ", ""))
    assert minimum and int(minimum.group(1)) >= 77  # the SPDX license string needs 77
    assert isinstance(meta["project"]["license"], str)
    assert (ROOT / "LICENSE").is_file() and meta["project"]["classifiers"]
    assert meta["project"]["urls"]
    deps = " ".join(meta["project"]["dependencies"])
    for name in ("threadpoolctl", "filelock", "platformdirs"):
        assert name in deps


def test_import_needs_no_fcntl():
    code = (
        "import sys, builtins\nreal = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name == 'fcntl':\n        raise ImportError('no fcntl on Windows')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\nimport featclust\nprint('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_assign_place_can_link_instead_of_copy(images, tmp_path, capsys):
    out, store = tmp_path / "out", tmp_path / "store"
    assert (
        run(
            ["sort", images[0], out, "-k", "2", "--store", store, "--no-report", *FEATURES], capsys
        )[0]
        == 0
    )
    new = tmp_path / "new"
    new.mkdir()
    _dots(new / "heavy_new.png", 60, 7, 3)
    code, _, err = run(["assign", out, new, "--place", "symlink", "--store", store, "-q"], capsys)
    assert code == 0, err
    (placed,) = out.glob("cluster_*/heavy_new.png")
    assert placed.is_symlink() and placed.resolve() == (new / "heavy_new.png").resolve()
