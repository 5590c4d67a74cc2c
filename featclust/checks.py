"""Checking parameter values, one way for the whole package.

Every message names the parameter and the value received, as scikit-learn's
do. Library messages name Python parameters, never command-line flags.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import UsageError


def check_int(
    name: str, value: Any, low: int | None = 1, high: int | None = None, none_ok: bool = False
) -> Any:
    """Return ``value`` as an int, or raise :class:`UsageError`.

    Parameters
    ----------
    name : str
        The parameter's name, for the message.
    value : object
    low, high : int or None
        Inclusive bounds (``None``: unbounded).
    none_ok : bool
        Accept ``None`` (returned as is).
    """
    if value is None and none_ok:
        return None
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or (low is not None and int(value) < low)
        or (high is not None and int(value) > high)
    ):
        if low == 1 and high is None:
            wanted = "a positive integer"
        elif high is None:
            wanted = f"an integer of at least {low}"
        elif low is None:
            wanted = f"an integer of at most {high}"
        else:
            wanted = f"an integer from {low} to {high}"
        raise UsageError(f"{name}={value!r} must be {wanted}" + (" or None" if none_ok else ""))
    return int(value)


def check_float(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> float:
    """Return ``value`` as a float within ``[low, high]``, or raise :class:`UsageError`."""
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or value != value
        or (low is not None and float(value) < low)
        or (high is not None and float(value) > high)
    ):
        bounds = (
            f" between {low:g} and {high:g}"
            if low is not None and high is not None
            else f" of at least {low:g}"
            if low is not None
            else f" of at most {high:g}"
            if high is not None
            else ""
        )
        raise UsageError(f"{name}={value!r} must be a number{bounds}")
    return float(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, or raise :class:`UsageError`."""
    if not isinstance(value, (str, bool, type(None))) or value not in choices:
        raise UsageError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` if it is ``True`` or ``False``, or raise :class:`UsageError`."""
    if not isinstance(value, bool):
        raise UsageError(f"{name}={value!r} must be True or False")
    return value


#: Seeds numpy and scikit-learn accept as ``random_state``.
MAX_SEED = 2**32 - 1


def check_random_state(name: str, value: Any, seed: bool = True) -> Any:
    """Check a ``random_state`` as scikit-learn accepts it; return an int seed.

    Accepted, as :func:`sklearn.utils.check_random_state` does: an int from 0
    to ``2**32 - 1`` (the same result every time), ``None`` (numpy's global
    random state) or a :class:`numpy.random.RandomState` instance. featclust
    draws every random number of one fit from one int seed (its samples and
    scikit-learn's k-means and PCA), so:

    * an int is that seed;
    * ``None`` draws the seed from numpy's global random state;
    * a ``RandomState`` draws the seed from that generator (advancing it, so
      a second fit with the same instance differs, as in scikit-learn).

    Parameters
    ----------
    name : str
        The parameter's name, for the message.
    value : int, None or numpy.random.RandomState
    seed : bool, default True
        False: only check ``value`` and return it unchanged (no draw).

    Returns
    -------
    int
        The seed (``value`` itself when ``seed`` is False).

    Raises
    ------
    UsageError
        For anything else (a :class:`numpy.random.Generator` too, which
        scikit-learn does not accept).
    """
    if value is None or isinstance(value, np.random.RandomState):
        if not seed:
            return value
        draw = np.random.randint if value is None else value.randint
        return int(draw(0, MAX_SEED, dtype=np.int64))
    if (
        not isinstance(value, numbers.Integral)
        or isinstance(value, bool)
        or not (0 <= int(value) <= MAX_SEED)
    ):
        raise UsageError(
            f"{name}={value!r} must be an integer from 0 to {MAX_SEED}, None or "
            "a numpy.random.RandomState"
        )
    return int(value)
