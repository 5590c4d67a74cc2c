"""featclust: find groups of similar images in a folder, without labels.

Every image is embedded with a pretrained VGG16 (features cached in a store),
the features are clustered with k-means, and the images are copied into one
folder per cluster. TensorFlow is imported only when images are embedded.
"""

__version__ = "0.1.0"

from .cluster import FeatureKMeans
from .errors import (FeatclustError, ModelMismatchError, NoImagesError, OutputError,
                     StoreError, StoreLockedError, UnsafeOutputError, UsageError, WeightsError)
from .estimator import ImageClusterer
from .assign import Assignment, assign_images
from .images import BadFile, ImageFile, scan
from .kscan import KScan
from .pipeline import EmbedResult, SortResult, demo, embed_folder, make_embedder, sort_folder
from .report import ReportResult, write_report

__all__ = [
    "__version__",
    "Assignment",
    "BadFile",
    "EmbedResult",
    "FeatclustError",
    "FeatureKMeans",
    "ImageClusterer",
    "ImageFile",
    "KScan",
    "ModelMismatchError",
    "NoImagesError",
    "OutputError",
    "ReportResult",
    "SortResult",
    "StoreError",
    "StoreLockedError",
    "UnsafeOutputError",
    "UsageError",
    "WeightsError",
    "assign_images",
    "demo",
    "embed_folder",
    "make_embedder",
    "scan",
    "sort_folder",
    "write_report",
]
