"""featclust: find groups of similar images in a folder, without labels.

Every image is embedded with a pretrained VGG16 (features cached in a store),
the features are clustered with k-means, and the images are copied into one
folder per cluster. TensorFlow is imported only when images are embedded.

``__all__`` is what a user imports: the estimators, the jobs (one function
per command) and their results, the sorted folder read back, and the errors
worth catching (all derive from :class:`FeatclustError`; the rest of the
family is in :mod:`featclust.errors`).

Each name is imported from its module on first use (``_DEFINED_IN``), so
``import featclust`` (and the console script's ``--help``, and a Ctrl-C
while starting) loads none of the library, scikit-learn included.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from ._version import __version__

#: The module that defines each public name.
_DEFINED_IN = {
    "AssignResult": "assign",
    "PlaceResult": "assign",
    "assign_images": "assign",
    "place_images": "assign",
    "FeatureKMeans": "cluster",
    "ScanResult": "clusterjobs",
    "SortResult": "clusterjobs",
    "scan_folder": "clusterjobs",
    "sort_folder": "clusterjobs",
    "demo": "demo",
    "Embedder": "embed",
    "FeatclustError": "errors",
    "ModelMismatchError": "errors",
    "NoImagesError": "errors",
    "UsageError": "errors",
    "WeightsError": "errors",
    "ImageClusterer": "estimator",
    "KScan": "kscan",
    "SortedFolder": "output",
    "open_sorted": "output",
    "EmbedInputsResult": "pipeline",
    "EmbedResult": "pipeline",
    "embed_folder": "pipeline",
    "embed_inputs": "pipeline",
    "ReportResult": "report",
    "write_report": "report",
    "DuplicatesResult": "similarity",
    "SimilarResult": "similarity",
    "find_duplicates": "similarity",
    "similar_images": "similarity",
}


def __getattr__(name: str) -> Any:
    if name not in _DEFINED_IN:
        raise AttributeError(f"module 'featclust' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_DEFINED_IN[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_DEFINED_IN))


class _Package(types.ModuleType):
    """The package's type: a submodule loaded later never hides the public name it
    shares (``featclust.demo`` stays the job, as with an eager import)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in _DEFINED_IN:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "AssignResult",
    "DuplicatesResult",
    "EmbedInputsResult",
    "EmbedResult",
    "Embedder",
    "FeatclustError",
    "FeatureKMeans",
    "ImageClusterer",
    "KScan",
    "ModelMismatchError",
    "NoImagesError",
    "PlaceResult",
    "ReportResult",
    "ScanResult",
    "SimilarResult",
    "SortResult",
    "SortedFolder",
    "UsageError",
    "WeightsError",
    "__version__",
    "assign_images",
    "demo",
    "embed_folder",
    "embed_inputs",
    "find_duplicates",
    "open_sorted",
    "place_images",
    "scan_folder",
    "similar_images",
    "sort_folder",
    "write_report",
]
