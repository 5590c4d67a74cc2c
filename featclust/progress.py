"""Progress bars for long steps, in a terminal and in a notebook.

The library's long steps (embedding, copying, the report) take a
``progress`` argument: ``True`` (always show), ``False`` (never), ``None``
(the default: show where a person is watching: a terminal, or a Jupyter
notebook, where ``tqdm.auto`` draws a widget when ipywidgets is installed,
``pip install "featclust[notebook]"``, and nothing, quietly, when it is not;
nothing when output goes to a file), or a ``tqdm`` class to use. Inside the
library it becomes a factory ``bar(description, total, unit="img")``
returning an object with ``update(n)`` and ``close()``, or ``None`` when
nothing is shown. A finished bar stays as one line with the count and the rate.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any

from tqdm import std

from .errors import UsageError

# In a notebook without ipywidgets, tqdm.auto warns "IProgress not found" and falls back
# to the terminal bar (which draws nothing there); with ipywidgets it warns that it is
# experimental. Neither is the user's to act on: bars need `pip install featclust[notebook]`.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", std.TqdmWarning)
    from tqdm import autonotebook
    from tqdm.auto import tqdm


def bar_factory(progress: Any = None) -> Callable[..., Any] | None:
    """Turn the public ``progress`` argument into a bar factory (or ``None``).

    Parameters
    ----------
    progress : bool, None, tqdm class or callable
        A callable that is not a tqdm class is taken to be a factory already.

    Returns
    -------
    callable or None
    """
    if progress is False:
        return None
    if progress is None or progress is True:
        disable: bool | None = False
        if progress is True:
            disable = False
        else:
            # A notebook's widget has no tty to look at; elsewhere, no bar frames in
            # a file that stderr was redirected to.
            disable = False if autonotebook.tqdm is not std.tqdm else None
        return _factory(tqdm, disable)
    if isinstance(progress, type):
        return _factory(progress, None)
    if callable(progress):
        return progress
    raise UsageError(f"progress={progress!r} must be True, False, None or a tqdm class")


def _factory(cls, disable):
    def make(description, total, unit="img"):
        return cls(
            desc=description,
            total=total,
            unit=unit,
            leave=True,
            disable=disable,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    return make
