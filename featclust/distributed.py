"""Embedding on a Dask cluster: one task per store chunk of files.

The driver (the process that runs ``featclust``) scans the folder, asks the
store what is missing and submits one task per chunk of missing files (the
store's chunk size). A worker builds the model once (a per-worker cache keyed
by :meth:`featclust.embed.Embedder.get_params`; the model is never sent
through Dask, only its parameters, so a weights file must lie on a path every
worker sees), decodes and embeds its files, and writes the chunk's ``.npy``
into the store's shared ``rows/`` folder (temporary file, then rename). The
driver, holding the store's locks, checks and commits each returned chunk
(:meth:`featclust.store.FeatureStore.commit_written`) and records its files
in the folder's index; bad files come back as rows of ``bad_files.csv``.

Faults: a task whose worker dies is run again elsewhere (``retries=``, and
the scheduler's own rescheduling of a lost worker's tasks); a chunk whose
``.npy`` was not written whole is never committed (the next ``open`` removes
it). Tasks are idempotent: the same files give the same rows and, the chunk
being named by its content, the same file. Dask is imported only here and
only when a cluster is asked for; the driver never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .checks import check_int
from .decoding import iter_features
from .device import cpu_count, load_keras
from .embed import Embedder
from .errors import FeatclustError, StoreError, UsageError
from .images import BadFile, ImageFile
from .labelling import label_block
from .reduce import blocks
from .store import FeatureStore, write_chunk_npy

#: Times a task is tried again after an error on its worker.
RETRIES = 3
#: Tasks in flight per worker (the next ones wait, so the driver's memory
#: stays flat however many chunks there are).
TASKS_PER_WORKER = 2
INSTALL_HINT = "pip install 'featclust[dask]'"
#: Set for the workers of ``local:N``: the threads each may use (the CPUs shared out).
WORKER_THREADS_ENV = "FEATCLUST_WORKER_THREADS"


class DaskError(FeatclustError):
    """Dask is not installed, or the scheduler cannot be reached."""


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise DaskError(
            f"dask= needs Dask distributed, which is not installed: {INSTALL_HINT}"
        ) from None
    return distributed


def _local_workers(dask):
    text = dask[len("local:") :]
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1 or text.strip() != text:
        raise UsageError(
            f"dask={dask!r}: give local:N with N a positive number of worker "
            "processes, or a scheduler address such as tcp://host:8786"
        )
    return n


def check_dask(dask: Any) -> Any:
    """Refuse a ``dask=`` value that cannot work, before anything is done.

    Parameters
    ----------
    dask : distributed.Client, str or None
        ``None``, ``"local:N"``, a scheduler address, or a client.

    Raises
    ------
    UsageError
        If ``dask`` is none of these.
    """
    if dask is None:
        return None
    if isinstance(dask, str):
        if not dask.strip():
            raise UsageError("dask='' is empty; give local:N or a scheduler address")
        if dask.startswith("local:"):
            _local_workers(dask)
        return dask
    loaded = sys.modules.get("distributed")  # a client exists only once Dask is imported
    if loaded is not None and isinstance(dask, loaded.Client):
        return dask
    raise UsageError(
        f"dask={dask!r} must be a distributed.Client, a scheduler address, 'local:N' or None"
    )


@contextlib.contextmanager
def connect(dask: Any) -> Iterator[Any]:
    """A Dask client for ``dask``, closed at the end when it was made here.

    Parameters
    ----------
    dask : distributed.Client, str or None
        ``None``: yields ``None`` (and Dask is not imported). ``"local:N"``:
        a :class:`distributed.LocalCluster` of N worker processes with one
        Dask thread each, on this machine, closed at the end; the CPUs are
        shared out, so each worker's model (TensorFlow's op threads), decoding
        threads and BLAS use at most ``cpus // N`` threads. A scheduler address
        (``"tcp://host:8786"``): a client of that scheduler. A client: used
        as it is and not closed.

    Yields
    ------
    distributed.Client or None

    Raises
    ------
    DaskError
        If Dask is not installed, or the scheduler cannot be reached.
    UsageError
        If ``dask`` is not one of the above.
    """
    dask = check_dask(dask)
    if dask is None:
        yield None
        return
    if not isinstance(dask, str):
        yield dask
        return
    distributed = _import_distributed()
    if dask.startswith("local:"):
        n = _local_workers(dask)
        threads = str(max(1, cpu_count() // n))
        try:
            cluster = distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
                env={
                    WORKER_THREADS_ENV: threads,
                    "OMP_NUM_THREADS": threads,
                    "OPENBLAS_NUM_THREADS": threads,
                    "MKL_NUM_THREADS": threads,
                },
            )
        except Exception as e:
            raise DaskError(
                f"cannot start a local Dask cluster of {n} workers: {type(e).__name__}: {e}"
            ) from None
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    try:
        client = distributed.Client(dask, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DaskError(
            f"cannot reach the Dask scheduler at {dask!r} ({reason}); start it "
            "(dask scheduler) or check the address"
        ) from None
    try:
        yield client
    finally:
        client.close()


# -- on the workers ------------------------------------------------------------------------------

_EMBEDDERS: dict[str, Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def worker_threads() -> int | None:
    """The threads this worker may use (set by ``local:N``), or ``None``: no limit."""
    try:
        return max(1, int(os.environ[WORKER_THREADS_ENV]))
    except (KeyError, ValueError):
        return None


def worker_embedder(params: dict[str, Any]) -> Embedder:
    """The embedder of ``params`` in this process, built once and kept.

    On a worker of ``local:N`` the first call also limits TensorFlow's op
    threads to :func:`worker_threads` (before TensorFlow starts: later it
    cannot change), so N workers do not each use every core.
    """
    key = json.dumps(params, sort_keys=True)
    with _EMBEDDERS_LOCK:
        embedder = _EMBEDDERS.get(key)
        if embedder is None:
            if not _EMBEDDERS:
                _limit_tensorflow(worker_threads())
            embedder = _EMBEDDERS[key] = Embedder.from_params(params)
    return embedder


def _limit_tensorflow(threads):
    if threads is None:
        return
    _, tf = load_keras()
    if tf is None:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow was started in this process before
        pass


def embed_chunk(params: dict[str, Any], files: list[ImageFile], rows_dir: str) -> dict:
    """One task: decode and embed ``files``, write their chunk's ``.npy``.

    Parameters
    ----------
    params : dict
        :meth:`featclust.embed.Embedder.get_params` (weights as a path every
        worker sees).
    files : list of featclust.images.ImageFile
    rows_dir : str
        The store's shared ``rows/`` folder.

    Returns
    -------
    dict
        ``good``: list of (ImageFile, hash); ``bad``: list of BadFile;
        ``chunk``: ``(cid, hashes, digest)`` of the written ``.npy``, or
        ``None`` when no file decoded.
    """
    embedder = worker_embedder(params)
    good, bad, rows, seen = [], [], [], set()
    batches = iter_features(files, embedder, workers=worker_threads(), decoder="threads")
    for batch_good, feats, batch_bad in batches:
        good.extend(batch_good)
        bad.extend(batch_bad)
        for (_, h), vec in zip(batch_good, feats):
            if h not in seen:  # a row per content, as in one process
                seen.add(h)
                rows.append((h, vec))
    chunk = None
    if rows:
        hashes = [h for h, _ in rows]
        cid, digest = write_chunk_npy(rows_dir, hashes, np.stack([v for _, v in rows]))
        chunk = (cid, hashes, digest)
    return {"good": good, "bad": bad, "chunk": chunk}


# -- on the driver -------------------------------------------------------------------------------


def _n_workers(client):
    try:
        return max(1, len(client.scheduler_info()["workers"]))
    except Exception:
        return 1


def update_store(
    client: Any,
    st: FeatureStore,
    files: list[ImageFile],
    embedder: Embedder,
    progress: Callable[..., Any] | None = None,
    retries: int = RETRIES,
) -> tuple[list[ImageFile], list[BadFile], int]:
    """Fill the open store ``st`` through Dask: :meth:`FeatureStore.update` on a cluster.

    Parameters
    ----------
    client : distributed.Client
    st : featclust.store.FeatureStore
        Open (this process holds its lock).
    files : list of featclust.images.ImageFile
    embedder : featclust.embed.Embedder
        Only its parameters travel; a weights path is made absolute.
    progress : callable, optional
        As in :meth:`FeatureStore.update`.
    retries : int
        Times a failed task is tried again.

    Returns
    -------
    cached, bad, n_embedded
        As :meth:`FeatureStore.update` returns them.

    Raises
    ------
    StoreError
        If a chunk could not be written twice in a row.
    """
    from distributed import as_completed

    retries = check_int("retries", retries, low=0)
    params = embedder.get_params()
    params["precision"] = embedder.settings()["precision"]  # as the store's key says
    if params["weights"] not in ("imagenet", "none"):
        params["weights"] = os.path.abspath(params["weights"])
    cached, bad, missing = st.split(files)
    n_embedded = 0
    if not missing:
        return cached, bad, n_embedded
    chunks = [missing[i : i + st.chunk_size] for i in range(0, len(missing), st.chunk_size)]
    todo = list(reversed(chunks))
    window = TASKS_PER_WORKER * _n_workers(client)
    rows_dir = str(st.rows_dir)
    bar = progress("embedding", len(missing)) if progress else None
    tries = {}

    def submit(chunk, again=False):
        fut = client.submit(
            embed_chunk,
            params,
            chunk,
            rows_dir,
            retries=retries,
            pure=False,
            key=f"featclust-embed-{os.urandom(8).hex()}",
        )
        tries[fut.key] = (chunk, again)
        return fut

    running = as_completed([submit(todo.pop()) for _ in range(min(window, len(todo)))])
    try:
        for fut in running:
            chunk, again = tries.pop(fut.key)
            try:
                result = fut.result()
            except FeatclustError:
                raise
            except Exception as e:
                why = str(e).splitlines()[0] if str(e) else ""
                raise DaskError(
                    f"a Dask task embedding {len(chunk)} images failed "
                    f"({type(e).__name__}: {why}); the features finished so far "
                    "are kept in the store"
                ) from None
            by_path = {f.path: f for f in chunk}
            if result["chunk"] is not None:
                cid, hashes, digest = result["chunk"]
                if not st.commit_written(cid, hashes, digest, result["good"]):
                    if again:
                        raise StoreError(
                            f"feature store {str(st.features_dir)!r}: a chunk "
                            "written by a Dask worker was lost twice; is "
                            "rows/ on a filesystem every worker sees?"
                        )
                    running.add(submit(chunk, again=True))
                    continue
            st.add_bad(by_path, result["bad"])
            bad.extend(result["bad"])
            n_embedded += len(result["good"])
            if bar:
                bar.update(len(chunk))
            if todo:
                running.add(submit(todo.pop()))
    finally:
        for fut in list(getattr(running, "futures", ())):
            fut.cancel()
        if bar:
            bar.close()
    return cached, bad, n_embedded


def labeller(
    client: Any,
    retries: int = RETRIES,
) -> Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A ``labeller`` for :meth:`featclust.FeatureKMeans.fit` that labels rows as Dask tasks.

    The fitted model (centres and the reduction, no per-row data: a few KB)
    is sent to every worker once; each block of rows (see
    :func:`featclust.reduce.blocks`, about 16 MB) becomes one
    :func:`featclust.labelling.label_block` task. At most two blocks per
    worker are in flight, so the driver's memory stays flat in the number of
    rows besides the labels themselves.

    Parameters
    ----------
    client : distributed.Client

    Returns
    -------
    callable
        ``label(model, X) -> (labels, distances)``.
    """

    def label(model, X):
        labels = np.empty(len(X), np.int64)
        distances = np.empty(len(X), np.float32)
        shared = client.scatter(model, broadcast=True)
        limit = 2 * _n_workers(client)
        pending = deque()

        def collect():
            start, future = pending.popleft()
            got_labels, got_distances = future.result()
            labels[start : start + len(got_labels)] = got_labels
            distances[start : start + len(got_labels)] = got_distances

        start = 0
        for block in blocks(X):
            block = np.ascontiguousarray(block)
            pending.append(
                (start, client.submit(label_block, shared, block, pure=False, retries=retries))
            )
            start += len(block)
            while len(pending) >= limit:
                collect()
        while pending:
            collect()
        return labels, distances

    return label
