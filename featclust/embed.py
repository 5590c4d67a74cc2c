"""Turning decoded images into feature vectors with VGG16.

This is the only module that imports TensorFlow and Keras, and it does so
lazily, when a model is first built.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from . import images
from .errors import UsageError, WeightsError

POOLINGS = ("avg", "max", "flatten")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
INPUT_SIZE = 224
#: Bumped whenever the features for the same pixels and settings change.
FEATURE_VERSION = 1
IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + IMAGENET_FILE
)
IMAGENET_HASH = "6d6bbae143d832006294945121d1f1fc"


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    return keras, tf


def keras_weights_path():
    """Where Keras keeps (and looks for) the downloaded ImageNet weights file."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / IMAGENET_FILE


def weights_identity(weights, seed=0):
    """A string that changes whenever the weights change.

    Parameters
    ----------
    weights : str
        ``"imagenet"``, ``"none"`` or a path to a weights file.
    seed : int
        Seed of the random weights (only used with ``"none"``).
    """
    if weights == "imagenet":
        return f"imagenet:{IMAGENET_FILE}:md5={IMAGENET_HASH}"
    if weights == "none":
        return f"random:he-uniform:seed={seed}"
    path = Path(weights)
    if not path.is_file():
        raise UsageError(
            f"weights={str(weights)!r} is neither 'imagenet', 'none' nor an existing weights file"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"file:sha256={digest.hexdigest()}"


def gpu_available():
    """Whether TensorFlow sees a GPU."""
    _, tf = _keras()
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(precision):
    """Turn ``"auto"`` into the precision the hardware runs fastest.

    ``auto`` is bfloat16 on a CPU with AMX or AVX512-BF16 and on a GPU of
    compute capability 8.0 or later, float32 elsewhere.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    _, tf = _keras()
    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if cc >= (8, 0):
            return "bfloat16"
    if gpu_available():
        return "float32"
    return "bfloat16" if _cpu_has_bf16() else "float32"


def _cpu_has_bf16():
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("amx_bf16", "avx512_bf16"))


class Embedder:
    """VGG16 without its top layers, pooled to one vector per image.

    Parameters
    ----------
    weights : str, default "imagenet"
        ``"imagenet"`` (Keras downloads the file once), ``"none"`` (random,
        seeded; for tests and offline trials) or a path to a ``.h5`` /
        ``.weights.h5`` file.
    pooling : {"avg", "max", "flatten"}, default "avg"
        How the 7x7x512 block5 output becomes a vector.
    precision : {"auto", "float32", "bfloat16", "float16"}, default "auto"
        Compute precision of the model; features are always stored as float32.
    batch_size : int, default 32
        Images per forward pass. The last batch is padded, so the compiled
        function never sees another shape.
    seed : int, default 0
        Seed of the random weights with ``weights="none"``.
    """

    def __init__(self, weights="imagenet", pooling="avg", precision="auto", batch_size=32,
                 seed=0):
        if pooling not in POOLINGS:
            raise UsageError(f"pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UsageError(f"batch_size={batch_size!r} must be a positive integer")
        self.weights = str(weights)
        self.pooling = pooling
        self.precision = precision
        self.batch_size = batch_size
        self.seed = seed
        self._identity = weights_identity(self.weights, seed)
        self._precision = None
        self._fn = None

    @property
    def dim(self):
        """Length of one feature vector."""
        return 7 * 7 * 512 if self.pooling == "flatten" else 512

    def settings(self):
        """Everything that determines the features, as a JSON-able dict."""
        if self._precision is None:
            self._precision = resolve_precision(self.precision)
        return {
            "model": "keras.applications.VGG16(include_top=False)",
            "weights": self._identity,
            "pooling": self.pooling,
            "input_size": INPUT_SIZE,
            "resample": "bilinear",
            "preprocess": f"gray->3ch,pad-white,vgg16.preprocess_input,decode-v{images.DECODE_VERSION}",
            "precision": self._precision,
            "feature_version": FEATURE_VERSION,
            "dim": self.dim,
        }

    def _build(self):
        keras, tf = _keras()
        precision = self.settings()["precision"]
        policy = {"float32": "float32", "bfloat16": "mixed_bfloat16",
                  "float16": "mixed_float16"}[precision]
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            model = self._load_model(keras)
        finally:
            keras.config.set_dtype_policy(previous)
        pooling = self.pooling
        preprocess = keras.applications.vgg16.preprocess_input

        def forward(gray):
            x = tf.cast(gray, tf.float32)
            x = preprocess(tf.repeat(x[..., None], 3, axis=-1))
            y = tf.cast(model(x, training=False), tf.float32)
            if pooling == "avg":
                return tf.reduce_mean(y, axis=[1, 2])
            if pooling == "max":
                return tf.reduce_max(y, axis=[1, 2])
            return tf.reshape(y, [tf.shape(y)[0], -1])

        spec = tf.TensorSpec([self.batch_size, INPUT_SIZE, INPUT_SIZE], tf.uint8)
        self._fn = tf.function(forward, input_signature=[spec])
        self._model = model

    def _load_model(self, keras):
        shape = (INPUT_SIZE, INPUT_SIZE, 3)
        if self.weights == "imagenet":
            try:
                return keras.applications.VGG16(include_top=False, weights="imagenet",
                                                input_shape=shape)
            except Exception as e:  # Keras raises a bare Exception on a failed download
                raise WeightsError(
                    f"cannot get the ImageNet weights of VGG16 ({_first_line(e)}). "
                    f"Keras expects the file {IMAGENET_FILE} at {keras_weights_path()}: "
                    f"download it from {IMAGENET_URL} on a machine with internet and put it "
                    f"there, or pass --weights PATH with a local weights file"
                ) from None
        model = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
        if self.weights == "none":
            _random_weights(model, self.seed)
            return model
        try:
            model.load_weights(self.weights)
        except Exception as e:  # h5py and Keras raise many types for a bad file
            raise WeightsError(
                f"cannot load weights file {self.weights!r} into VGG16 without top: "
                f"{_first_line(e)}"
            ) from None
        return model

    def embed(self, gray):
        """Features of a stack of decoded images.

        Parameters
        ----------
        gray : numpy.ndarray
            ``(n, 224, 224)`` uint8 array from :func:`featclust.images.decode`.

        Returns
        -------
        numpy.ndarray
            ``(n, dim)`` float32 features.
        """
        if self._fn is None:
            self._build()
        gray = np.asarray(gray, dtype=np.uint8)
        out = []
        for start in range(0, len(gray), self.batch_size):
            part = gray[start:start + self.batch_size]
            n = len(part)
            if n < self.batch_size:
                pad = np.full((self.batch_size - n,) + part.shape[1:], 255, np.uint8)
                part = np.concatenate([part, pad])
            out.append(self._fn(part).numpy()[:n])
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out)


def _random_weights(model, seed):
    """He-uniform kernels from numpy's seeded generator, zero biases.

    Independent of TensorFlow's random state, so the same seed gives the same
    weights everywhere.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        params = layer.get_weights()
        if len(params) != 2:
            continue
        kernel, bias = params
        fan_in = int(np.prod(kernel.shape[:-1]))
        limit = np.sqrt(6.0 / fan_in)
        layer.set_weights([rng.uniform(-limit, limit, kernel.shape).astype(np.float32),
                           np.zeros_like(bias)])


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def iter_features(files, embedder, workers=None, prefetch_batches=2):
    """Decode files in background threads and embed them batch by batch.

    Decoding of the next batches overlaps with the model's forward pass.

    Parameters
    ----------
    files : sequence of featclust.images.ImageFile
        Files to embed, in order.
    embedder : Embedder
    workers : int, optional
        Decoding threads; defaults to the number of CPUs.
    prefetch_batches : int
        How many batches to decode ahead of the model.

    Yields
    ------
    good : list of (ImageFile, str)
        The files of this batch that decoded, with their content hashes.
    features : numpy.ndarray
        ``(len(good), dim)`` float32.
    bad : list of featclust.images.BadFile
        Files of this batch that could not be used.
    """
    bs = embedder.batch_size
    workers = workers or os.cpu_count() or 1

    def work(f):
        try:
            pixels, digest = images.load(f, INPUT_SIZE)
            return f, digest, pixels, None
        except images.BadImageError as e:
            return f, None, None, str(e)

    with ThreadPoolExecutor(workers, thread_name_prefix="featclust-decode") as pool:
        pending = deque()
        it = iter(files)
        limit = bs * (prefetch_batches + 1)

        def fill():
            while len(pending) < limit:
                f = next(it, None)
                if f is None:
                    return
                pending.append(pool.submit(work, f))

        fill()
        while pending:
            good, stack, bad = [], [], []
            while pending and len(stack) < bs:
                f, digest, pixels, reason = pending.popleft().result()
                fill()
                if reason is None:
                    good.append((f, digest))
                    stack.append(pixels)
                else:
                    bad.append(images.BadFile(f.path, reason))
            feats = embedder.embed(np.stack(stack)) if stack else np.zeros((0, embedder.dim),
                                                                           np.float32)
            yield good, feats, bad
