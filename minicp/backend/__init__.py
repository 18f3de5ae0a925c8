"""The array module every kernel computes with.

minicp's kernels never import numpy directly. They ask this module for ``xp`` (the array module) and
``special`` (erf, logsumexp) *inside* each function call, so that switching the backend takes effect
everywhere at once:

* ``"numpy"`` (default): ``autograd.numpy`` on the CPU. Calling it outside of tracing costs the same
  as plain NumPy, and inside ``autograd.grad`` it records the tape.
* ``"cupy"``: CuPy on an NVIDIA GPU. ``autograd_cupy`` registers CuPy arrays with autograd (boxes and a
  vector space), so ``autograd.grad`` of the model runs on the device.

Switch with ``use_backend("cupy")``, temporarily with ``with backend("cupy"): ...``, or for a whole
process with the environment variable ``MINICP_BACKEND=cupy``. ``to_numpy`` brings any result back to
the host (for plotting and comparisons); ``asarray`` moves host data to the current backend;
``constant(a)`` is a host constant (a mask, a RoPE table) on the current backend, copied to the GPU once.

``special`` on the CPU is ``autograd.scipy.special``, imported on first use: importing it loads most of
SciPy, which takes longer than importing the rest of minicp, and ``import minicp`` should not pay for it.

Why not ``from minicp.backend import xp``: that binds the module once at import time, and a later
``use_backend`` would never reach it. Write ``from minicp import backend as B`` and use ``B.xp``.

This module is the array module only. The fast engine's kernels (fused primitives, thread pool, CUDA
kernels) live in ``minicp.fast``.
"""

import collections
import contextlib
import os

import autograd.numpy as _autograd_numpy
import numpy as _onp

from minicp.backend import autograd_cupy

BACKENDS = ("numpy", "cupy")

name = None  # "numpy" or "cupy"
xp = None  # the array module: autograd.numpy, or cupy behind autograd_cupy.TracingModule
raw = None  # the plain array module (numpy or cupy), for untraced arrays inside autograd primitives
special = None  # erf / logsumexp: autograd.scipy.special (imported on first use) or cupyx.scipy.special

gpu_autograd = False  # CuPy only: autograd through CuPy arrays (the default on CuPy)


class _AutogradSpecial:
    """``autograd.scipy.special``, imported on its first use (it loads most of SciPy)."""

    def __getattr__(self, attr):
        import autograd.scipy.special as module  # lazy: most of SciPy, needed only for GELU's erf

        return getattr(module, attr)


def use_backend(which="numpy", *, autograd_on_gpu=None):
    """Make ``which`` ("numpy" or "cupy") the array module of every kernel.

    On CuPy, autograd runs on the GPU by default: CuPy arrays are registered with autograd, so
    ``autograd.grad(minicp.loss)`` and ``minicp.train`` run on the device (tests under ``tests/fast/``
    and ``tests/backend/`` marked ``gpu``). ``autograd_on_gpu=False`` (or ``MINICP_CUPY_AUTOGRAD=0``)
    gives plain CuPy instead: forward passes and ``ops.attend_vjp`` only, without the tracing wrapper.

    Raises ValueError for an unknown name and RuntimeError when CuPy is not installed or no GPU is
    usable (CuPy imports fine on machines without a GPU, so we ask the driver for a device count).
    The backend is left unchanged when it raises.
    """
    global name, xp, special, raw, gpu_autograd
    if which not in BACKENDS:
        raise ValueError(f"backend {which!r} is not one of {BACKENDS}")
    if which == "numpy":
        _xp, _sp, _raw = _autograd_numpy, _AutogradSpecial(), _onp
    else:
        try:
            import cupy as _xp
            import cupyx.scipy.special as _sp
        except ImportError as e:
            raise RuntimeError(
                "backend 'cupy' needs CuPy, which is not installed: "
                "pip install 'minicp[gpu]' (or cupy-cuda12x / cupy-cuda13x to match "
                "your CUDA driver)"
            ) from e
        try:
            count = _xp.cuda.runtime.getDeviceCount()
        except Exception as e:
            raise RuntimeError(
                f"backend 'cupy': CuPy is installed but no usable NVIDIA GPU was found "
                f"({type(e).__name__}: {e}); use backend 'numpy'"
            ) from e
        if count < 1:
            raise RuntimeError("backend 'cupy': CuPy is installed but CUDA reports no GPU; use backend 'numpy'")
        if autograd_on_gpu is None:
            autograd_on_gpu = os.environ.get("MINICP_CUPY_AUTOGRAD", "1") != "0"
        if not isinstance(autograd_on_gpu, bool):
            raise TypeError(f"autograd_on_gpu must be True or False, got {autograd_on_gpu!r}")
        _raw = _xp
        if autograd_on_gpu:
            _xp, _sp = autograd_cupy.install(_xp, _sp)  # autograd traces CuPy arrays through _xp and _sp
    if which != name:
        clear_cache()
    name, xp, special, raw = which, _xp, _sp, _raw
    gpu_autograd = which == "cupy" and bool(autograd_on_gpu)


@contextlib.contextmanager
def backend(which, *, autograd_on_gpu=None):
    """Temporarily switch the backend: ``with backend("cupy"): ...`` (restores the previous one)."""
    previous, previous_autograd = name, gpu_autograd
    use_backend(which, autograd_on_gpu=autograd_on_gpu)
    try:
        yield xp
    finally:
        use_backend(previous, autograd_on_gpu=previous_autograd if previous == "cupy" else None)


def gpu_available():
    """True when CuPy imports *and* the driver reports at least one GPU."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def to_numpy(a):
    """A host NumPy array the caller owns, from anything array-like: NumPy, an autograd box, CuPy,
    PyTorch (also on a GPU, also requiring grad), JAX, anything with ``__dlpack__`` or ``__array__``.

    The one host converter of the project. bfloat16 (and other dtypes NumPy lacks) come back as
    float32, exactly. Nothing is imported. Raises ValueError when no route works.
    """
    a = getattr(a, "_value", a)  # autograd ArrayBox
    if isinstance(a, _onp.ndarray):
        return _standard_dtype(a.copy())
    if isinstance(a, (_onp.generic, int, float, bool, complex, list, tuple)):
        return _onp.asarray(a)
    if type(a).__module__.startswith("cupy") and callable(getattr(a, "get", None)):
        return _standard_dtype(a.get())
    if callable(getattr(a, "detach", None)):
        a = a.detach()  # torch: tensors that require grad
    errors = []
    out = _from_dlpack(a, errors)
    if out is None and callable(getattr(a, "cpu", None)):  # torch / JAX on an accelerator
        try:
            a = a.cpu()
            out = _from_dlpack(a, errors)
        except Exception as e:  # pragma: no cover - depends on the library
            errors.append(f"cpu(): {type(e).__name__}: {e}")
    if out is None:  # a dtype NumPy lacks, e.g. bfloat16
        widened = None
        try:
            if callable(getattr(a, "float", None)):
                widened = a.float()
            elif callable(getattr(a, "astype", None)):
                widened = a.astype("float32")
        except Exception as e:
            errors.append(f"float(): {type(e).__name__}: {e}")
        if widened is not None:
            out = _from_dlpack(widened, errors)
    if out is not None:
        return _standard_dtype(out)
    try:
        return _standard_dtype(_onp.array(a, copy=True))  # __array__
    except Exception as e:
        errors.append(f"__array__: {type(e).__name__}: {e}")
    raise ValueError(f"cannot convert {type(a).__name__} to a NumPy array ({'; '.join(errors)})")


def _from_dlpack(a, errors):
    if not hasattr(a, "__dlpack__"):
        return None
    try:
        return _onp.array(_onp.from_dlpack(a), copy=True)
    except Exception as e:
        errors.append(f"from_dlpack: {type(e).__name__}: {e}")
        return None


def _standard_dtype(a):
    """Non-standard NumPy dtypes (ml_dtypes' bfloat16, kind 'V') -> float32."""
    if a.dtype.kind not in "biufc":
        try:
            return a.astype(_onp.float32)
        except (TypeError, ValueError):
            raise ValueError(f"cannot convert an array of dtype {a.dtype} to float32") from None
    return a


def asarray(a, dtype=None):
    """Move host data to the current backend (``cupy.asarray`` on the GPU)."""
    return xp.asarray(a, dtype=dtype)


# ----------------------------------------------------------------------------------------------------
# Host constants on the device
# ----------------------------------------------------------------------------------------------------

_CACHE_SIZE = 16
_constants = collections.OrderedDict()  # id(host array) -> (host array, backend array)


def constant(a):
    """The host array ``a`` (a mask, a table of constants) as an array of the current backend.

    NumPy: ``a`` itself. CuPy: a device copy; when ``a`` is read-only (``a.flags.writeable`` False,
    as ``ops.causal_mask`` returns) the copy is cached, keyed by identity, in a small LRU that keeps
    ``a`` alive, so repeated calls with the same mask cost no transfer.
    """
    if name == "numpy":
        return a
    if not isinstance(a, _onp.ndarray) or a.flags.writeable:
        return xp.asarray(a)
    key = id(a)
    hit = _constants.get(key)
    if hit is not None and hit[0] is a:
        _constants.move_to_end(key)
        return hit[1]
    dev = xp.asarray(a)
    _constants[key] = (a, dev)
    while len(_constants) > _CACHE_SIZE:
        _constants.popitem(last=False)
    return dev


def clear_cache():
    """Drop the cached device copies of host constants (frees their device memory)."""
    _constants.clear()


# ----------------------------------------------------------------------------------------------------
# Finiteness
# ----------------------------------------------------------------------------------------------------


def all_finite(arrays):
    """True when every entry of every array is finite. On CuPy one device-to-host read for all of them
    (a read per array would stall the GPU once each)."""
    if name == "cupy":
        return bool(all_finite_pending(arrays))
    return all(bool(_onp.isfinite(a).all()) for a in arrays)


def all_finite_pending(arrays):
    """CuPy: a 0-d device bool, True when every entry of every array is finite, without waiting for it
    (one concatenation per dtype, one isfinite, one reduction; ``bool()`` of it reads it back)."""
    by_dtype = {}
    for a in arrays:
        by_dtype.setdefault(a.dtype, []).append(raw.ravel(a))
    flags = [raw.isfinite(raw.concatenate(parts)).all() for parts in by_dtype.values()]
    return flags[0] if len(flags) == 1 else raw.stack(flags).all()


use_backend(os.environ.get("MINICP_BACKEND", "numpy"))
