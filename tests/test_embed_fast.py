"""The embedder: batching, padding, decoding overlap, precision choice, preprocessing."""

import numpy as np
import pytest

from featclust import embed, images, samples


def test_cpu_bf16_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert not embed.cpu_has_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert embed.cpu_has_bf16(info)
    info.write_text("flags\t\t: fpu avx512_bf16\n")
    assert embed.cpu_has_bf16(info)
    assert not embed.cpu_has_bf16(tmp_path / "missing")


def test_auto_precision_follows_the_hardware():
    expected = ("bfloat16" if embed.cpu_has_bf16() else "float32") \
        if not embed.gpu_available() else None
    if expected is None:
        pytest.skip("a GPU is visible")
    assert embed.resolve_precision("auto") == expected
    assert embed.Embedder(weights="none").settings()["precision"] == expected
    assert embed.resolve_precision("bfloat16") == "bfloat16"
    with pytest.raises(embed.UsageError, match="precision='fp8'"):
        embed.Embedder(weights="none", precision="fp8")


def test_default_batch_size_depends_on_the_device():
    e = embed.Embedder(weights="none")
    expected = embed.GPU_BATCH_SIZE if embed.gpu_available() else embed.CPU_BATCH_SIZE
    assert e.batch == expected
    assert embed.Embedder(weights="none", batch_size=3).batch == 3
    with pytest.raises(embed.UsageError, match="batch_size=0"):
        embed.Embedder(weights="none", batch_size=0)


def test_iter_features_streams_batches_in_order(tmp_path, embedder):
    # 9 images and one broken file with batch size 8: two batches of 8 and 1
    # images, the second one padded; rows come back in file order, the bad
    # file reported.
    samples.make_image_set(tmp_path, n_per_family=3, families=("ring", "line", "grid"))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    files, _ = images.scan(tmp_path)
    assert len(files) == 10 and embedder.batch == 8
    batches = list(embed.iter_features(files, embedder, workers=2, prefetch_batches=1))
    assert [len(good) for good, _, _ in batches] == [8, 1]
    good = [g for batch in batches for g, _ in batch[0]]
    bad = [b for batch in batches for b in batch[2]]
    assert [f.path for f in good] == [f.path for f in files if f.path != "broken.png"]
    assert [b.path for b in bad] == ["broken.png"] and "not an image" in bad[0].reason
    feats = np.concatenate([batch[1] for batch in batches])
    assert feats.shape == (9, embedder.dim) and feats.dtype == np.float32

    # Rows do not depend on the batch they were in (the last batch was padded).
    gray = np.stack([images.load(f)[0] for f in good[7:]])
    np.testing.assert_allclose(embedder.embed(gray), feats[7:], rtol=1e-4, atol=1e-3)

    # The model's own preprocessing is keras' vgg16.preprocess_input on the
    # gray image repeated to three channels, as the feature settings say.
    import keras

    vgg = next(layer for layer in embedder.build().layers if isinstance(layer, keras.Model))
    x = keras.applications.vgg16.preprocess_input(
        np.repeat(gray[..., None].astype(np.float32), 3, axis=-1))
    maps = np.asarray(vgg.predict_on_batch(x), dtype=np.float32)
    pooled = {"avg": maps.mean(axis=(1, 2)), "max": maps.max(axis=(1, 2)),
              "flatten": maps.reshape(len(maps), -1)}
    np.testing.assert_allclose(feats[7:], pooled[embedder.pooling], rtol=1e-4, atol=1e-3)
