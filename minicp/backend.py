"""The array module every kernel computes with.

minicp's kernels never import numpy directly. They ask this module for ``xp`` (the array module) and
``special`` (erf, logsumexp) *inside* each function call, so that switching the backend takes effect
everywhere at once:

* ``"numpy"`` (default): ``autograd.numpy`` on the CPU. Calling it outside of tracing costs the same
  as plain NumPy, and inside ``autograd.grad`` it records the tape.
* ``"cupy"``: CuPy on an NVIDIA GPU. autograd cannot trace CuPy arrays, so on the GPU you get forward
  passes plus the hand-written VJPs (``minicp.ops.attend_vjp``), which are the same functions autograd
  uses on the CPU.

Why not ``from minicp.backend import xp``: that binds the module once at import time, and a later
``use_backend`` would never reach it. Write ``from minicp import backend as B`` and use ``B.xp``.
"""
import contextlib
import os

import numpy as _onp

BACKENDS = ("numpy", "cupy")

name = None      # "numpy" or "cupy"
xp = None        # the array module: autograd.numpy or cupy
special = None   # erf / logsumexp: autograd.scipy.special or cupyx.scipy.special


def use_backend(which="numpy"):
    """Make ``which`` ("numpy" or "cupy") the array module of every kernel.

    Raises ValueError for an unknown name and RuntimeError when CuPy is not installed or no GPU is
    usable (CuPy imports fine on machines without a GPU, so we ask the driver for a device count).
    """
    global name, xp, special
    if which not in BACKENDS:
        raise ValueError(f"backend {which!r} is not one of {BACKENDS}")
    if which == "numpy":
        import autograd.numpy as _xp
        import autograd.scipy.special as _sp
    else:
        try:
            import cupy as _xp
            import cupyx.scipy.special as _sp
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise RuntimeError("backend 'cupy' needs CuPy: pip install 'minicp[gpu]'") from e
        try:
            count = _xp.cuda.runtime.getDeviceCount()
        except Exception as e:  # pragma: no cover - depends on the machine
            raise RuntimeError(f"backend 'cupy': no usable GPU ({e})") from e
        if count < 1:  # pragma: no cover
            raise RuntimeError("backend 'cupy': CUDA reports no GPU")
    name, xp, special = which, _xp, _sp


@contextlib.contextmanager
def backend(which):
    """Temporarily switch the backend: ``with backend("cupy"): ...`` (restores the previous one)."""
    previous = name
    use_backend(which)
    try:
        yield xp
    finally:
        use_backend(previous)


def gpu_available():
    """True when CuPy imports *and* the driver reports at least one GPU."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def to_numpy(a):
    """A plain NumPy copy of ``a`` (CuPy array, autograd box, or anything array-like)."""
    a = getattr(a, "_value", a)           # unwrap an autograd ArrayBox
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    return _onp.asarray(a)


def asarray(a, dtype=None):
    """Move host data to the current backend (``cupy.asarray`` on the GPU)."""
    return xp.asarray(a, dtype=dtype)


use_backend(os.environ.get("MINICP_BACKEND", "numpy"))
