"""Host arrays for kernels: ``to_numpy_any`` (the name kernel authors use for ``minicp.backend.to_numpy``,
the project's one host converter: NumPy, autograd boxes, CuPy, PyTorch, JAX, ``__dlpack__``,
``__array__``; bfloat16 -> float32) and 64-byte aligned arrays for the inputs a check hands a kernel.

NumPy's large arrays start 16 bytes into their memory; PyTorch's start on a 64-byte boundary, which its
vectorised CPU kernels expect, and run slower without (docs/benchmarks.md, "Measurements behind design
choices")."""

import numpy as onp

from minicp.backend import to_numpy as to_numpy_any

__all__ = ["ALIGN", "to_numpy_any", "aligned_empty", "aligned_copy"]

ALIGN = 64  # bytes: one cache line, one AVX-512 register


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` whose data start on an ``ALIGN``-byte
    boundary (a view into a slightly larger byte buffer)."""
    dtype = onp.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = int(onp.prod(shape, dtype=onp.int64)) * dtype.itemsize
    buffer = onp.empty(nbytes + ALIGN, onp.uint8)
    start = (-buffer.ctypes.data) % ALIGN
    return buffer[start : start + nbytes].view(dtype).reshape(shape)


def aligned_copy(a):
    """A C-contiguous, ``ALIGN``-byte aligned copy of the array ``a`` (same dtype and shape)."""
    a = onp.asarray(a)
    out = aligned_empty(a.shape, a.dtype)
    onp.copyto(out, a)
    return out
