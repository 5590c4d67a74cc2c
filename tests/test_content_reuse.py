"""Issue 13 end to end: features follow the image content; similar images; duplicates.

Real CLI calls on real files with the real Keras model (random weights).
"""

import csv
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_two_families
from PIL import Image

from featclust.cli import main

FEATURES = ["--weights", "none", "--batch-size", "4", "-q"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sorted_once(tmp_path_factory):
    base = tmp_path_factory.mktemp("reuse")
    folder = base / "images"
    truth = make_two_families(folder, n_per_family=4)
    store = base / "store"
    out = base / "sorted"
    assert main(["sort", str(folder), str(out), "-k", "2", "--store", str(store), *FEATURES]) == 0
    return {"folder": folder, "truth": truth, "store": store, "out": out, "base": base}


def test_sub_clustering_embeds_nothing_and_links_back(sorted_once, tmp_path, capsys):
    s = sorted_once
    cluster = sorted(p for p in s["out"].iterdir() if p.name.startswith("cluster_"))[0]
    split = tmp_path / "split"
    code, out, err = run(
        ["sort", cluster, split, "-k", "2", "--store", s["store"], *FEATURES], capsys
    )
    assert code == 0, err
    assert "(0 embedded," in out
    record = json.loads((split / "featclust.json").read_text())
    assert record["parent"] == {"out_dir": str(s["out"].resolve()), "cluster": cluster.name}
    page = (split / "report" / "index.html").read_text()
    assert "../../sorted/report/index.html" in page or "sorted/report/index.html" in page


def test_renamed_copy_embeds_nothing_but_a_changed_image(sorted_once, tmp_path, capsys):
    s = sorted_once
    copy = tmp_path / "renamed"
    shutil.copytree(s["folder"], copy)
    code, out, err = run(["embed", copy, "--store", s["store"], *FEATURES], capsys)
    assert code == 0, err
    assert f"({0} embedded, {len(s['truth'])} reused)" in out
    victim = copy / sorted(s["truth"])[0]
    with Image.open(victim) as im:
        changed = im.convert("L").point(lambda v: 255 - v)
    changed.save(victim)
    code, out, err = run(["embed", copy, "--store", s["store"], *FEATURES], capsys)
    assert code == 0, err
    assert f"(1 embedded, {len(s['truth']) - 1} reused)" in out


def test_similar_returns_the_query_itself_first(sorted_once, capsys):
    s = sorted_once
    query = s["folder"] / sorted(s["truth"])[3]
    code, out, err = run(
        ["similar", s["folder"], query, "--top", "3", "--store", s["store"], *FEATURES], capsys
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["query", "path", "similarity", "rank"]
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    # the query and the paths found both name files as given (issue 21 case 16)
    assert rows[0]["path"] == rows[0]["query"] == str(query)
    assert float(rows[0]["similarity"]) == pytest.approx(1.0)
    sims = [float(r["similarity"]) for r in rows]
    assert sims == sorted(sims, reverse=True)


def test_similar_on_a_stored_folder_imports_no_tensorflow(sorted_once):
    s = sorted_once
    query = s["folder"] / sorted(s["truth"])[0]
    code = (
        "import sys\nfrom featclust.cli import main\n"
        f"rc = main(['similar', {str(s['folder'])!r}, {str(query)!r}, '--store', "
        f"{str(s['store'])!r}, '--weights', 'none', '-q'])\n"
        "print('RC', rc, 'TF', 'tensorflow' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "RC 0 TF False" in proc.stdout, proc.stderr


def test_duplicates_finds_copies_and_resaved_images(sorted_once, tmp_path, capsys):
    s = sorted_once
    folder = tmp_path / "dups"
    shutil.copytree(s["folder"], folder)
    names = sorted(s["truth"])
    shutil.copy(folder / names[0], folder / "exact_copy.png")
    with Image.open(folder / names[1]) as im:
        noisy = np.asarray(im.convert("L"), dtype=np.int16)
    noisy = noisy + np.random.default_rng(0).integers(-3, 4, noisy.shape)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / "resaved.png")
    out = tmp_path / "out"
    code, stdout, err = run(["duplicates", folder, out, "--store", s["store"], *FEATURES], capsys)
    assert code == 0, err
    near = list(csv.DictReader(open(out / "duplicates.csv", newline="")))
    groups = {}
    for r in near:
        groups.setdefault(r["group"], set()).add(r["path"])
    assert {names[0], "exact_copy.png"} in groups.values()
    assert {names[1], "resaved.png"} in groups.values()
    assert len(groups) == 2  # no false group among the distinct images
    identical = list(csv.DictReader(open(out / "identical.csv", newline="")))
    assert {r["path"] for r in identical} == {names[0], "exact_copy.png"}
    assert (out / "duplicates.html").is_file()
    assert "near-duplicate groups: 2" in stdout


def test_store_gc_forgets_deleted_folders(tmp_path, capsys):
    store = tmp_path / "store"
    gone = tmp_path / "gone"
    make_two_families(gone, n_per_family=2, seed=7)
    assert run(["embed", gone, "--store", store, *FEATURES], capsys)[0] == 0
    shutil.rmtree(gone)
    code, out, err = run(["store", "gc", "--dry-run", "--store", store], capsys)
    assert code == 0, err
    assert "would drop 0 rows" in out and str(gone) in out
    assert "--forget-gone` would free 4 rows" in out
    code, out, err = run(["store", "gc", "--forget-gone", "--store", store], capsys)
    assert code == 0 and "dropped 4 rows" in out
    code, out, err = run(["store", "gc", "--store", store], capsys)
    assert "dropped 0 rows" in out


def test_sort_says_how_many_groups_of_identical_images_it_saw(sorted_once, tmp_path, capsys):
    s = sorted_once
    folder = tmp_path / "with-copy"
    shutil.copytree(s["folder"], folder)
    shutil.copy(folder / sorted(s["truth"])[0], folder / "copy_of_first.png")
    code, out, err = run(
        [
            "sort",
            folder,
            tmp_path / "out",
            "-k",
            "2",
            "--no-report",
            "--store",
            s["store"],
            *FEATURES,
        ],
        capsys,
    )
    assert code == 0, err
    assert "(0 embedded," in out  # the copy is known by its content
    assert "identical images: 1 groups" in out  # from the content hashes, no search
    record = json.loads((tmp_path / "out" / "featclust.json").read_text())
    assert record["counts"]["identical_groups"] == 1
