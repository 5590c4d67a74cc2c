"""Judging a sort, scanning k on real images, and assigning new images to a sorted folder.

One module-scoped sort of the session's ``two_families`` folder (8 "heavy"
and 8 "light" dot images, which random-weight features separate) serves
every test; all later runs reuse its stored features.
"""

import io
import json
import shutil

import numpy as np
import pytest
from conftest import read_csv, stripes
from conftest import run_cli as run

from featclust import ImageClusterer, ModelMismatchError, samples
from featclust.assign import embedder_for
from featclust.flags import FLAGS
from featclust.output import open_sorted

#: Random weights, block5 with average pooling: the settings that separate the
#: test images (see tests/conftest.py), as the session's ``embedder`` uses them.
FEATURES = ["--weights", "none", "--layer", "block5", "--pooling", "avg", "--batch-size", "8", "-q"]


@pytest.fixture(scope="module")
def sorted_out(two_families, tmp_path_factory):
    folder, truth = two_families
    base = tmp_path_factory.mktemp("assign")
    truth_csv = base / "truth.csv"
    samples.write_truth_csv(truth, truth_csv)
    out = base / "sorted"
    # The whole feature space (no PCA): on 16 images a PCA would keep every direction
    # the folder has and drop the ones a foreign image stands out in.
    code, stdout, stderr = run(
        "sort",
        folder,
        out,
        "-k",
        "2",
        "--no-report",
        "--truth",
        truth_csv,
        "--pca",
        "none",
        "--no-normalize",
        *FEATURES,
    )
    assert code == 0, stderr
    labels = {r["path"]: r for r in read_csv(out / "labels.csv")}
    return {
        "folder": folder,
        "truth": truth,
        "out": out,
        "stdout": stdout,
        "labels": labels,
        "base": base,
    }


@pytest.fixture
def no_embedding(monkeypatch):
    """Make any forward pass fail: what runs under it must come from the store."""

    def boom(self, gray):
        raise AssertionError("an image was embedded again")

    monkeypatch.setattr("featclust.embed.Embedder.embed_batch", boom)


def parse_assign(stdout):
    rows = list(__import__("csv").DictReader(io.StringIO(stdout)))
    assert rows and list(rows[0]) == ["path", "cluster", "distance", "outlier"]
    return rows


def test_sort_writes_sizes_scores_and_agreement_with_truth(sorted_out):
    out = sorted_out["out"]
    clusters = read_csv(out / "clusters.csv")
    assert [int(r["size"]) for r in clusters] == [8, 8]
    assert all(r["flags"] == "" for r in clusters)
    assert all(float(r["p95_distance"]) <= float(r["max_distance"]) for r in clusters)
    info = json.loads((out / "featclust.json").read_text())
    assert {"clusters.csv", "truth.csv"} <= set(info["files"])
    assert info["scores"]["k"] == 2
    assert info["scores"]["silhouette"] > 0.5
    assert info["scores"]["stability"] == pytest.approx(1.0)
    assert info["flags"] == {f: [] for f in FLAGS}
    assert info["truth"]["ari"] == pytest.approx(1.0)
    assert info["truth"]["nmi"] == pytest.approx(1.0)
    table = read_csv(out / "truth.csv")
    assert sorted(r["label"] for r in table) == ["heavy", "light", "total"]
    for r in table[:2]:
        assert sorted([r["cluster_0"], r["cluster_1"]]) == ["0", "8"]
    assert "adjusted Rand index 1.000, NMI 1.000 on 16 labelled images" in sorted_out["stdout"]
    assert "scores: silhouette" in sorted_out["stdout"]


def test_tiny_cluster_is_flagged_on_stderr(sorted_out, tmp_path):
    code, stdout, stderr = run(
        "sort", sorted_out["folder"], tmp_path / "out", "-k", "6", "--no-report", *FEATURES
    )
    assert code == 0, stderr
    info = json.loads((tmp_path / "out" / "featclust.json").read_text())
    sizes = info["counts"]["cluster_sizes"]
    tiny = [c for c, size in enumerate(sizes) if size < 3]
    assert tiny and info["flags"]["tiny"] == tiny
    assert f"warning: cluster {tiny[0]} is tiny" in stderr


def test_truth_that_names_no_image_is_refused_before_writing(sorted_out, tmp_path):
    wrong = tmp_path / "truth.csv"
    wrong.write_text("path,label\nnot_there.png,heavy\n")
    code, _, stderr = run(
        "sort",
        sorted_out["folder"],
        tmp_path / "out",
        "-k",
        "2",
        "--no-report",
        "--truth",
        wrong,
        *FEATURES,
    )
    assert code == 2
    assert "none of the 1 paths of the truth file" in stderr
    assert not (tmp_path / "out").exists()


def test_assign_puts_every_training_image_back_into_its_cluster(sorted_out, no_embedding):
    code, stdout, stderr = run("assign", sorted_out["out"], sorted_out["folder"])
    assert code == 0, stderr
    rows = parse_assign(stdout)
    labels = sorted_out["labels"]
    assert len(rows) == len(labels) == 16
    for r in rows:
        rel = r["path"][len(str(sorted_out["folder"])) + 1 :]
        assert r["cluster"] == labels[rel]["cluster"]
        assert float(r["distance"]) == pytest.approx(float(labels[rel]["distance"]), rel=1e-5)
    # By definition about 5% of members lie beyond the 95th percentile: at most one of 8.
    for c in ("0", "1"):
        assert sum(r["outlier"] == "true" for r in rows if r["cluster"] == c) <= 1
    one = sorted(labels)[3]
    code, stdout, _ = run("assign", sorted_out["out"], sorted_out["folder"] / one)
    assert code == 0
    (row,) = parse_assign(stdout)
    assert row["cluster"] == labels[one]["cluster"]


def test_foreign_image_is_an_outlier_and_is_cached(sorted_out, tmp_path, monkeypatch):
    new = tmp_path / "new"
    new.mkdir()
    stripes(new / "stripes.png")
    (new / "notes.txt").write_text("not an image")
    code, stdout, stderr = run("assign", sorted_out["out"], new / "stripes.png", new / "notes.txt")
    assert code == 0, stderr
    (row,) = parse_assign(stdout)
    assert row["path"].endswith("stripes.png") and row["outlier"] == "true"
    assert "skipped" in stderr and "notes.txt" in stderr
    import featclust.embed

    seen, real = [], featclust.embed.Embedder.embed_batch

    def recording(self, gray):
        seen.append(len(gray))
        return real(self, gray)

    monkeypatch.setattr("featclust.embed.Embedder.embed_batch", recording)
    code, again, stderr = run("assign", sorted_out["out"], new)
    assert code == 0, stderr
    assert parse_assign(again)[0]["distance"] == row["distance"]
    assert seen == []  # the image came from the store ...
    assert "notes.txt" in stderr  # ... and the text file was tried again, and skipped again


def test_estimator_predict_matches_the_sort(sorted_out, tmp_path, no_embedding):
    est = ImageClusterer.from_output(sorted_out["out"])
    assert (est.weights, est.layer, est.pooling, est.n_clusters) == ("none", "block5", "avg", 2)
    folder = sorted_out["folder"]
    paths = sorted(sorted_out["labels"])
    labels = est.predict([folder / p for p in paths])
    assert labels.tolist() == [int(sorted_out["labels"][p]["cluster"]) for p in paths]


@pytest.mark.parametrize(
    "option", [["--pooling", "max"], ["--layer", "block4"], ["--weights", "imagenet"]]
)
def test_assign_refuses_other_feature_settings(sorted_out, option):
    some = sorted_out["folder"] / sorted(sorted_out["labels"])[0]
    code, stdout, stderr = run("assign", sorted_out["out"], some, *option)
    assert code == 2 and stdout == ""
    assert "built with other feature settings" in stderr
    assert option[0].lstrip("-") in stderr
    assert "Traceback" not in stderr


def test_model_whose_weights_file_is_gone_or_changed_is_refused(sorted_out, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("featclust.json", "model.npz"):
        shutil.copy(sorted_out["out"] / name, copy / name)
    info = json.loads((copy / "featclust.json").read_text())
    info["embedder"]["weights"] = str(tmp_path / "gone.weights.h5")
    info["feature_settings"]["weights"] = "file:sha256=" + "0" * 64
    (copy / "featclust.json").write_text(json.dumps(info))
    with pytest.raises(ModelMismatchError, match="cannot be used now"):
        embedder_for(open_sorted(copy))
    changed = tmp_path / "w.weights.h5"
    changed.write_bytes(b"other bytes")
    info["embedder"]["weights"] = str(changed)
    (copy / "featclust.json").write_text(json.dumps(info))
    with pytest.raises(ModelMismatchError, match="weights: 'file:sha256=0000"):
        embedder_for(open_sorted(copy))


def test_assign_needs_a_sorted_folder(sorted_out, tmp_path):
    code, _, stderr = run("assign", sorted_out["folder"], tmp_path)
    assert code == 2 and "is not a featclust output folder" in stderr
    code, _, stderr = run("assign", sorted_out["out"], tmp_path / "missing.png")
    assert code == 2 and "neither an image file nor a folder" in stderr


def test_scan_k_on_real_images_suggests_the_two_groups(sorted_out, tmp_path, no_embedding):
    folder, out = sorted_out["folder"], sorted_out["out"]
    code, stdout, stderr = run(
        "scan-k", folder, "--k", "2:6", "--out", tmp_path / "scan", *FEATURES
    )
    assert code == 0, stderr
    table = [line for line in stdout.splitlines() if line.strip()[:1].isdigit()]
    assert [line.split()[0] for line in table] == ["2", "3", "4", "5", "6"]
    assert [line.split()[0] for line in table if "<- suggested" in line] == ["2"]
    assert "suggested k: 2 (" in stdout
    rows = read_csv(tmp_path / "scan" / "kscan.csv")
    assert [r["suggested"] for r in rows] == ["1", "0", "0", "0", "0"]
    assert (tmp_path / "scan" / "kscan.png").read_bytes()[:4] == b"\x89PNG"

    # Into the sorted folder: recorded in its marker, which stays complete.
    code, _, stderr = run("scan-k", folder, "--k", "2:3", "--out", out, *FEATURES)
    assert code == 0, stderr
    info = json.loads((out / "featclust.json").read_text())
    assert info["status"] == "complete" and info["kscan"]["suggested_k"] == 2
    assert {"kscan.csv", "kscan.png", "labels.csv"} <= set(info["files"])

    code, stdout, stderr = run(
        "sort", folder, tmp_path / "auto", "-k", "auto", "--no-report", *FEATURES
    )
    assert code == 0, stderr
    assert "k = 2, suggested by the k scan" in stdout
    assert len(read_csv(tmp_path / "auto" / "kscan.csv")) == 14  # k = 2..15 for 16 images
    info = json.loads((tmp_path / "auto" / "featclust.json").read_text())
    assert info["clustering"]["n_clusters"] == 2 and info["kscan"]["suggested_k"] == 2


def test_scan_k_refuses_a_bad_range_and_a_foreign_out_folder(sorted_out, tmp_path):
    code, _, stderr = run("scan-k", sorted_out["folder"], "--k", "5:2", *FEATURES)
    assert code == 2 and "k range '5:2'" in stderr
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "kscan.csv").write_text("precious")
    code, _, stderr = run("scan-k", sorted_out["folder"], "--out", foreign, *FEATURES)
    assert code == 2 and "not a featclust output" in stderr
    assert (foreign / "kscan.csv").read_text() == "precious"


def test_estimator_with_auto_k_assigns_through_the_store(sorted_out, no_embedding):
    folder = sorted_out["folder"]
    est = ImageClusterer(
        n_clusters="auto", weights="none", layer="block5", pooling="avg", batch_size=8
    ).fit(folder)
    assert est.kscan_.suggested_k_ == 2 and est.model_.n_clusters == 2
    got = est.assign([folder])
    assert [p[len(str(folder)) + 1 :] for p in got.paths] == est.paths_
    assert got.labels.tolist() == est.labels_.tolist()
    assert np.allclose(got.distances, est.distances_)
    assert got.outliers.sum() <= 2


def test_estimator_takes_a_folder_a_single_path_or_a_list(sorted_out, no_embedding):
    folder = sorted_out["folder"]
    names = sorted(sorted_out["labels"])
    est = ImageClusterer(
        n_clusters=2, weights="none", layer="block5", pooling="avg", batch_size=8
    ).fit(folder)
    sorted_labels = [int(sorted_out["labels"][p]["cluster"]) for p in names]
    assert est.labels_.tolist() == [sorted_labels[names.index(p)] for p in est.paths_]
    one = folder / names[0]
    # A single path is one image, not a list of characters.
    assert est.predict(one).tolist() == [sorted_labels[0]]
    assert est.predict(str(one)).tolist() == [sorted_labels[0]]
    assert est.transform(one).shape == (1, est.features_.shape[1])
    mixed = est.assign([folder / names[1], folder])  # an image met twice is listed once
    order = [names[1]] + names[:1] + names[2:]
    assert [p.rsplit("/", 1)[-1] for p in mixed.paths] == order
    assert mixed.labels.tolist() == [sorted_labels[names.index(p)] for p in order]
    # fit on a list of files gives the same clusters as on the folder
    again = ImageClusterer(
        n_clusters=2, weights="none", layer="block5", pooling="avg", batch_size=8
    ).fit([folder / p for p in names])
    assert again.labels_.tolist() == sorted_labels


def test_sorted_folder_opens_through_the_output_module(sorted_out, tmp_path):
    from featclust.errors import OutputFormatError

    folder = open_sorted(sorted_out["out"])
    paths, labels, distances = folder.labels()
    assert sorted(paths) == sorted(sorted_out["labels"])
    assert folder.n_clusters == 2 and folder.model.n_clusters == 2
    assert folder.record.embedder["layer"] == "block5"  # no silent fallback to a default
    copy = tmp_path / "copy"
    shutil.copytree(sorted_out["out"], copy)
    info = json.loads((copy / "featclust.json").read_text())
    info["featclust_output"] = 99
    (copy / "featclust.json").write_text(json.dumps(info))
    with pytest.raises(OutputFormatError, match="format version 99"):
        open_sorted(copy)
    code, _, stderr = run("assign", copy, sorted_out["folder"] / paths[0])
    assert code == 2 and "format version 99" in stderr and "Traceback" not in stderr
