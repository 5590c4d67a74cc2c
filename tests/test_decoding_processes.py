"""Decoding in worker processes gives exactly what decoding in threads gives (issue 15)."""

import numpy as np
import pytest

from featclust import decoding, images, samples
from featclust.decoding import choose_decoder, iter_decoded


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decode")
    samples.make_image_set(folder, n_per_family=4, families=("ring", "line", "grid"))
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "empty.png").write_bytes(b"")
    return folder


def _collect(files, **kwargs):
    batches = list(iter_decoded(files, 5, **kwargs))
    good = [(f.path, d) for g, _, _ in batches for f, d in g]
    pixels = np.concatenate([p for _, p, _ in batches])
    bad = [(b.path, b.reason) for _, _, bb in batches for b in bb]
    return [len(g) for g, _, _ in batches], good, pixels, bad


def test_processes_give_the_same_batches_as_threads(folder, monkeypatch):
    monkeypatch.setattr(decoding, "PROCESS_CHUNK", 3)  # chunks across batch borders
    files, _ = images.scan(folder)
    assert len(files) == 14
    threads = _collect(files, workers=2, decoder="threads")
    processes = _collect(files, workers=2, decoder="processes")
    assert threads[0] == processes[0] == [5, 5, 2]
    assert threads[1] == processes[1]
    np.testing.assert_array_equal(threads[2], processes[2])
    assert threads[3] == processes[3]
    assert sorted(p for p, _ in processes[3]) == ["broken.png", "empty.png"]


def test_a_consumer_that_stops_early_does_not_hang(folder):
    files, _ = images.scan(folder)
    it = iter_decoded(files, 2, workers=2, prefetch_batches=0, decoder="processes")
    _, pixels, _ = next(it)
    assert pixels.shape[0] == 2
    it.close()


def test_auto_decodes_in_processes_only_where_the_model_outruns_decoding(monkeypatch):
    monkeypatch.setattr(decoding, "cpu_count", lambda: 16)
    assert choose_decoder("auto", 100_000, model_on_gpu=True) == "processes"
    assert choose_decoder("auto", None, model_on_gpu=True) == "processes"
    assert choose_decoder("auto", 100_000, model_on_gpu=False) == "threads"
    assert choose_decoder("auto", 50, model_on_gpu=True) == "threads"  # start-up not worth it
    monkeypatch.setattr(decoding, "cpu_count", lambda: 2)
    assert choose_decoder("auto", 100_000, model_on_gpu=True) == "threads"
    assert choose_decoder("processes", 5) == "processes"
    with pytest.raises(decoding.images.FeatclustError, match="decoder='gpu'"):
        choose_decoder("gpu")
