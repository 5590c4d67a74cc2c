"""The embedder: batching, padding, decoding overlap, precision choice, preprocessing."""

import inspect
import sys

import numpy as np
import pytest

from featclust import device, embed, images, samples
from featclust.decoding import iter_decoded, iter_features
from featclust.embed import Embedder


def test_cpu_bf16_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert not device.cpu_has_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    assert device.cpu_has_bf16(info)
    info.write_text("flags\t\t: fpu avx512_bf16\n")
    assert device.cpu_has_bf16(info)
    assert not device.cpu_has_bf16(tmp_path / "missing")


def test_auto_precision_follows_the_hardware():
    expected = (
        ("bfloat16" if device.cpu_has_bf16() else "float32") if not device.gpu_available() else None
    )
    if expected is None:
        pytest.skip("a GPU is visible")
    assert device.resolve_precision("auto") == expected
    assert embed.Embedder(weights="none").settings()["precision"] == expected
    assert device.resolve_precision("bfloat16") == "bfloat16"
    with pytest.raises(embed.UsageError, match="precision='fp8'"):
        embed.Embedder(weights="none", precision="fp8")


def test_default_batch_size_depends_on_the_device():
    e = embed.Embedder(weights="none")
    expected = embed.GPU_BATCH_SIZE if device.gpu_available() else embed.CPU_BATCH_SIZE
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
    batches = list(iter_features(files, embedder, workers=2, prefetch_batches=1))
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
        np.repeat(gray[..., None].astype(np.float32), 3, axis=-1)
    )
    outputs = vgg.predict_on_batch(x)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    parts = []
    for maps in outputs:  # each block pooled; several blocks each L2-normalised, then joined
        maps = np.asarray(maps, dtype=np.float32)
        v = {
            "avg": maps.mean(axis=(1, 2)),
            "max": maps.max(axis=(1, 2)),
            "flatten": maps.reshape(len(maps), -1),
        }[embedder.pooling]
        parts.append(v / np.linalg.norm(v, axis=1, keepdims=True) if len(outputs) > 1 else v)
    whole = np.concatenate(parts, axis=1)
    if embedder.grid > 1:  # the whole map first, L2-normalised (the cells: test_embed_grid)
        whole = whole / np.linalg.norm(whole, axis=1, keepdims=True)
    np.testing.assert_allclose(feats[7:, : whole.shape[1]], whole, rtol=1e-4, atol=1e-3)


def test_get_params_are_the_constructor_parameters():
    e = Embedder(
        weights="none",
        pooling="gem",
        precision="float32",
        batch_size=4,
        seed=3,
        jit_compile=False,
        layer="block3",
        tta=True,
        grid=1,
        grid_weight=1.0,
    )
    params = e.get_params()
    assert list(params) == list(inspect.signature(Embedder).parameters)
    assert params == {
        "weights": "none",
        "pooling": "gem",
        "precision": "float32",
        "batch_size": 4,
        "seed": 3,
        "jit_compile": False,
        "layer": "block3",
        "tta": True,
        "grid": 1,
        "grid_weight": 1.0,
    }
    again = Embedder.from_params(params)
    assert again.get_params() == params and again.settings() == e.settings()
    # The defaults round-trip too (weights is kept as the string given).
    assert (
        Embedder.from_params(Embedder(weights="none").get_params()).settings()
        == Embedder(weights="none").settings()
    )


def test_from_params_overrides_and_ignores_unknown_keys():
    saved = {
        **Embedder(weights="none", pooling="avg", batch_size=4).get_params(),
        "from_a_newer_version": 1,
    }
    e = Embedder.from_params(saved, pooling="max", batch_size=None, layer=None, unknown=5)
    assert e.pooling == "max"  # overridden
    assert e.batch_size == 4 and e.layer == saved["layer"]  # None keeps the saved value
    with pytest.raises(embed.UsageError, match="pooling='median'"):
        Embedder.from_params(saved, pooling="median")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"pooling": "sum"}, "pooling='sum'"),
        ({"layer": "block1"}, "layer='block1'"),
        ({"tta": 1}, "tta=1"),
        ({"seed": -1}, "seed=-1"),
        ({"jit_compile": "yes"}, "jit_compile='yes'"),
    ],
)
def test_embedder_errors_name_parameter_and_value(params, message):
    with pytest.raises(embed.UsageError, match=message):
        Embedder(weights="none", **params)


def test_device_and_decoding_do_not_import_keras():
    import subprocess

    code = (
        "import sys, featclust.device, featclust.decoding, featclust.embed; "
        "print(any(m in sys.modules for m in ('keras', 'tensorflow')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_iter_decoded_counts_only_good_images_per_batch(tmp_path):
    samples.make_image_set(tmp_path, n_per_family=2, families=("ring", "line"))
    (tmp_path / "img_00000b.png").write_bytes(b"not an image")
    files, _ = images.scan(tmp_path)
    batches = list(iter_decoded(files, 2, size=32, workers=2, prefetch_batches=0))
    assert [len(good) for good, _, _ in batches] == [2, 2]
    assert [len(bad) for _, _, bad in batches] == [1, 0]
    assert all(
        pixels.shape == (len(good), 32, 32) and pixels.dtype == np.uint8
        for good, pixels, _ in batches
    )
    good = [f for batch in batches for f, _ in batch[0]]
    np.testing.assert_array_equal(batches[1][1][0], images.load(good[2], 32)[0])


def test_thumbnail_is_decoded_like_the_model_input_but_in_colour(tmp_path):
    from PIL import Image

    # Wide, transparent, red: shrunk with its aspect ratio, transparency on white.
    rgba = Image.new("RGBA", (200, 100), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 100, 100))
    rgba.save(tmp_path / "rgba.png")
    thumb = images.thumbnail(tmp_path / "rgba.png", 50)
    assert thumb.mode == "RGB" and thumb.size == (50, 25)
    assert thumb.getpixel((5, 12)) == (255, 255, 255)
    assert thumb.getpixel((45, 12)) == (255, 0, 0)

    # 16-bit gray is scaled by its range, not clamped to white.
    Image.fromarray(np.array([[1000, 2000], [3000, 4000]], np.uint16)).save(tmp_path / "w.png")
    thumb = images.thumbnail(tmp_path / "w.png", 8)
    assert thumb.size == (2, 2)  # never enlarged
    assert thumb.getpixel((0, 0)) == (0, 0, 0) and thumb.getpixel((1, 1)) == (255, 255, 255)

    # EXIF orientation 6 (rotate 90 degrees clockwise to show): tall when shown.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), (0, 0, 255)).save(tmp_path / "rot.jpg", exif=exif)
    assert images.thumbnail(tmp_path / "rot.jpg", 20).size == (10, 20)

    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(images.BadImageError, match="not an image"):
        images.thumbnail(tmp_path / "broken.png", 20)
    with pytest.raises(images.BadImageError, match="cannot read"):
        images.thumbnail(tmp_path / "missing.png", 20)
