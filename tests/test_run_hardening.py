"""Issue 21, "folders that move or contain each other" (cases 7, 9, 10, 11) and the
notebook's progress bars and Dask's threads (case 16).

Jobs run with a stand-in embedder (features from pixel statistics): what is tested is
what happens to folders and files, not the features.
"""

import io
import json
import os
import shutil

import numpy as np
import pytest
from conftest import read_csv, run_cli
from PIL import Image, ImageDraw

import featclust
from featclust import images
from featclust.cluster import FeatureKMeans
from featclust.errors import ModelMismatchError, NoImagesError
from featclust.output import open_sorted


class StandIn:
    """Features from a few pixel statistics; the parameters of a real embedder."""

    batch_size = batch = 2
    dim = 3
    precision = "float32"

    def __init__(self, pooling="max"):
        self.pooling = pooling

    def get_params(self):
        return {"weights": "none", "pooling": self.pooling, "layer": "block4+block5"}

    def settings(self):
        return {"model": "stand-in", "pooling": self.pooling, "dim": self.dim}

    def embed(self, gray):
        g = gray.reshape(len(gray), -1).astype(np.float32) / 255
        return np.stack([g.mean(1), g.std(1), g[:, :2000].mean(1)], axis=1)

    embed_batch = embed


def dots(folder, n, seed=0):
    """``n`` images of two kinds (few and many dots) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        im = Image.new("L", (64, 64), 255)
        draw = ImageDraw.Draw(im)
        for x, y in rng.uniform(8, 56, (4 if i % 2 else 30, 2)):
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=0)
        im.save(folder / f"img_{i:03d}.png")
    return folder


def sort(image_dir, out, **kw):
    kw.setdefault("n_clusters", 2)
    kw.setdefault("report", False)
    kw.setdefault("progress", False)
    return featclust.sort_folder(image_dir, out, embedder=kw.pop("embedder", StandIn()), **kw)


# -- 7 ----------------------------------------------------------------------------------------


class RenameOnFirstUpdate:
    """A progress factory whose embedding bar renames the image folder at its first update."""

    def __init__(self, folder):
        self.folder, self.renamed = folder, None

    def __call__(self, description, total, unit="img"):
        outer = self

        class Bar:
            def update(self, n):
                if description == "embedding" and outer.renamed is None:
                    outer.renamed = outer.folder.with_name(outer.folder.name + "-2024")
                    os.rename(outer.folder, outer.renamed)

            def close(self):
                pass

        return Bar()


def test_case_7_image_folder_renamed_during_sort_is_an_error_not_a_complete_sort(tmp_path):
    img = dots(tmp_path / "photos", 40)
    out = tmp_path / "out"
    progress = RenameOnFirstUpdate(img)
    with pytest.raises(NoImagesError) as err:
        sort(img, out, progress=progress, store=tmp_path / "store")
    assert progress.renamed is not None and not img.exists()
    message = str(err.value)
    assert "renamed, moved or removed" in message and "photos" in message
    assert "\n" not in message and err.value.exit_code != 0
    # nothing that says a sort happened
    assert not (out / "labels.csv").exists()
    assert not list(out.glob("cluster_*"))
    if (out / "featclust.json").exists():
        assert json.loads((out / "featclust.json").read_text())["status"] != "complete"
    # the renamed folder sorts completely, and the images were never touched
    os.rename(progress.renamed, img)
    done = sort(img, out, store=tmp_path / "store")
    assert len(done.embed.paths) == 40 and not done.embed.bad_files
    assert len(read_csv(out / "labels.csv")) == 40


def test_case_7_image_folder_removed_while_copying_is_an_error(tmp_path, monkeypatch):
    img = dots(tmp_path / "photos", 10)
    out = tmp_path / "out"
    moved = tmp_path / "elsewhere"
    real_make = featclust.sort._make

    def make_then_move(src, dst, mode):
        made = real_make(src, dst, mode)
        if not moved.exists():
            os.rename(img, moved)
        return made

    monkeypatch.setattr(featclust.sort, "_make", make_then_move)
    code, _, err = run_cli_sort(monkeypatch, img, out, tmp_path / "store")
    assert code != 0 and "renamed, moved or removed" in err and len(err.splitlines()) == 1
    assert json.loads((out / "featclust.json").read_text())["status"] != "complete"
    assert not (out / "labels.csv").exists()


def run_cli_sort(monkeypatch, img, out, store, *extra):
    """``featclust sort`` through the CLI with the stand-in embedder."""
    monkeypatch.setattr("featclust.cli.Embedder", lambda **kw: StandIn())
    return run_cli("sort", img, out, "-k", "2", "--store", store, "--no-report", "-q", *extra)


# -- 9 ----------------------------------------------------------------------------------------


def test_case_9_a_sorted_folder_as_input_leaves_out_featclusts_own_files(tmp_path):
    img = dots(tmp_path / "in", 12)
    out, out2 = tmp_path / "out", tmp_path / "out2"
    first = sort(img, out, report=False, store=tmp_path / "store")
    # what a sort with a report and a k scan leaves beside the cluster folders
    (out / "report" / "montages").mkdir(parents=True)
    shutil.copy(img / "img_000.png", out / "report" / "montages" / "cluster_00.png")
    shutil.copy(img / "img_001.png", out / "kscan.png")
    files, problems = images.scan(out)
    placed = sorted(first.destinations)
    assert [f.path for f in files] == placed and not problems
    second = sort(out, out2, store=tmp_path / "store")
    assert sorted(second.embed.paths) == placed
    assert not [p for p in second.embed.paths if not p.startswith("cluster_")]
    assert not second.embed.bad_files  # labels.csv, model.npz ... are not even candidates


def test_case_9_an_output_inside_an_image_folder_is_still_skipped_whole(tmp_path):
    img = dots(tmp_path / "in", 6)
    sort(img, tmp_path / "out", store=tmp_path / "store")
    parent = tmp_path
    files, _ = images.scan(parent, exclude=[tmp_path / "store"])
    assert sorted(f.path for f in files) == [f"in/img_{i:03d}.png" for i in range(6)]


# -- 10 ---------------------------------------------------------------------------------------


def test_case_10_a_model_of_other_feature_settings_is_refused_in_one_line(tmp_path):
    img = dots(tmp_path / "in", 10)
    out, other = tmp_path / "out", tmp_path / "other"
    sort(img, out, embedder=StandIn("max"), store=tmp_path / "store")
    sort(img, other, embedder=StandIn("avg"), store=tmp_path / "store")
    shutil.copy(other / "model.npz", out / "model.npz")  # an avg-pooling model, same shapes
    with pytest.raises(ModelMismatchError) as err:
        _ = open_sorted(out).model
    message = str(err.value)
    assert "\n" not in message and "model.npz" in message
    assert "pooling: 'avg' (model file) vs 'max' (here)" in message
    # through the CLI (the report reads the stored features and the model): exit 2, one line
    code, _, stderr = run_cli("report", out)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "'avg' (model file) vs 'max'" in stderr
    # in its own folder the same file loads
    assert open_sorted(other).model.n_clusters == 2


def test_case_10_feature_kmeans_load_checks_the_settings_it_is_given(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    model = FeatureKMeans(n_clusters=2, pca=None, random_state=0).fit(X)
    block5 = {"layer": "block5_pool", "pooling": "max", "dim": 8}
    model.save(tmp_path / "with.npz", extra={"feature_settings": block5})
    model.save(tmp_path / "without.npz")
    default = {"layer": "block4_pool+block5_pool", "pooling": "max", "dim": 1024}
    with pytest.raises(ModelMismatchError, match="layer: 'block5_pool' .* 'block4_pool"):
        FeatureKMeans.load(tmp_path / "with.npz", feature_settings=default)
    with pytest.raises(ModelMismatchError, match="length 8 \\(model file\\) vs 1024"):
        FeatureKMeans.load(tmp_path / "without.npz", feature_settings=default)
    loaded, extra = FeatureKMeans.load(tmp_path / "with.npz", feature_settings=block5)
    assert extra["feature_settings"] == block5 and loaded.n_features_in_ == 8
    FeatureKMeans.load(tmp_path / "without.npz", feature_settings={**default, "dim": 8})


# -- 11 ---------------------------------------------------------------------------------------


def test_case_11_hardlink_then_edited_original_then_resort_replaces_the_link(tmp_path):
    img = dots(tmp_path / "in", 10)
    out = tmp_path / "out"
    first = sort(img, out, mode="hardlink", store=tmp_path / "store")
    original = img / "img_003.png"
    placed = out / next(d for d in first.destinations if d.endswith("/img_003.png"))
    assert os.stat(placed).st_ino == os.stat(original).st_ino
    # the user edits the original in place (same file, new content)
    inode = os.stat(original).st_ino
    buf = io.BytesIO()
    Image.new("L", (64, 64), 0).save(buf, format="PNG")
    with open(original, "r+b") as fh:
        fh.write(buf.getvalue())
        fh.truncate()
    edited = original.read_bytes()
    assert os.stat(original).st_ino == inode
    again = sort(img, out, mode="hardlink", store=tmp_path / "store")
    # the user's content is untouched, and the sorted folder shows it through a new link
    assert original.read_bytes() == edited and os.stat(original).st_ino == inode
    now = out / next(d for d in again.destinations if d.endswith("/img_003.png"))
    assert now.read_bytes() == edited and os.stat(now).st_ino == inode
    assert not again.kept
    record = json.loads((out / "featclust.json").read_text())
    assert record["status"] == "complete"
    assert len(read_csv(out / "labels.csv")) == 10
    # and a third run finds every link in place
    third = sort(img, out, mode="hardlink", store=tmp_path / "store")
    assert not third.kept
    assert open_sorted(out).record.status == "complete"


def test_case_11_a_replaced_file_in_the_output_is_still_kept(tmp_path):
    img = dots(tmp_path / "in", 6)
    out = tmp_path / "out"
    first = sort(img, out, mode="hardlink", store=tmp_path / "store")
    placed = out / first.destinations[0]
    placed.unlink()
    placed.write_bytes(b"my own notes, not an image of the folder")
    from featclust.errors import UnsafeOutputError

    with pytest.raises(UnsafeOutputError, match="changed since featclust wrote it"):
        sort(img, out, mode="hardlink", store=tmp_path / "store")
    assert placed.read_bytes() == b"my own notes, not an image of the folder"


def test_case_9_the_scan_leaves_out_the_folder_the_report_is_written_to():
    from featclust.report.page import REPORT_DIR

    assert images.OUTPUT_REPORT_DIR == REPORT_DIR


# -- 16: Dask local:N -------------------------------------------------------------------------


def test_case_16_dask_local_workers_share_the_cpus_out():
    pytest.importorskip("distributed")
    from featclust.device import cpu_count
    from featclust.distributed import connect
    from featclust.embed import Embedder

    params = Embedder(weights="none", batch_size=2).get_params()

    def on_worker():
        import tensorflow as tf

        from featclust.distributed import worker_embedder

        worker_embedder(params).build()  # TensorFlow starts: its threads are fixed now
        return tf.config.threading.get_intra_op_parallelism_threads()

    with connect("local:2") as client:
        found = client.run(on_worker)
    share = max(1, cpu_count() // 2)
    assert len(found) == 2
    assert all(got == share for got in found.values()), found
