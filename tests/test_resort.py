"""A re-sort costs what the file system must do, and keeps every guarantee (issue 19).

Library calls on real files: a folder of 8 images, a store filled once by
the random-weights model, output folders in tmp folders.
"""

import json
import os
import shutil

import pytest
from conftest import make_two_families, read_csv

import featclust.output.sorted
import featclust.sort
from featclust import sort_folder


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resort-images")
    make_two_families(folder, n_per_family=4)
    return folder


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("resort-store")


def sort(images, out, store, embedder, k=2, **kwargs):
    kwargs.setdefault("report", False)
    return sort_folder(images, out, n_clusters=k, embedder=embedder, store=store, **kwargs)


def placed(out):
    """``{relative path: (inode, mtime_ns, is a link)}`` of every file in the cluster folders."""
    found = {}
    for p in out.glob("cluster_*/**/*"):
        if p.is_file() or p.is_symlink():
            st = os.lstat(p)
            found[p.relative_to(out).as_posix()] = (st.st_ino, st.st_mtime_ns, p.is_symlink())
    return found


def no_copies(monkeypatch):
    calls = []
    monkeypatch.setattr(featclust.sort.shutil, "copyfile", lambda *a, **k: calls.append(a))
    return calls


def test_resort_with_the_same_k_rewrites_no_image(images, store, embedder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = sort(images, out, store, embedder)
    before = placed(out)
    assert len(before) == 8 and set(before) == set(first.destinations)
    calls = no_copies(monkeypatch)
    again = sort(images, out, store, embedder)
    assert calls == []
    assert placed(out) == before  # the same files: same inode, same modification time
    assert again.destinations == first.destinations
    record = json.loads((out / "featclust.json").read_text())
    assert record["status"] == "complete"
    assert set(before) <= set(record["files"]) and set(before) <= set(record["stamps"])


@pytest.mark.parametrize("ks", [(2, 3), (3, 2)])
def test_resort_with_another_k_moves_the_images_it_holds_and_copies_none(
    ks, images, store, embedder, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    sort(images, out, store, embedder, k=ks[0])
    inode = {rel.split("/", 1)[1]: ino for rel, (ino, _, _) in placed(out).items()}
    calls = no_copies(monkeypatch)
    result = sort(images, out, store, embedder, k=ks[1])
    after = placed(out)
    rows = read_csv(out / "labels.csv")
    names = [featclust.sort.cluster_dir_name(k, ks[1]) for k in range(ks[1])]
    assert set(after) == {f"{names[int(r['cluster'])]}/{r['path']}" for r in rows}
    assert set(after) == set(result.destinations)
    assert calls == []  # every image moved or left in place, none copied again
    for rel, (ino, _, _) in after.items():
        assert ino == inode[rel.split("/", 1)[1]]
        assert (out / rel).read_bytes() == (images / rel.split("/", 1)[1]).read_bytes()
    record = json.loads((out / "featclust.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(record["files"]) | {"featclust.json"}
    assert set(record["sources"]) == set(after) and set(after) <= set(record["stamps"])
    assert sorted(p.name for p in out.glob("cluster_*")) == sorted(
        {rel.split("/")[0] for rel in after}
    )  # no folder left empty

    monkeypatch.undo()
    again = sort(images, out, store, embedder, k=ks[1])  # and the moved files are in place
    assert placed(out) == after and again.destinations == result.destinations


def test_an_image_touched_since_is_copied_again(images, store, embedder, tmp_path):
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    out = tmp_path / "out"
    sort(folder, out, store, embedder)
    name = sorted(os.listdir(folder))[0]
    st = os.stat(folder / name)
    os.utime(folder / name, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    before = placed(out)
    result = sort(folder, out, store, embedder)
    after = placed(out)
    (rel,) = [d for d in result.destinations if d.endswith("/" + name)]
    assert after[rel][1] == st.st_mtime_ns + 10**9  # a new copy, with the image's new time
    assert all(after[r] == before[r] for r in after if r != rel)


def test_links_are_kept_on_a_resort_and_copies_replaced_by_links(
    images, store, embedder, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    sort(images, out, store, embedder)
    sort(images, out, store, embedder, mode="symlink")
    links = placed(out)
    assert len(links) == 8 and all(is_link for _, _, is_link in links.values())
    for rel in links:
        assert os.readlink(out / rel) == os.path.abspath(images / rel.split("/", 1)[1])
    calls = no_copies(monkeypatch)
    sort(images, out, store, embedder, mode="symlink")
    assert placed(out) == links and calls == []


def test_an_interrupted_resort_is_finished_by_the_next_run(
    images, store, embedder, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    sort(images, out, store, embedder, k=2, mode="symlink")  # every file is made again
    real, done = shutil.copyfile, []

    def interrupted(src, dst, **kwargs):
        if len(done) == 1:
            with open(dst, "wb") as fh:
                fh.write(b"half")
            raise KeyboardInterrupt
        done.append(src)
        return real(src, dst, **kwargs)

    monkeypatch.setattr(featclust.sort.shutil, "copyfile", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sort(images, out, store, embedder, k=3)
    monkeypatch.undo()
    assert json.loads((out / "featclust.json").read_text())["status"] == "writing"
    assert not [p for p in out.rglob("*") if p.is_file() and p.read_bytes() == b"half"]
    result = sort(images, out, store, embedder, k=3)
    assert set(placed(out)) == set(result.destinations)
    for rel in result.destinations:
        assert (out / rel).read_bytes() == (images / rel.split("/", 1)[1]).read_bytes()
    assert json.loads((out / "featclust.json").read_text())["status"] == "complete"


def test_the_report_of_a_sort_gets_its_result_in_memory(
    images, store, embedder, tmp_path, monkeypatch
):
    def read_back(*args, **kwargs):
        raise AssertionError("the sort's report read labels.csv or model.npz back")

    monkeypatch.setattr(featclust.output.sorted, "read_labels_csv", read_back)
    monkeypatch.setattr(featclust.cluster.FeatureKMeans, "load", staticmethod(read_back))
    result = sort(images, tmp_path / "out", store, embedder, report=True, map_method="pca")
    assert result.report.index.is_file() and result.report.map_method == "pca"
    assert sum(len(m) for m in result.report.members.values()) == 8
