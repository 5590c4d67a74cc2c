"""Progress bars for long steps, in a terminal and in a notebook.

The library's long steps (embedding, copying, the report) take a
``progress`` argument: ``True`` (always show), ``False`` (never), ``None``
(the default: show where a person is watching: a terminal, or a Jupyter
notebook, where ``tqdm.auto`` draws a widget; nothing when output goes to a
file), or a ``tqdm`` class to use. Inside the library it becomes a factory
``bar(description, total, unit="img")`` returning an object with
``update(n)`` and ``close()``, or ``None`` when nothing is shown. A finished
bar stays as one line with the count and the rate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tqdm import autonotebook, std
from tqdm.auto import tqdm

from .errors import UsageError


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
