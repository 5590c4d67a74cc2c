"""Turning decoded images into feature vectors with VGG16.

This is the only module that imports TensorFlow and Keras, and it does so
lazily, when a model is first built (or :mod:`featclust.device` asks the
backend about a GPU, which it does only where the device files say one may
exist). The runtime's start-up log lines are kept off the terminal
(:func:`featclust.device.quiet_native_stderr`). The whole path from the uint8 grayscale batch to the
pooled vector is one Keras model, run as a compiled predict step on
fixed-size batches, so it runs on any Keras backend: TensorFlow by default,
JAX with ``KERAS_BACKEND=jax``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from . import images
from .checks import check_bool, check_choice, check_float, check_int
from .device import PRECISIONS, gpu_available, load_keras, resolve_precision
from .errors import UsageError, WeightsError
from .pooling import GEM_P, GRIDS, LAYERS, POOLINGS, combine, layer_blocks, levels, pool_grid

INPUT_SIZE = images.INPUT_SIZE
#: Bumped whenever the features for the same pixels and settings change.
FEATURE_VERSION = 1
IMAGENET_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + IMAGENET_FILE
IMAGENET_HASH = "6d6bbae143d832006294945121d1f1fc"
#: ImageNet channel means of ``vgg16.preprocess_input`` (BGR order; the input
#: is gray, so the channel order does not matter).
VGG_MEAN_BGR = (103.939, 116.779, 123.68)
#: Default images per forward pass on a CPU and on a GPU.
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 256
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def keras_weights_path() -> Path:
    """Where Keras keeps (and looks for) the downloaded ImageNet weights file."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / IMAGENET_FILE


def weights_identity(weights: str | os.PathLike, seed: int = 0) -> str:
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


class Embedder:
    """VGG16 without its top layers, pooled to one vector per image.

    Parameters
    ----------
    weights : str, default "imagenet"
        ``"imagenet"`` (Keras downloads the file once), ``"none"`` (random,
        seeded; for tests and offline trials) or a path to a ``.h5`` /
        ``.weights.h5`` file.
    pooling : {"avg", "max", "gem", "flatten"}, default "max"
        How the feature map becomes a vector: its mean, its maximum, its
        generalised mean ``mean(x ** 3) ** (1/3)`` or all of it.
    precision : {"auto", "float32", "bfloat16", "float16"}, default "auto"
        Compute precision of the model; features are always stored as float32.
    batch_size : int or None, default None
        Images per forward pass; ``None`` is 16 on a CPU and 256 on a GPU.
        A smaller batch (the last one) is padded to the next power of two
        (or to ``batch_size``), so the compiled step sees only a few shapes
        and two images cost two images' work, not a full batch's.
    seed : int, default 0
        Seed of the random weights with ``weights="none"``.
    jit_compile : bool or None, default None
        Compile the model with XLA; ``None`` does so on a GPU only (on a CPU,
        TensorFlow's oneDNN kernels are faster than XLA's). The JAX backend
        always compiles.
    layer : str, default "block4"
        The VGG16 block whose pooled output (``"block3"`` 28x28x256,
        ``"block4"`` 14x14x512, ``"block5"`` 7x7x512) is the feature map,
        or several joined by ``+`` (``"block4+block5"``): each block is
        pooled, L2-normalised and the vectors concatenated. The blocks after
        the last one are not run.
    tta : bool, default False
        Test-time augmentation: the features are the mean over the 8 flips
        and 90-degree rotations of the image (8 forward passes), so the
        orientation of a shape matters less.
    grid : {1, 2, 4}, default 4
        Spatial grid of the pooling: 1 pools the whole map; 2 adds the pools
        of the 2x2 cells and 4 those of the 2x2 and the 4x4 cells (a spatial
        pyramid), so where things are in the image counts too. Cells of an
        odd-sized map share its middle row and column.
    grid_weight : float, default 0.4
        With ``grid`` 2 or 4, how much the cells count against the whole map:
        the vector is the whole map's part and the cells' part, each
        L2-normalised, the cells' multiplied by ``grid_weight`` (so its
        length is ``grid_weight`` times the whole map's), from 0 to 100.
        Ignored with ``grid=1``.

    Notes
    -----
    The defaults (block4, max-pooled over the whole map and over its 2x2 and
    4x4 cells, the cells' part weighted 0.4: 10,752 values) have the best
    worst case over the six kinds of labelled folders of
    ``benchmarks/quality.py`` among the settings that stay within 0.03 of
    the previous default (block4 + block5, whole map) on the five kinds it
    was chosen on (with the clustering defaults of
    :class:`~featclust.cluster.FeatureKMeans`: L2, PCA to 32, L2), with a
    pretrained backbone.
    """

    def __init__(
        self,
        weights="imagenet",
        pooling="max",
        precision="auto",
        batch_size=None,
        seed=0,
        jit_compile=None,
        layer="block4",
        tta=False,
        grid=4,
        grid_weight=0.4,
    ):
        check_choice("pooling", pooling, POOLINGS)
        blocks = layer_blocks(layer)
        check_bool("tta", tta)
        grid = check_int("grid", grid)
        if grid not in GRIDS:
            raise UsageError(f"grid={grid!r} is not one of {', '.join(map(str, GRIDS))}")
        grid_weight = check_float("grid_weight", grid_weight, low=0.0, high=100.0)
        if pooling == "flatten" and (len(blocks) > 1 or grid != 1):
            raise UsageError(
                f"pooling='flatten' keeps the whole map of one block: it cannot be "
                f"combined with layer={layer!r} or grid={grid!r}"
            )
        check_int("batch_size", batch_size, none_ok=True)
        check_choice("precision", precision, PRECISIONS)
        check_int("seed", seed, low=0)
        check_choice("jit_compile", jit_compile, (None, True, False))
        self.weights = str(weights)
        self.pooling = pooling
        self.precision = precision
        self.batch_size = batch_size
        self.seed = seed
        self.jit_compile = jit_compile
        self.layer = layer
        self.tta = tta
        self.grid = grid
        self.grid_weight = grid_weight
        self._blocks = blocks
        self._identity = weights_identity(self.weights, seed)
        self._precision = None
        self._batch = None
        self._model = None

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters, as given (``weights`` as a string).

        Returns
        -------
        dict
            JSON-able; ``Embedder.from_params(e.get_params())`` makes the same
            features as ``e``.
        """
        return {name: getattr(self, name) for name in DEFAULTS}

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> Embedder:
        """An embedder from saved parameters (as :meth:`get_params` returns them).

        Parameters
        ----------
        params : dict
            Keys that are not parameters of :class:`Embedder` are ignored, so
            a record written by another featclust version can be read; a
            parameter it lacks takes the value that gave its features before
            the parameter existed (``grid=1``), else the default.
        **overrides
            Parameters that replace the saved ones; those given as ``None``
            are ignored (keep the saved value).

        Returns
        -------
        Embedder
        """
        kwargs = {**_BEFORE_IT_EXISTED, **{k: v for k, v in params.items() if k in DEFAULTS}}
        kwargs.update((k, v) for k, v in overrides.items() if v is not None and k in DEFAULTS)
        return cls(**kwargs)

    @property
    def dim(self) -> int:
        """Length of one feature vector."""
        if self.pooling == "flatten":
            side, channels = LAYERS[self._blocks[0]]
            return side * side * channels
        cells = sum(g * g for g in levels(self.grid))
        return cells * sum(LAYERS[b][1] for b in self._blocks)

    @property
    def batch(self) -> int:
        """The batch size in use: ``batch_size``, or the default for the device."""
        if self._batch is None:
            self._batch = self.batch_size or (GPU_BATCH_SIZE if gpu_available() else CPU_BATCH_SIZE)
        return self._batch

    def settings(self) -> dict[str, Any]:
        """Everything that determines the features, as a JSON-able dict."""
        if self._precision is None:
            self._precision = resolve_precision(self.precision)
        settings = {
            "model": "keras.applications.VGG16(include_top=False)",
            "weights": self._identity,
            "layer": "+".join(f"{b}_pool" for b in self._blocks),
            "pooling": self.pooling if self.pooling != "gem" else f"gem(p={GEM_P:g})",
            "tta": "mean of 8 flips/rotations" if self.tta else "none",
            "input_size": INPUT_SIZE,
            "resample": "bilinear",
            "preprocess": (
                f"gray->3ch,pad-white,vgg16.preprocess_input,decode-v{images.DECODE_VERSION}"
            ),
            "precision": self._precision,
            "feature_version": FEATURE_VERSION,
            "dim": self.dim,
        }
        # Only present when used, so the features of one whole-map block keep
        # the store entry they had before grids and block combinations existed.
        if self.grid != 1:
            settings["grid"] = "+".join(f"{g}x{g}" for g in levels(self.grid))
            settings["grid_weight"] = self.grid_weight
            settings["grid_combine"] = "l2(whole map), grid_weight * l2(cells)"
        if len(self._blocks) > 1:
            settings["combine"] = "l2 per block, concatenated"
        return settings

    def build(self) -> Any:
        """Build the model now (it is otherwise built by the first :meth:`embed`).

        Returns
        -------
        keras.Model
            From a ``(batch, 224, 224)`` uint8 batch to ``(batch, dim)`` float32.
        """
        if self._model is not None:
            return self._model
        keras, _ = load_keras()
        precision = self.settings()["precision"]
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(_POLICIES[precision])
        try:
            vgg = self.load_vgg16()
            vgg = keras.Model(vgg.input, [vgg.get_layer(f"{b}_pool").output for b in self._blocks])
        finally:
            keras.config.set_dtype_policy(previous)
        ops = keras.ops
        gray = keras.Input((INPUT_SIZE, INPUT_SIZE), dtype="uint8")
        x = ops.expand_dims(ops.cast(gray, "float32"), -1) - np.array(VGG_MEAN_BGR, np.float32)
        maps = vgg(x)
        maps = maps if isinstance(maps, (list, tuple)) else [maps]
        wholes, cells = zip(*(pool_grid(keras, m, self.pooling, self.grid) for m in maps))
        features = combine(ops, list(wholes), list(cells), self.grid_weight)
        name = "_".join(self._blocks)
        model = keras.Model(
            gray, features, name=f"featclust_vgg16_{name}_{self.pooling}_g{self.grid}"
        )
        jit = self.jit_compile
        if jit is None:
            jit = keras.backend.backend() == "jax" or gpu_available()
        model.jit_compile = bool(jit)
        self._model = model
        return model

    def load_vgg16(self) -> Any:
        """Keras' VGG16 without its top (up to ``block5_pool``), with these weights.

        The model is made in the current Keras dtype policy; :meth:`build`
        wraps it into the feature model. Benchmarks use it directly.

        Returns
        -------
        keras.Model
            From ``(batch, 224, 224, 3)`` preprocessed input to the block5 maps.

        Raises
        ------
        WeightsError
            If the weights cannot be downloaded or loaded.
        """
        keras, _ = load_keras()
        shape = (INPUT_SIZE, INPUT_SIZE, 3)
        if self.weights == "imagenet":
            try:
                # Keras prints its download lines to stdout, which carries the CSV of
                # assign and similar: the library never prints, so they are dropped.
                with contextlib.redirect_stdout(io.StringIO()):
                    return keras.applications.VGG16(
                        include_top=False, weights="imagenet", input_shape=shape
                    )
            except Exception as e:  # Keras raises a bare Exception on a failed download
                raise WeightsError(
                    f"cannot get the ImageNet weights of VGG16 ({_first_line(e)}). "
                    f"Keras expects the file {IMAGENET_FILE} at {keras_weights_path()}: "
                    f"download it from {IMAGENET_URL} on a machine with internet and put it "
                    f"there, or pass weights=PATH with a local weights file; to try featclust "
                    f"out without them, weights=none (random weights: clusters that do not "
                    f"reflect pretrained features)"
                ) from None
        model = keras.applications.VGG16(include_top=False, weights=None, input_shape=shape)
        if self.weights == "none":
            _random_weights(model, self.seed)
            return model
        try:
            model.load_weights(self.weights)
        except Exception as e:  # h5py and Keras raise many types for a bad file
            raise WeightsError(
                f"cannot load weights={self.weights!r} into VGG16 without top: {_first_line(e)}"
            ) from None
        return model

    def embed_batch(self, gray: np.ndarray) -> np.ndarray:
        """Features of at most :attr:`batch` decoded images, in one forward pass.

        With ``tta`` it is 8 passes, one per flip/rotation, and their mean.

        Parameters
        ----------
        gray : numpy.ndarray
            ``(n, 224, 224)`` uint8, ``n <= batch``; padded with white to
            :func:`padded_size` images.

        Returns
        -------
        numpy.ndarray
            ``(n, dim)`` float32.
        """
        model = self.build()
        n = len(gray)
        full = padded_size(n, self.batch)
        if n < full:
            pad = np.full((full - n, INPUT_SIZE, INPUT_SIZE), 255, np.uint8)
            gray = np.concatenate([gray, pad])
        if not self.tta:
            return np.asarray(model.predict_on_batch(gray), dtype=np.float32)[:n]
        total = np.zeros((n, self.dim), np.float64)
        for t in range(8):
            total += np.asarray(model.predict_on_batch(dihedral(gray, t)), np.float32)[:n]
        return (total / 8).astype(np.float32)

    def embed(self, gray: np.ndarray) -> np.ndarray:
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
        gray = np.asarray(gray, dtype=np.uint8)
        if not len(gray):
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(
            [
                self.embed_batch(gray[start : start + self.batch])
                for start in range(0, len(gray), self.batch)
            ]
        )


#: What a parameter missing from saved parameters meant before it existed.
_BEFORE_IT_EXISTED = {"grid": 1}
#: The constructor defaults of :class:`Embedder`, for the CLI and the estimator.
DEFAULTS = {name: p.default for name, p in inspect.signature(Embedder).parameters.items()}


def padded_size(n: int, batch: int) -> int:
    """The batch size ``n`` images are padded to: the next power of two, at most ``batch``.

    The compiled step then sees at most ``log2(batch) + 2`` shapes, and a
    last batch of 2 images costs 2 images' work, not ``batch``.
    """
    if n >= batch:
        return batch
    return min(batch, 1 << max(0, int(n) - 1).bit_length())


def dihedral(gray: np.ndarray, t: int) -> np.ndarray:
    """The ``t``-th of the 8 flips/rotations of a ``(n, h, w)`` stack (0 is the identity).

    ``t % 4`` quarter turns, then a left-right mirror for ``t >= 4``.
    """
    out = np.rot90(gray, k=t % 4, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if t >= 4 else out)


def _random_weights(model, seed):
    """He-uniform kernels from numpy's seeded generator, zero biases.

    Independent of the backend's random state, so the same seed gives the same
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
        layer.set_weights(
            [rng.uniform(-limit, limit, kernel.shape).astype(np.float32), np.zeros_like(bias)]
        )


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
