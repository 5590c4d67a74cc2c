"""featclust: find groups of similar images in a folder, without labels.

Every image is embedded with a pretrained VGG16 (features cached in a store),
the features are clustered with k-means, and the images are copied into one
folder per cluster. TensorFlow is imported only when images are embedded.

``__all__`` is what a user imports: the estimators, the jobs (one function
per command) and their results, the sorted folder read back, and the errors
worth catching (all derive from :class:`FeatclustError`; the rest of the
family is in :mod:`featclust.errors`).
"""

from ._version import __version__
from .assign import AssignResult, PlaceResult, assign_images, place_images
from .cluster import FeatureKMeans
from .clusterjobs import ScanResult, SortResult, scan_folder, sort_folder
from .demo import demo
from .embed import Embedder
from .errors import (
    FeatclustError,
    ModelMismatchError,
    NoImagesError,
    UsageError,
    WeightsError,
)
from .estimator import ImageClusterer
from .kscan import KScan
from .output import SortedFolder, open_sorted
from .pipeline import EmbedInputsResult, EmbedResult, embed_folder, embed_inputs
from .report import ReportResult, write_report
from .similarity import DuplicatesResult, SimilarResult, find_duplicates, similar_images

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
