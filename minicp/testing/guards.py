"""What a check refuses before it measures errors: an output of the wrong dtype (wider or narrower than the
case's, complex, not floating point), of the wrong shape or of the other layout; and a kernel that changed
the inputs it was handed (sha256 digests of their bytes before and after the call).

A bfloat16 case accepts a bfloat16 tensor, or a float32 array holding bfloat16 values (the storage form,
``minicp.testing.dtypes``); every other case its own dtype only. A float64 result in a float32 check is no
evidence about a float32 kernel, and a complex result would lose its imaginary part in the comparison.
"""

import concurrent.futures
import hashlib
import os

import numpy as onp

from minicp.testing.dtypes import is_bfloat16_exact

__all__ = ["WIDTH", "digest", "digests", "combined_digest", "output_problem"]

WIDTH = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}  # bytes per element of each dtype


def digest(arrays, keys=None):
    """sha256 hex digest of ``arrays`` (name -> array) over ``keys`` in order (default: every name): each
    name, shape and dtype, then its bytes in C order. Any changed value, any permutation, any other shape or
    dtype gives another digest. About 1.7 GB/s on one core with SHA extensions; the bytes are not copied
    when the array is C-contiguous."""
    h = hashlib.sha256()
    for key in arrays if keys is None else keys:
        a = onp.ascontiguousarray(arrays[key])
        h.update(f"{key}{a.shape}{a.dtype.str}".encode())
        h.update(memoryview(a.reshape(-1).view(onp.uint8)))
    return h.hexdigest()


def digests(arrays, keys):
    """{key: ``digest`` of that array alone}, the arrays hashed side by side in threads (hashlib releases the
    GIL on large buffers)."""
    keys = list(keys)
    with concurrent.futures.ThreadPoolExecutor(max(1, min(len(keys), os.cpu_count() or 1))) as pool:
        return dict(zip(keys, pool.map(lambda key: digest({key: arrays[key]}), keys)))


def combined_digest(arrays, keys=None):
    """sha256 hex digest of the ``digests`` of ``arrays`` over ``keys`` (default: every name, sorted): each
    array hashed on its own thread, then their names and digests hashed in order. As sensitive as
    ``digest`` to any change, and faster on several cores (another value than ``digest``'s)."""
    keys = sorted(arrays) if keys is None else list(keys)
    parts = digests(arrays, keys)
    return hashlib.sha256("".join(f"{key}:{parts[key]};" for key in keys).encode()).hexdigest()


def _swap(shape):
    return (shape[0], shape[2], shape[1], *shape[3:]) if len(shape) >= 3 else shape


def output_problem(name, actual_dtype, got, expected_shape, dtype, layout="bhnd"):
    """A message saying why ``got`` (a NumPy array already in the (b, h, rows, d) order; ``actual_dtype`` the
    dtype name of what the kernel returned, before any conversion) cannot be judged against a case of
    ``dtype`` whose tensor has ``expected_shape``; None when it can."""
    if got.dtype.kind == "c" or actual_dtype.startswith("complex"):
        return f"{name}: dtype {actual_dtype} is complex; a kernel returns real {dtype} values"
    if actual_dtype not in WIDTH:
        return f"{name}: dtype {actual_dtype} is not a floating-point dtype; the case is {dtype}"
    if actual_dtype != dtype and not (dtype == "bfloat16" and actual_dtype == "float32" and is_bfloat16_exact(got)):
        width, wanted = WIDTH[actual_dtype], WIDTH[dtype]
        relation = "wider than" if width > wanted else "narrower than" if width < wanted else "not"
        held = " holding values that are not bfloat16 numbers" if dtype == "bfloat16" and width == 4 else ""
        also = " (or float32 holding bfloat16 values)" if dtype == "bfloat16" else ""
        return (
            f"{name}: dtype {actual_dtype}{held} is {relation} the case's {dtype}; a {dtype} kernel returns "
            f"{dtype}{also}, so that its own rounding is what is judged"
        )
    if tuple(got.shape) != tuple(expected_shape):
        other = "bnhd" if layout == "bhnd" else "bhnd"
        show = (lambda s: tuple(s)) if layout == "bhnd" else _swap
        if tuple(got.shape) == _swap(tuple(expected_shape)):
            return (
                f"{name}: shape {show(got.shape)} is the {other} layout of the expected {show(expected_shape)}: "
                f"pass layout={other!r}, or return the {layout} layout"
            )
        return f"{name}: shape mismatch: actual {show(got.shape)} vs expected {show(expected_shape)} ({layout} layout)"
    return None
