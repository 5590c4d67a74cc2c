"""Checking parameter values, one way for the whole package.

Every message names the parameter and the value received, as scikit-learn's
do. Library messages name Python parameters, never command-line flags.
"""

from __future__ import annotations

import numbers

from .errors import UsageError


def check_int(name, value, low=1, high=None, none_ok=False):
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
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
            or (low is not None and value < low) or (high is not None and value > high)):
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


def check_float(name, value, low=None, high=None):
    """Return ``value`` as a float within ``[low, high]``, or raise :class:`UsageError`."""
    if (not isinstance(value, numbers.Real) or isinstance(value, bool) or value != value
            or (low is not None and value < low) or (high is not None and value > high)):
        bounds = (f" between {low:g} and {high:g}" if low is not None and high is not None
                  else f" of at least {low:g}" if low is not None
                  else f" of at most {high:g}" if high is not None else "")
        raise UsageError(f"{name}={value!r} must be a number{bounds}")
    return float(value)


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``, or raise :class:`UsageError`."""
    if not isinstance(value, (str, bool, type(None))) or value not in choices:
        raise UsageError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")
    return value


def check_bool(name, value):
    """Return ``value`` if it is ``True`` or ``False``, or raise :class:`UsageError`."""
    if not isinstance(value, bool):
        raise UsageError(f"{name}={value!r} must be True or False")
    return value


#: Seeds numpy and scikit-learn accept as ``random_state``.
MAX_SEED = 2 ** 32 - 1


def check_random_state(name, value):
    """Return an int seed in ``0 .. 2**32 - 1``, or raise :class:`UsageError`.

    featclust's runs are reproducible: ``None`` and generator objects are not
    accepted.
    """
    return check_int(name, value, low=0, high=MAX_SEED)
