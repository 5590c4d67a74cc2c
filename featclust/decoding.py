"""Decoding images in background threads, batch by batch, ahead of the model.

While the model runs on one batch, the threads decode the next ones, so
decoding is hidden behind the model. Memory holds at most
``prefetch_batches + 1`` batches of pixels, however many files there are.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import images
from .checks import check_int
from .device import cpu_count

#: Side of the square images the model sees.
INPUT_SIZE = 224


def iter_decoded(files, batch_size, size=INPUT_SIZE, workers=None, prefetch_batches=2):
    """Decode files in background threads, in order, ``batch_size`` good images at a time.

    Parameters
    ----------
    files : iterable of featclust.images.ImageFile
        Files to decode, in order.
    batch_size : int
        Decoded images per batch (files that fail do not count).
    size : int
        Side of the decoded squares.
    workers : int, optional
        Decoding threads; defaults to the number of CPUs.
    prefetch_batches : int
        How many batches to decode ahead of the consumer.

    Yields
    ------
    good : list of (ImageFile, str)
        The files of this batch that decoded, with their content hashes.
    pixels : numpy.ndarray
        ``(len(good), size, size)`` uint8.
    bad : list of featclust.images.BadFile
        Files of this batch that could not be used.
    """
    batch_size = check_int("batch_size", batch_size)
    workers = check_int("workers", workers, none_ok=True) or cpu_count()
    prefetch_batches = check_int("prefetch_batches", prefetch_batches, low=0)

    def work(f):
        try:
            pixels, digest = images.load(f, size)
            return f, digest, pixels, None
        except images.BadImageError as e:
            return f, None, None, str(e)

    with ThreadPoolExecutor(workers, thread_name_prefix="featclust-decode") as pool:
        pending = deque()
        it = iter(files)
        limit = batch_size * (prefetch_batches + 1)

        def fill():
            while len(pending) < limit:
                f = next(it, None)
                if f is None:
                    return
                pending.append(pool.submit(work, f))

        fill()
        while pending:
            good, stack, bad = [], [], []
            while pending and len(stack) < batch_size:
                f, digest, pixels, reason = pending.popleft().result()
                fill()
                if reason is None:
                    good.append((f, digest))
                    stack.append(pixels)
                else:
                    bad.append(images.BadFile(f.path, reason))
            pixels = np.stack(stack) if stack else np.zeros((0, size, size), np.uint8)
            yield good, pixels, bad


def iter_features(files, embedder, workers=None, prefetch_batches=2):
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

    Yields
    ------
    good : list of (ImageFile, str)
        The files of this batch that decoded, with their content hashes.
    features : numpy.ndarray
        ``(len(good), dim)`` float32.
    bad : list of featclust.images.BadFile
        Files of this batch that could not be used.
    """
    for good, pixels, bad in iter_decoded(files, embedder.batch, INPUT_SIZE, workers,
                                          prefetch_batches):
        feats = (embedder.embed_batch(pixels) if good
                 else np.zeros((0, embedder.dim), np.float32))
        yield good, feats, bad
