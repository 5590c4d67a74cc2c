"""The feature store: features found by the image's content, never served stale.

A sub-package; its public face is here. :mod:`~featclust.store.core` holds
the store's rules (:class:`FeatureStore`, and its guarantees),
:mod:`~featclust.store.files` the bytes on disk (layout, chunk files, index
files, locks), :mod:`~featclust.store.reading` the reading half of a
store, :mod:`~featclust.store.cleanup` :func:`gc`, :mod:`~featclust.store.copies`
embedding each distinct content once. Their private names
(``_CHUNK``, ``_Lock``, ...) cross only files of this package.

The store imports no model: only the base layer (errors, checks, fileio,
tables for ``bad_files.csv``) and :mod:`featclust.images`.
"""

from .cleanup import GcReport, gc
from .core import FeatureStore
from .files import (
    CHUNK_SIZE,
    LOCK_WAIT_S,
    MMAP_BYTES,
    STORE_FORMAT,
    check_root,
    default_root,
    features_path,
    settings_key,
    store_path,
    write_chunk_npy,
)
from .reading import RACY_NS

__all__ = [
    "CHUNK_SIZE",
    "LOCK_WAIT_S",
    "MMAP_BYTES",
    "RACY_NS",
    "STORE_FORMAT",
    "FeatureStore",
    "GcReport",
    "check_root",
    "default_root",
    "features_path",
    "gc",
    "settings_key",
    "store_path",
    "write_chunk_npy",
]
