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
import os
import stat
import sys

import numpy as np

__all__ = [
    "positive_int",
    "nonnegative_int",
    "integer",
    "boolean",
    "real",
    "choice",
    "half_segment_from",
    "finite_array",
    "float_dtype",
    "bounded",
    "regular_file",
    "finite_result",
    "NonFiniteError",
    "MAX_WORK",
    "MAX_PARAMS",
    "MAX_BATCH",
    "MAX_ACTIVATION_BYTES",
    "MAX_GENERATED_TOKENS",
    "MAX_SCORE_ENTRIES",
    "MAX_STEPS",
]

# The largest request of elementary work an entry point accepts without a limit of its own (mask entries,
# generated tokens x sequence length; 32 x for the dense receptive field): about a minute on one core. A request above
# it is a typo (layers=10**9) far more often than a plan, and it would otherwise hang or exhaust memory.
MAX_WORK = 2**31

# Bounds of the model and training entry points (docs/inputs.md#bounded-work). Each is read when a request is
# checked, so assigning a larger value here (minicp.validate.MAX_PARAMS = 2**31) raises it for the session.
MAX_PARAMS = 2**30  # init_params: parameters of a config (4 GiB in float32)
MAX_BATCH = 2**16  # rows in one forward / loss / gradient call, and per optimiser step (batch x grad_accum)
MAX_ACTIVATION_BYTES = 2**34  # 16 GiB: estimated activations of forward / loss / value_and_grad / attention
MAX_GENERATED_TOKENS = 2**16  # generate: max_new_tokens x prompts in one call
MAX_SCORE_ENTRIES = 2**36  # minicp.testing: score entries the float64 reference of one case computes
MAX_STEPS = 10**9  # TrainConfig: optimiser steps


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


def finite_array(name, array, xp=np):
    """Raise a ValueError naming ``name`` and the first non-finite entry (NaN or +-inf) of ``array``.

    ``xp`` is the array's module (NumPy by default; CuPy arrays need ``xp=cupy``). Returns ``array``."""
    bad = ~xp.isfinite(array)
    if bool(bad.any()):
        flat = int(xp.argmax(bad.reshape(-1)))
        index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
        value = array[index] if index else array[()]
        raise ValueError(
            f"{name} must be finite, got {float(value)!r} at index {index} (of shape {tuple(array.shape)}); "
            f"minicp refuses NaN and inf inputs (docs/inputs.md)"
        )
    return array


def float_dtype(name, dtype, options=("float32", "float64")):
    """``dtype`` as its NumPy name if it is one of ``options`` (names or NumPy dtypes; bools, ints refused)."""
    try:
        resolved = np.dtype(dtype).name if not isinstance(dtype, bool) and dtype is not None else None
    except TypeError:
        resolved = None
    if resolved not in options:
        raise ValueError(f"{name} must be {' or '.join(map(repr, options))}, got {dtype!r}")
    return resolved


def bounded(name, size, what="work", *, limit_name="MAX_WORK", factor=1, advice=""):
    """``size`` if it is at most the limit; otherwise a ValueError with the computed size, so absurd
    requests fail at once instead of hanging. The limit is ``factor`` times the module attribute
    ``limit_name`` (a name of this module, or a dotted "minicp.module.NAME"), read now, so that assigning
    the attribute raises it; the message names it and says how to raise it (after ``advice``, e.g. "use a
    smaller batch")."""
    where, _, attr = limit_name.rpartition(".")
    where = where or __name__
    limit = getattr(sys.modules[where], attr) * factor
    if size > limit:
        times = f"{factor} x " if factor != 1 else ""
        how = f" ({times}{attr}); {advice + ', or ' if advice else ''}raise {where}.{attr} to allow it"
        raise ValueError(f"{name}: this request needs {size:,} units of {what}, more than the limit of {limit:,}{how}")
    return size


def regular_file(name, path):
    """``path`` (as str) if it names an existing regular file (not a FIFO, device or directory) that can be
    opened for reading; otherwise a ValueError naming ``name``. FIFOs would block a reader forever."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__} {path!r}")
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ValueError(f"{name} {path!r} does not exist") from None
    except OSError as e:
        raise ValueError(f"{name} {path!r} cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{name} {path!r} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise ValueError(f"{name} {path!r} is not a regular file (a FIFO, socket or device is refused)")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{name} {path!r} is not readable (permission denied)")
    return path


class NonFiniteError(ValueError, FloatingPointError):
    """A public function computed NaN or inf from finite inputs (an overflow); a ValueError, so the command line
    prints it as one line."""


_LARGEST = {"float16": "65504", "bfloat16": "3.4e38", "float32": "3.4e38", "float64": "1.8e308"}
_WIDER = {"float16": "float32", "bfloat16": "float32", "float32": "float64"}


def _array_module(a):
    """NumPy, or CuPy for a CuPy array (without importing CuPy here)."""
    root = type(a).__module__.split(".")[0]
    return sys.modules.get(root, np) if root == "cupy" else np


def finite_result(name, array, dtype=None):
    """``array`` if it is all finite; otherwise a NonFiniteError naming ``name``, the first NaN or inf (index and
    value) and the likely cause: an overflow in the computation's precision (``dtype``, default the array's
    own), with the wider one to use. Inputs are checked finite on entry, so a non-finite result came from
    finite inputs. Reads one flag from the device (a CuPy array's check waits for its computation)."""
    xp = _array_module(array)
    bad = ~xp.isfinite(array)
    if not bool(bad.any()):
        return array
    flat = int(xp.argmax(bad.reshape(-1)))
    index = tuple(int(i) for i in np.unravel_index(flat, array.shape))
    value = float(array[index] if index else array[()])
    kind = np.dtype(dtype if dtype is not None else array.dtype).name
    if kind in _WIDER:
        cause = f"an overflow in {kind} (largest finite value {_LARGEST[kind]}); use {_WIDER[kind]}"
    else:
        cause = f"an overflow in {kind}: the inputs are too large (weights grown by a too large learning rate?)"
    raise NonFiniteError(
        f"{name} is not finite: {value!r} at index {index} (of shape {tuple(array.shape)}), computed from finite "
        f"inputs; likely cause: {cause}"
    )
