"""What hardware the model runs on: CPUs, GPU, and the precision it runs fastest.

Importing this module imports neither TensorFlow nor Keras; the functions
that ask the Keras backend about a GPU import it when called.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checks import check_choice

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def cpu_count():
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_has_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16 flags).

    Parameters
    ----------
    cpuinfo : path-like
        The file that lists the CPU's flags (Linux's ``/proc/cpuinfo``).
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool({"amx_bf16", "avx512_bf16"} & set(line.split(":", 1)[-1].split()))
    return False


def accelerator():
    """The GPU the Keras backend will use, if any.

    Returns
    -------
    kind : {"gpu", "cpu"}
    compute_capability : tuple of int or None
        ``(major, minor)`` of the first GPU, ``(0, 0)`` if unknown.
    """
    from .embed import _keras

    keras, tf = _keras()
    backend = keras.backend.backend()
    if tf is not None:
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
            return "gpu", tuple(cc or (0, 0))
    elif backend == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if gpus:
            return "gpu", _version_tuple(getattr(gpus[0], "compute_capability", "0.0"))
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return "gpu", tuple(torch.cuda.get_device_capability(0))
    return "cpu", None


def _version_tuple(text):
    try:
        return tuple(int(p) for p in str(text).split(".")[:2])
    except ValueError:
        return (0, 0)


def gpu_available():
    """Whether the Keras backend sees a GPU."""
    return accelerator()[0] == "gpu"


def resolve_precision(precision):
    """Turn ``"auto"`` into the precision the hardware runs fastest.

    ``auto`` is bfloat16 on a GPU of compute capability 8.0 or later and on a
    CPU with AMX or AVX512-BF16 (which multiply bfloat16 in hardware), float32
    elsewhere: without them bfloat16 is emulated and slower than float32.

    Parameters
    ----------
    precision : {"auto", "float32", "bfloat16", "float16"}

    Returns
    -------
    str
        ``precision`` itself unless it is ``"auto"``.
    """
    check_choice("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    kind, cc = accelerator()
    if kind == "gpu":
        return "bfloat16" if cc >= (8, 0) else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"
