"""The exceptions featclust raises.

Every error a user can cause derives from :class:`FeatclustError`; the CLI
turns them into one line on stderr and the exit code in ``exit_code``.
"""


class FeatclustError(Exception):
    """Base class of all featclust errors (exit code 2: a user error)."""

    exit_code = 2


class UsageError(FeatclustError, ValueError):
    """A parameter has a value that cannot work."""


class NoImagesError(FeatclustError):
    """The image folder holds no readable image."""


class UnsafeOutputError(FeatclustError):
    """The output folder would overlap the input or overwrite foreign files."""


class WeightsError(FeatclustError):
    """Model weights could not be found, downloaded or loaded (exit code 3)."""

    exit_code = 3


class StoreError(FeatclustError):
    """The feature store cannot be used (locked, unwritable, corrupted)."""

    exit_code = 4


class StoreLockedError(StoreError):
    """Another featclust process is writing the same feature store."""


class ModelMismatchError(FeatclustError):
    """A saved clustering model was made with other feature settings."""


class OutputError(FeatclustError):
    """Writing the output folder failed (disk full, no permission) (exit code 4)."""

    exit_code = 4


class OutputFormatError(FeatclustError):
    """An output folder's record (``featclust.json``) or a file beside it is of
    another format version, or damaged."""


class FeaturesUnavailableError(StoreError):
    """The features a sorted folder was made from are no longer in the store."""
