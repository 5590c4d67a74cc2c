"""``model.npz``: a fitted :class:`~featclust.cluster.FeatureKMeans` on disk, the one owner
of that format.

Below :mod:`featclust.cluster` (which calls it from ``save`` and ``load``):
this module never imports it; :func:`load_model` is given the class to build.

Arrays and JSON settings in an ``.npz``, never pickle. Loading checks every
part of the file (parameters, shapes and values of the arrays) before the
model is made, so a damaged or tampered file gives one error that says what
is wrong, never a traceback later.
"""

from __future__ import annotations

import json
import os
from typing import IO, Any

import numpy as np

from .errors import ModelMismatchError, UsageError
from .reduce import Reducer

MODEL_FORMAT = 1
#: Every array a model file may hold.
MODEL_ARRAYS = (
    "meta",
    "cluster_centers",
    "thresholds",
    "pca_mean",
    "pca_components",
    "pca_scale",
    "feature_centers",
)


def save_model(
    model: Any,
    path: str | os.PathLike | IO[bytes],
    extra: dict | None = None,
) -> None:
    """Write a fitted model to ``path`` (a path or a binary file object).

    ``random_state`` is recorded as an int or None: a
    ``numpy.random.RandomState`` instance is recorded as the int seed the fit
    drew from it (``model.seed_``), so the loaded model refits the same way.

    Parameters
    ----------
    model : featclust.cluster.FeatureKMeans
        Fitted.
    path : path-like or file object
    extra : dict, optional
        JSON-able metadata stored with the model (e.g. feature settings).
    """
    params = model.get_params()
    if params.get("random_state") is not None and not isinstance(params["random_state"], int):
        params["random_state"] = int(model.seed_)  # a RandomState: the seed this fit drew
    meta = {
        "format": MODEL_FORMAT,
        "params": params,
        "n_features_in": int(model.n_features_in_),
        "extra": extra or {},
    }
    arrays = {
        "cluster_centers": model.cluster_centers_,
        "thresholds": model.thresholds_,
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    }
    r = model.reducer_
    if r.components_ is not None:
        arrays.update(pca_mean=r.mean_, pca_components=r.components_, pca_scale=r.scale_)
    if getattr(model, "feature_centers_", None) is not None:
        arrays["feature_centers"] = model.feature_centers_
    np.savez(path, **arrays)


def load_model(path: str | os.PathLike | IO[bytes], cls: type) -> tuple[Any, dict]:
    """Read a model written by :func:`save_model` (also by versions that said ``seed``).

    Parameters
    ----------
    path : path-like or file object
    cls : type
        The estimator class to build (:class:`featclust.cluster.FeatureKMeans`);
        its constructor parameters are the ones a file may record.

    Returns
    -------
    model : FeatureKMeans
    extra : dict
        The metadata given to :func:`save_model`.

    Raises
    ------
    ModelMismatchError
        If the file cannot be read, is of another format, or any part of it
        is missing, of the wrong type or shape, or not finite; the message
        names the file and the part.
    """
    where = f"model file {str(path)!r}"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise ModelMismatchError(
                f"{where} holds pickled data (object arrays, or no "
                ".npz at all), which is never loaded"
            ) from None
        raise ModelMismatchError(f"cannot read {where}: {e}") from None
    except (OSError, KeyError, TypeError, EOFError, RuntimeError) as e:
        raise ModelMismatchError(f"cannot read {where}: {e}") from None
    except Exception as e:  # zipfile.BadZipFile and other damage of the container
        raise ModelMismatchError(f"cannot read {where}: {type(e).__name__}: {e}") from None
    return _model_from_arrays(cls, arrays, where)


def check_feature_settings(
    model: Any, extra: dict, expected: dict | None, path: str | os.PathLike
) -> None:
    """Refuse a model whose features are not those of the folder or command using it.

    A model is only meaningful on features made as its own were: one fitted
    on average-pooled features gives nonsense distances on max-pooled ones.

    Parameters
    ----------
    model : featclust.cluster.FeatureKMeans
        As read by :func:`load_model`.
    extra : dict
        Its metadata; ``extra["feature_settings"]`` are the settings it was
        fitted on (recorded by ``sort``; a file without them is checked by
        the length of its features, ``expected["dim"]``).
    expected : dict or None
        The feature settings of the folder or command (``None``: nothing to check).
    path : path-like
        The model file, to name in the message.

    Raises
    ------
    ModelMismatchError
        In one line, naming each setting that differs with both values.
    """
    if not isinstance(expected, dict):
        return
    recorded = extra.get("feature_settings")
    if isinstance(recorded, dict):
        diffs = [
            f"{key}: {recorded.get(key)!r} (model file) vs {expected.get(key)!r} (here)"
            for key in sorted(set(recorded) | set(expected))
            if recorded.get(key) != expected.get(key)
        ]
    else:
        dim = expected.get("dim")
        diffs = (
            [f"features of length {model.n_features_in_} (model file) vs {dim} (here)"]
            if isinstance(dim, int) and dim != model.n_features_in_
            else []
        )
    if diffs:
        raise ModelMismatchError(
            f"model file {str(path)!r} was fitted on other features than the ones used "
            f"here ({'; '.join(diffs)}); sort again, or put back the model.npz of this sort"
        )


def _model_from_arrays(cls, arrays, where):
    """Check what :meth:`FeatureKMeans.load` read and build the model from it."""

    def bad(what):
        return ModelMismatchError(f"{where}: {what}")

    unknown = sorted(set(arrays) - set(MODEL_ARRAYS))
    if unknown:
        raise bad(f"unknown arrays {', '.join(unknown)}")
    missing = [name for name in ("meta", "cluster_centers", "thresholds") if name not in arrays]
    if missing:
        raise bad(f"missing arrays {', '.join(missing)}")
    raw = arrays["meta"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise bad(f"meta must be JSON bytes (uint8), got {raw.dtype} of shape {raw.shape}")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"meta is not JSON ({e})") from None
    if not isinstance(meta, dict):
        raise bad(f"meta must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != MODEL_FORMAT:
        raise ModelMismatchError(
            f"{where} has format {meta.get('format')!r}, expected {MODEL_FORMAT}"
        )
    params, extra = meta.get("params"), meta.get("extra", {})
    if not isinstance(params, dict):
        raise bad(f"params must be a JSON object, got {type(params).__name__}")
    if not isinstance(extra, dict):
        raise bad(f"extra must be a JSON object, got {type(extra).__name__}")
    params = dict(params)
    if "seed" in params and "random_state" not in params:
        params["random_state"] = params.pop("seed")  # files written before the redesign
    unknown = sorted(set(params) - set(cls().get_params()))
    if unknown:
        raise bad(f"unknown parameters {', '.join(map(repr, unknown))}")
    model = cls(**params)
    try:
        model.check_params()
    except UsageError as e:
        raise bad(f"parameter {e}") from None
    d = meta.get("n_features_in")
    if not isinstance(d, int) or isinstance(d, bool) or d < 1:
        raise bad(f"n_features_in={d!r} must be a positive integer")
    k = model.n_clusters

    def array(name, shape):
        a = arrays[name]
        if not np.issubdtype(a.dtype, np.floating) or a.shape != shape:
            raise bad(
                f"{name} must be a float array of shape {shape}, got {a.dtype} of shape {a.shape}"
            )
        if not np.isfinite(a).all():
            raise bad(f"{name} holds NaN or infinite values")
        return a.astype(np.float32, copy=False)

    pca_names = ("pca_mean", "pca_components", "pca_scale")
    present = [name for name in pca_names if name in arrays]
    if present and len(present) != 3:
        raise bad(f"PCA arrays incomplete: has {', '.join(present)}, needs {', '.join(pca_names)}")
    r = Reducer(model.pca, model.whiten, model.normalize, model.random_state)
    r.n_features_in_ = model.n_features_in_ = d
    r.mean_ = r.components_ = r.scale_ = None
    width = d
    if present:
        c = arrays["pca_components"].shape[0] if arrays["pca_components"].ndim == 2 else -1
        # pca is an upper bound: a folder with fewer images got fewer components.
        most = d if model.pca is None else min(model.pca, d)
        if c < 1 or c > most:
            raise bad(
                f"pca_components has shape {arrays['pca_components'].shape}; expected "
                f"(at most {most}, {d})"
            )
        r.mean_ = array("pca_mean", (d,))
        r.components_ = array("pca_components", (c, d))
        r.scale_ = array("pca_scale", (c,))
        if np.any(r.scale_ <= 0):
            raise bad("pca_scale must be positive")
        width = c
    elif model.pca is not None:
        raise bad(f"pca={model.pca} but the file has no PCA arrays")
    r.n_components_ = model.n_components_ = r.components_.shape[0] if present else None
    model.reducer_ = r
    model.cluster_centers_ = array("cluster_centers", (k, width))
    # Written since the PCA became a default; a file without them measures
    # distances in the reduced space, as its thresholds were.
    model.feature_centers_ = None
    if "feature_centers" in arrays:
        if not present:
            raise bad("feature_centers without PCA arrays")
        model.feature_centers_ = array("feature_centers", (k, d))
    model.thresholds_ = array("thresholds", (k,))
    if np.any(model.thresholds_ < 0):
        raise bad("thresholds must not be negative")
    return model, extra
