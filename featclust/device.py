"""What hardware the model runs on: CPUs, GPU, and the precision it runs fastest.

Importing this module imports neither TensorFlow nor Keras. Whether a GPU
may exist is first decided from the device files (:func:`gpu_may_exist`):
on a machine without one the backend is never imported to ask. Also here:
keeping the runtime's start-up log lines (absl, CUDA, oneDNN) off the
terminal (:func:`quiet_native_stderr`), and :func:`load_keras`, the one place
the Keras backend is imported and configured (when first needed).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .checks import check_choice

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
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


def accelerator() -> tuple[str, tuple[int, ...] | None]:
    """The GPU the Keras backend will use, if any.

    Returns
    -------
    kind : {"gpu", "cpu"}
    compute_capability : tuple of int or None
        ``(major, minor)`` of the first GPU, ``(0, 0)`` if unknown.
    """
    if not gpu_may_exist():
        return "cpu", None
    keras, tf = load_keras()
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


def gpu_may_exist(root: str = "/") -> bool:
    """Whether a GPU may be present, decided without importing any backend.

    False when ``CUDA_VISIBLE_DEVICES`` hides every device ("" or "-1"), or
    on Linux when there is no NVIDIA device (``/proc/driver/nvidia/gpus/*``,
    ``/dev/nvidia[0-9]*``), no ROCm device (``/dev/kfd``) and no WSL GPU
    (``/dev/dxg``). True elsewhere (other systems: the backend is asked).

    Parameters
    ----------
    root : str
        Prefix of the device paths (for tests).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    if not sys.platform.startswith("linux"):
        return True

    def join(*parts: str) -> str:
        return os.path.join(root, *parts)

    return bool(
        glob.glob(join("proc", "driver", "nvidia", "gpus", "*"))
        or glob.glob(join("dev", "nvidia[0-9]*"))
        or os.path.exists(join("dev", "kfd"))
        or os.path.exists(join("dev", "dxg"))
    )


def gpu_available() -> bool:
    """Whether the Keras backend sees a GPU (without importing it where none may exist)."""
    return accelerator()[0] == "gpu"


#: Lines the native runtime writes while it starts: absl's "before
#: InitializeLog" warning, glog/absl-format lines of levels I, W and E
#: (cuInit failures, "Could not find cuda drivers", factory registrations,
#: oneDNN notes) and the continuation of the CPU-feature note.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\]"
    r"|To enable the following instructions:"
    r"|WARNING:absl:"
    r"|This TensorFlow binary is optimized to use available CPU instructions)"
)


def runtime_logs_wanted() -> bool:
    """Whether the user asked for the runtime's own log lines.

    ``FEATCLUST_RUNTIME_LOGS=1``, or ``TF_CPP_MIN_LOG_LEVEL=0`` set by the user.
    """
    return (
        os.environ.get("FEATCLUST_RUNTIME_LOGS") == "1"
        or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"
    )


def prepare_runtime_env() -> None:
    """Environment for a quiet backend start, set before it is imported.

    Only variables the user has not set: ``TF_CPP_MIN_LOG_LEVEL=2``,
    ``GLOG_minloglevel=2``; and, on a Linux machine where no GPU may exist,
    ``CUDA_VISIBLE_DEVICES=-1`` so the runtime does not look for one.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GLOG_minloglevel", "2")
    if sys.platform.startswith("linux") and not gpu_may_exist():
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")


def silence_python_loggers() -> None:
    """TensorFlow's and absl's Python loggers report errors only."""
    for name in ("tensorflow", "absl", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.ERROR)
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.ERROR)


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Keep the runtime's start-up lines (see :data:`NOISE`) off the terminal.

    File descriptor 2 points into a temporary file inside the block; at its
    end every line that is not start-up noise is written to the real
    standard error, so Python's own messages and real errors still show.
    Nothing is filtered when :func:`runtime_logs_wanted` or when stderr has
    no file descriptor (as in some notebooks). A native crash inside the
    block loses its message: set ``FEATCLUST_RUNTIME_LOGS=1`` to see it.
    """
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        saved = os.dup(fd)
    except (AttributeError, OSError, ValueError):
        yield
        return
    if runtime_logs_wanted():
        os.close(saved)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        _flush()
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            _flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            kept = [
                line
                for line in capture.read().splitlines(keepends=True)
                if not NOISE.match(line.decode("utf-8", "replace"))
            ]
            if kept:
                os.write(fd, b"".join(kept))


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def resolve_precision(precision: str) -> str:
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
        return "bfloat16" if cc is not None and cc >= (8, 0) else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"


def load_keras() -> tuple[Any, Any]:
    """Import Keras (and TensorFlow when it is the backend), configured once.

    Returns
    -------
    keras : module
    tf : module or None
        TensorFlow, or ``None`` with another Keras backend.
    """
    if _BACKEND:
        return _BACKEND[0]
    prepare_runtime_env()
    with quiet_native_stderr():
        import keras

        tf: Any = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow

            tf = tensorflow
            _configure_tensorflow(tf)
            tf.config.list_physical_devices("GPU")  # starts the runtime (its log lines) here
    silence_python_loggers()
    _BACKEND.append((keras, tf))
    return keras, tf


_BACKEND: list = []
_TF_CONFIGURED: list = []


def _configure_tensorflow(tf):
    """Give TensorFlow's op thread pool the CPUs this process may use.

    VGG16 is a chain of layers, so only one op runs at a time: one inter-op
    thread, and every core inside each op. (TensorFlow's own default is
    close; on the 2-core benchmark machine the two measured the same.) Runs
    once, before TensorFlow starts; later it cannot change and is left as
    it is.
    """
    if _TF_CONFIGURED:
        return
    _TF_CONFIGURED.append(True)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(cpu_count())
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow was started before featclust got to it
        pass
