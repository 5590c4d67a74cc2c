"""featclust: find groups of similar images in a folder, without labels.

Every image is embedded with a pretrained VGG16 (features cached in a store),
the features are clustered with k-means, and the images are copied into one
folder per cluster. TensorFlow is imported only when images are embedded.
"""

from ._version import __version__
from .assign import Assignment, assign_images
from .cluster import FeatureKMeans
from .demo import demo
from .embed import Embedder
from .errors import (FeatclustError, FeaturesUnavailableError, ModelMismatchError,
                     NoImagesError, OutputError, OutputFormatError, StoreError,
                     StoreLockedError, UnsafeOutputError, UsageError, WeightsError)
from .estimator import ImageClusterer
from .images import BadFile, ImageFile, scan
from .kscan import KScan
from .output import RunRecord, SortedFolder, open_sorted
from .pipeline import EmbedResult, SortResult, embed_folder, embed_inputs, sort_folder
from .reduce import Reducer
from .similarity import DuplicatesResult, SimilarImages, find_duplicates, similar_images
from .report import ReportResult, write_report

__all__ = [
    "__version__",
    "Assignment",
    "BadFile",
    "EmbedResult",
    "Embedder",
    "FeatclustError",
    "FeatureKMeans",
    "FeaturesUnavailableError",
    "ImageClusterer",
    "ImageFile",
    "KScan",
    "ModelMismatchError",
    "NoImagesError",
    "OutputError",
    "OutputFormatError",
    "DuplicatesResult",
    "Reducer",
    "ReportResult",
    "RunRecord",
    "SortResult",
    "SimilarImages",
    "SortedFolder",
    "StoreError",
    "StoreLockedError",
    "UnsafeOutputError",
    "UsageError",
    "WeightsError",
    "assign_images",
    "demo",
    "embed_folder",
    "embed_inputs",
    "find_duplicates",
    "open_sorted",
    "scan",
    "similar_images",
    "sort_folder",
    "write_report",
]
