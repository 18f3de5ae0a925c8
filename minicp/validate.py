"""Argument checks shared by every public entry point.

Each check returns the value in a canonical form (a Python ``int``, ``float`` or ``bool``) or raises a
``ValueError`` / ``TypeError`` whose message names the parameter and the rule it broke, e.g.

    >>> positive_int("head_dim", 0)
    Traceback (most recent call last):
    ValueError: head_dim must be a positive integer, got 0

The command line prints that message as it is (no traceback) and exits with status 2.
"""

import math
import numbers
import operator

__all__ = [
    "positive_int",
    "nonnegative_int",
    "integer",
    "boolean",
    "real",
    "choice",
    "half_segment_from",
]


def integer(name, value):
    """``value`` as a Python int (NumPy integers included; bools, floats and strings are refused)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got the bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def positive_int(name, value):
    """``value`` as a Python int if it is an integer >= 1; otherwise a ValueError naming ``name``."""
    try:
        value = integer(name, value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def nonnegative_int(name, value):
    """``value`` as a Python int if it is an integer >= 0."""
    try:
        value = integer(name, value)
    except TypeError:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}") from None
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def boolean(name, value):
    """``value`` if it is a real bool (or a NumPy bool); truthy strings such as "no" are refused."""
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_ without importing NumPy here
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")


def real(name, value, *, low=None, high=None, low_open=False, high_open=False, finite=True):
    """``value`` as a float, finite by default, within [low, high] (open ends where asked).

    bools are refused (``scale=True`` is not 1.0), and so are strings."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return value


def choice(name, value, options):
    """``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name} {value!r} is not one of {tuple(options)}")
    return value


def half_segment_from(segment=None, half_segment=None, *, required=True):
    """ECP's half segment m from either spelling: the paper's segment ``s`` (= 2m) or the official
    code's block ``half_segment`` (m). Both may be given if they agree; None when neither is given and
    ``required`` is False."""
    if segment is None and half_segment is None:
        if required:
            raise ValueError("give the ECP segment: segment=s (paper units, even) or half_segment=m (= s / 2)")
        return None
    if segment is not None:
        s = positive_int("segment", segment)
        if s % 2:
            raise ValueError(f"segment {s} must be even: the paper's segment s holds two half segments of m = s / 2")
        if half_segment is not None and positive_int("half_segment", half_segment) != s // 2:
            raise ValueError(
                f"segment {s} and half_segment {half_segment} disagree: segment must equal "
                f"2 * half_segment; give one of them"
            )
        return s // 2
    return positive_int("half_segment", half_segment)
