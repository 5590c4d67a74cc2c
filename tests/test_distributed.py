"""Embedding on a Dask cluster: a real LocalCluster of two processes on loopback, the real model.

One cluster serves the module (starting one costs seconds); ``featclust embed
--dask local:2`` starts its own once, in a subprocess that also checks the
driver never imports TensorFlow.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_two_families, read_csv

from featclust.cli import main
from featclust.distributed import DaskError, check_dask, connect
from featclust.errors import UsageError
from featclust.pipeline import embed_folder

distributed = pytest.importorskip("distributed")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    path = tmp_path_factory.mktemp("dask-images")
    truth = make_two_families(path, n_per_family=12)  # 24 images
    (path / "zz_broken.png").write_bytes(b"not an image")  # last: batches as in one process
    return path, truth


@pytest.fixture(scope="module")
def client():
    import logging

    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def reference(images, embedder, tmp_path_factory):
    """The single-process run, the truth every Dask run is held to."""
    return embed_folder(
        images[0], embedder=embedder, store=tmp_path_factory.mktemp("ref-store"), progress=False
    )


def _chunk_hashes(store_root):
    out = []
    for meta in Path(store_root).glob("features-*/rows/chunk-*.json"):
        out.extend(json.loads(meta.read_text())["hashes"])
    return out


def _same(a, b):
    assert a.paths == b.paths
    assert [(x.path, x.reason) for x in a.bad_files] == [(x.path, x.reason) for x in b.bad_files]
    assert a.settings == b.settings and a.hashes == b.hashes
    assert np.abs(a.features - b.features).max() <= 1e-4


def test_embed_through_dask_equals_one_process(
    images, embedder, client, reference, tmp_path, monkeypatch
):
    # Several tasks per worker; a chunk of whole batches (of 8) makes the model see
    # the same batches as in one process (other batches differ by float32 round-off).
    monkeypatch.setenv("FEATCLUST_CHUNK_SIZE", "8")
    store = tmp_path / "store"
    emb = embed_folder(images[0], embedder=embedder, store=store, progress=False, dask=client)
    _same(emb, reference)
    assert emb.n_embedded == len(reference.paths)
    assert sorted(_chunk_hashes(store)) == sorted(set(reference.hashes))  # each row once
    assert (emb.store_path / "bad_files.csv").read_text() == (
        reference.store_path / "bad_files.csv"
    ).read_text()
    again = embed_folder(images[0], embedder=embedder, store=store, progress=False, dask=client)
    assert again.n_embedded == 0 and again.n_reused == len(reference.paths)


def test_a_killed_worker_changes_nothing(
    images, embedder, client, reference, tmp_path, monkeypatch
):
    """The first embedding task to start kills its worker process (os._exit) mid-task."""
    marker = tmp_path / "killed-once"

    def plugin_class(marker):
        class KillOnce(distributed.WorkerPlugin):
            name = "featclust-kill-once"

            def transition(self, key, start, finish, **kwargs):
                if finish == "executing" and str(key).startswith("featclust-embed"):
                    try:
                        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    except FileExistsError:
                        return
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    os._exit(1)

        return KillOnce()

    monkeypatch.setenv("FEATCLUST_CHUNK_SIZE", "8")
    client.register_plugin(plugin_class(str(marker)))
    try:
        store = tmp_path / "store"
        emb = embed_folder(images[0], embedder=embedder, store=store, progress=False, dask=client)
    finally:
        client.unregister_worker_plugin("featclust-kill-once")
    assert marker.exists()  # a worker did die
    _same(emb, reference)
    hashes = _chunk_hashes(store)
    assert sorted(hashes) == sorted(set(reference.hashes))  # every image exactly once
    client.wait_for_workers(2, timeout=60)


def test_sort_through_dask_gives_the_same_labels(images, client, tmp_path, capsys):
    common = ["-k", "2", "--weights", "none", "--batch-size", "8", "--no-report", "-q"]
    assert (
        main(
            [
                "sort",
                str(images[0]),
                str(tmp_path / "one"),
                "--store",
                str(tmp_path / "s1"),
                *common,
            ]
        )
        == 0
    )
    address = client.scheduler.address  # a running scheduler, by its address
    assert (
        main(
            [
                "sort",
                str(images[0]),
                str(tmp_path / "two"),
                "--store",
                str(tmp_path / "s2"),
                "--dask",
                address,
                "--fit-sample",
                "all",
                *common,
            ]
        )
        == 0
    ), capsys.readouterr()
    assert read_csv(tmp_path / "one" / "labels.csv") == read_csv(tmp_path / "two" / "labels.csv")
    assert (tmp_path / "one" / "bad_files.csv").read_text() == (
        tmp_path / "two" / "bad_files.csv"
    ).read_text()


def test_cli_embed_local_cluster_and_no_tensorflow_in_the_driver(images, reference, tmp_path):
    store = tmp_path / "store"
    code = (
        "import sys\nfrom featclust.cli import main\n"
        f"rc = main(['embed', {str(images[0])!r}, '--weights', 'none', '--batch-size', '8',"
        f" '--store', {str(store)!r}, '--dask', 'local:2', '-q'])\n"
        "assert rc == 0, rc\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "print('OK')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert "images: 24 (24 embedded, 0 reused), skipped: 1" in proc.stdout
    from featclust.store import FeatureStore

    with FeatureStore(images[0], reference.settings, store) as st:
        feats = st.load(reference.paths)
    assert np.abs(feats - reference.features).max() <= 1e-4


def test_without_dask_nothing_imports_it(images, tmp_path):
    code = (
        "import sys\nfrom featclust.pipeline import embed_folder\n"
        f"embed_folder({str(images[0])!r}, weights='none', batch_size=8, "
        f"store={str(tmp_path / 'st')!r}, progress=False)\n"
        "from featclust.cli import build_parser\nbuild_parser()\n"
        "assert not {'dask', 'distributed'} & set(sys.modules), 'dask imported'\n"
        "print('OK')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=240,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_clear_errors(capsys):
    for bad in ("local:0", "local:x", "", 3):
        with pytest.raises(UsageError):
            check_dask(bad)
    with connect(None) as c:
        assert c is None
    with pytest.raises(DaskError, match="cannot reach the Dask scheduler"):
        with connect("tcp://127.0.0.1:9"):
            pass
    assert main(["embed", ".", "--dask", "local:0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "local:N" in err


def test_missing_dask_says_how_to_install(tmp_path):
    code = (
        "import sys\nsys.modules['distributed'] = None\n"
        "from featclust.distributed import connect, DaskError\n"
        "try:\n    connect('local:1').__enter__()\nexcept DaskError as e:\n    print(e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert "pip install 'featclust[dask]'" in proc.stdout, proc.stderr


def test_a_worker_chunk_is_committed_only_when_whole(tmp_path):
    """A worker's .npy is committed only when it matches; uncommitted ones are removed."""
    from featclust import images as images_mod
    from featclust.store import FeatureStore, write_chunk_npy

    img = tmp_path / "img"
    img.mkdir()
    files = []
    for i in range(3):
        (img / f"{i}.png").write_bytes(b"x" * (i + 1))
        files.append(
            images_mod.ImageFile.from_stat(
                f"{i}.png", str(img / f"{i}.png"), os.stat(img / f"{i}.png")
            )
        )
    settings = {"dim": 4, "test": "worker chunks"}
    feats = np.arange(12, dtype=np.float32).reshape(3, 4)
    hashes = [f"{i:032x}" for i in range(3)]
    with FeatureStore(img, settings, tmp_path / "store") as st:
        cid, digest = write_chunk_npy(st.rows_dir, hashes, feats)
        assert cid == write_chunk_npy(st.rows_dir, hashes, feats)[0]  # idempotent
        npy = st.rows_dir / f"chunk-{cid}.npy"
        npy.write_bytes(npy.read_bytes()[:-8])  # half written
        assert not st.commit_written(cid, hashes, digest, list(zip(files, hashes)))
        assert len(st) == 0 and not list(st.rows_dir.glob("*.json"))
    with FeatureStore(img, settings, tmp_path / "store") as st:
        assert not npy.exists()  # an uncommitted .npy is a leftover
        cid, digest = write_chunk_npy(st.rows_dir, hashes, feats)
        assert st.commit_written(cid, hashes, digest, list(zip(files, hashes)))
        assert len(st) == 3
        assert np.array_equal(st.load([f.path for f in files]), feats)


def test_rows_are_labelled_as_dask_tasks_block_by_block(client, monkeypatch):
    from featclust import reduce
    from featclust.cluster import FeatureKMeans
    from featclust.distributed import labeller

    monkeypatch.setattr(reduce, "BLOCK_BYTES", 64 << 10)  # 32 rows of 512 float32 a block
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=5, size=(3, 512))
    X = (centres[rng.integers(0, 3, 600)] + rng.normal(size=(600, 512))).astype(np.float32)
    local = FeatureKMeans(n_clusters=3, fit_sample=200).fit(X)
    with distributed.get_task_stream(client) as stream:
        remote = FeatureKMeans(n_clusters=3, fit_sample=200).fit(X, labeller=labeller(client))
    tasks = [t for t in stream.data if t["key"].startswith("label_block")]
    assert len(tasks) == len(reduce.blocks(X)) > 10  # one task per block, on the workers
    assert np.array_equal(remote.labels_, local.labels_)
    assert np.allclose(remote.distances_, local.distances_)
