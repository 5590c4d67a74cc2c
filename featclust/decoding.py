"""Decoding images in background threads or processes, batch by batch, ahead of the model.

While the model runs on one batch, the threads (or, where the model outruns
them, worker processes) decode the next ones, so decoding is hidden behind
the model. Memory holds at most
``prefetch_batches + 1`` batches of pixels, however many files there are.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np

from . import images
from .checks import check_choice, check_int
from .device import cpu_count, gpu_available
from .images import ImageFile

#: Side of the square images the model sees.
INPUT_SIZE = 224


#: How images are decoded: in threads of this process, in worker processes,
#: or chosen by :func:`choose_decoder`.
DECODERS = ("auto", "threads", "processes")
#: Files one worker process decodes per task (its pixels come back together).
PROCESS_CHUNK = 16
#: Fewer files than this per worker are decoded in threads (starting worker
#: processes costs about a second).
MIN_FILES_PER_PROCESS = 64


def choose_decoder(
    decoder: str = "auto", n_files: int | None = None, model_on_gpu: bool | None = None
) -> str:
    """Threads or processes for decoding.

    ``"auto"`` takes processes only where the model outruns decoding: on a
    GPU, with at least 4 CPUs and enough files to pay for starting them.
    On a CPU the model is the bound and threads (Pillow decodes and resizes
    without the GIL) measured as fast or faster (``benchmarks/decode_speed.py``).

    Parameters
    ----------
    decoder : {"auto", "threads", "processes"}
    n_files : int, optional
        How many files will be decoded (``None``: unknown, many).
    model_on_gpu : bool, optional
        Whether the model runs on a GPU; ``None`` asks :func:`featclust.device.gpu_available`.

    Returns
    -------
    str
        ``"threads"`` or ``"processes"``.
    """
    check_choice("decoder", decoder, DECODERS)
    if decoder != "auto":
        return decoder
    workers = cpu_count()
    if workers < 4 or (n_files is not None and n_files < MIN_FILES_PER_PROCESS * workers):
        return "threads"
    if model_on_gpu is None:
        model_on_gpu = gpu_available()
    return "processes" if model_on_gpu else "threads"


def iter_decoded(
    files: Sequence[ImageFile],
    batch_size: int,
    size: int = INPUT_SIZE,
    workers: int | None = None,
    prefetch_batches: int = 2,
    decoder: str = "threads",
) -> Iterator[tuple[list, np.ndarray, list]]:
    """Decode files in the background, in order, ``batch_size`` good images at a time.

    Parameters
    ----------
    files : iterable of featclust.images.ImageFile
        Files to decode, in order.
    batch_size : int
        Decoded images per batch (files that fail do not count).
    size : int
        Side of the decoded squares.
    workers : int, optional
        Decoding threads or processes; defaults to the number of CPUs.
    prefetch_batches : int
        How many batches to decode ahead of the consumer.
    decoder : {"threads", "processes", "auto"}
        Threads of this process, or worker processes (started with
        ``spawn``, each decoding :data:`PROCESS_CHUNK` files per task and
        handing back their uint8 pixels), or :func:`choose_decoder`'s choice.

    Yields
    ------
    good : list of (ImageFile, str)
        The files of this batch that decoded, with their content hashes.
    pixels : numpy.ndarray
        ``(len(good), size, size)`` uint8.
    bad : list of featclust.images.BadFile
        Files of this batch that could not be used.

    Notes
    -----
    Memory: at most ``batch_size * (prefetch_batches + 1)`` decoded images
    wait for the consumer. Each thread's decoding shares the process's
    :data:`featclust.images.DECODE_BUDGET_BYTES`; each worker process
    decodes one image at a time.
    """
    batch_size = check_int("batch_size", batch_size)
    workers = check_int("workers", workers, none_ok=True) or cpu_count()
    prefetch_batches = check_int("prefetch_batches", prefetch_batches, low=0)
    decoder = choose_decoder(decoder, len(files) if hasattr(files, "__len__") else None)
    limit = batch_size * (prefetch_batches + 1)
    if decoder == "processes":
        context = multiprocessing.get_context("spawn")
        pool: Executor = ProcessPoolExecutor(workers, mp_context=context)
        chunk = max(1, min(PROCESS_CHUNK, batch_size))
        tasks = _chunks(files, chunk)
        work = partial(_decode_chunk, size=size)
        ahead = max(1, -(-limit // chunk))
    else:
        pool = ThreadPoolExecutor(workers, thread_name_prefix="featclust-decode")
        tasks = ([f] for f in files)
        work = partial(_decode_chunk, size=size)
        ahead = limit
    try:
        pending: deque = deque()
        ready: deque = deque()

        def fill():
            while len(pending) < ahead:
                task = next(tasks, None)
                if task is None:
                    return
                pending.append((task, pool.submit(work, task)))

        def next_item():
            if not ready:
                task, future = pending.popleft()
                fill()
                results, pixels = future.result()
                good = iter(pixels)
                for f, (digest, reason) in zip(task, results):
                    ready.append((f, digest, next(good) if reason is None else None, reason))
            return ready.popleft()

        fill()
        while pending or ready:
            good: list = []
            stack: list = []
            bad: list = []
            while (pending or ready) and len(stack) < batch_size:
                f, digest, pixels, reason = next_item()
                if reason is None:
                    good.append((f, digest))
                    stack.append(pixels)
                else:
                    bad.append(images.BadFile(f.path, reason))
            pixels = np.stack(stack) if stack else np.zeros((0, size, size), np.uint8)
            yield good, pixels, bad
    finally:  # also when the consumer stops early: queued work is dropped
        pool.shutdown(wait=True, cancel_futures=True)


def _chunks(files, n):
    chunk = []
    for f in files:
        chunk.append(f)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _decode_chunk(files, size=INPUT_SIZE):
    """Decode a few files (in a worker process or thread).

    Returns
    -------
    results : list of (str or None, str or None)
        ``(digest, reason)`` of each file; ``reason`` is ``None`` for a good one.
    pixels : numpy.ndarray
        ``(n_good, size, size)`` uint8, the good files' pixels in order.
    """
    results, stack = [], []
    for f in files:
        digest, pixels, reason = load_one(f, size)
        results.append((digest, reason))
        if reason is None:
            stack.append(pixels)
    if len(stack) == 1:
        return results, stack[0][None]
    return results, (np.stack(stack) if stack else np.zeros((0, size, size), np.uint8))


def load_one(
    file: ImageFile,
    size: int = INPUT_SIZE,
) -> tuple[str | None, np.ndarray | None, str | None]:
    """Read and decode one file; any failure is the file's, never the run's.

    Returns
    -------
    digest : str or None
    pixels : numpy.ndarray or None
    reason : str or None
        Why the file cannot be used (``None`` when it can). Every exception
        but ``KeyboardInterrupt`` and ``SystemExit`` (which are not
        ``Exception``) ends here: an image that cannot be prepared is skipped.
    """
    try:
        data, digest = images.read_bytes(file)
        return digest, images.decode(data, size), None
    except images.BadImageError as e:
        return None, None, str(e)
    except MemoryError:
        return None, None, "out of memory while decoding"
    except Exception as e:  # a bug or an odd file must not end the run
        return None, None, f"cannot decode: {type(e).__name__}: {e}"


def iter_features(
    files: Sequence[ImageFile],
    embedder: Any,
    workers: int | None = None,
    prefetch_batches: int = 2,
    decoder: str = "auto",
) -> Iterator[tuple[list, np.ndarray, list]]:
    """Decode files in background threads and embed them batch by batch.

    The function a :meth:`featclust.store.FeatureStore.update` takes, bound to
    an embedder: ``functools.partial(iter_features, embedder=embedder)``.

    Parameters
    ----------
    files : iterable of featclust.images.ImageFile
        Files to embed, in order.
    embedder : featclust.embed.Embedder
        Or anything with ``batch``, ``dim`` and ``embed_batch(pixels)``.
    workers : int, optional
        Decoding threads; defaults to the number of CPUs.
    prefetch_batches : int
        How many batches to decode ahead of the model.
    decoder : {"auto", "threads", "processes"}
        See :func:`iter_decoded`; ``"auto"`` decodes in processes only where
        the model outruns decoding (a GPU, 4 or more CPUs, many files).

    Yields
    ------
    good : list of (ImageFile, str)
        The files of this batch that decoded, with their content hashes.
    features : numpy.ndarray
        ``(len(good), dim)`` float32.
    bad : list of featclust.images.BadFile
        Files of this batch that could not be used.
    """
    for good, pixels, bad in iter_decoded(
        files, embedder.batch, INPUT_SIZE, workers, prefetch_batches, decoder
    ):
        feats = embedder.embed_batch(pixels) if good else np.zeros((0, embedder.dim), np.float32)
        yield good, feats, bad
