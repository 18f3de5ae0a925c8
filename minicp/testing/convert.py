"""``to_numpy_any``: a host NumPy array from NumPy, CuPy, PyTorch, JAX, ... without importing them."""

import numpy as onp

__all__ = ["to_numpy_any"]


def to_numpy_any(x):
    """A host NumPy array from NumPy, CuPy, PyTorch, JAX, or anything with ``__dlpack__``/``__array__``.

    Order of attempts: NumPy arrays and scalars as they are; an autograd box is unwrapped; CuPy
    (``.get()``); ``.detach()`` if present (PyTorch tensors that require grad); ``numpy.from_dlpack``;
    on failure (another device, or a dtype NumPy lacks such as bfloat16) ``.cpu()`` and then
    ``.float()`` / ``.astype('float32')`` if present and try again; finally ``numpy.asarray`` (``__array__``).
    bfloat16 values come back as float32 (exactly). Nothing is imported. Returns a copy the caller owns.
    """
    x = getattr(x, "_value", x)  # autograd ArrayBox
    if isinstance(x, onp.ndarray):
        return _std(x.copy())
    if isinstance(x, (onp.generic, int, float, bool)):
        return onp.asarray(x)
    if type(x).__module__.startswith("cupy") and callable(getattr(x, "get", None)):
        return _std(x.get())
    if callable(getattr(x, "detach", None)):
        x = x.detach()  # torch: tensors that require grad
    errors = []
    a = _from_dlpack(x, errors)
    if a is None and callable(getattr(x, "cpu", None)):  # torch/JAX on an accelerator
        try:
            x = x.cpu()
            a = _from_dlpack(x, errors)
        except Exception as e:  # pragma: no cover - depends on the library
            errors.append(f"cpu(): {type(e).__name__}: {e}")
    if a is None:  # a dtype NumPy lacks, e.g. bfloat16
        a = _widened(x, errors)
    if a is not None:
        return _std(a)
    try:
        return _std(onp.array(x, copy=True))  # __array__
    except Exception as e:
        errors.append(f"__array__: {type(e).__name__}: {e}")
    raise ValueError(f"cannot convert {type(x).__name__} to a NumPy array ({'; '.join(errors)})")


def _widened(x, errors):
    widened = None
    try:
        if callable(getattr(x, "float", None)):
            widened = x.float()
        elif callable(getattr(x, "astype", None)):
            widened = x.astype("float32")
    except Exception as e:
        errors.append(f"float(): {type(e).__name__}: {e}")
    return None if widened is None else _from_dlpack(widened, errors)


def _from_dlpack(x, errors):
    if not hasattr(x, "__dlpack__"):
        return None
    try:
        return onp.array(onp.from_dlpack(x), copy=True)
    except Exception as e:
        errors.append(f"from_dlpack: {type(e).__name__}: {e}")
        return None


def _std(a):
    """Non-standard NumPy dtypes (ml_dtypes' bfloat16, kind 'V') -> float32."""
    if a.dtype.kind not in "biufc":
        try:
            return a.astype(onp.float32)
        except (TypeError, ValueError):
            raise ValueError(f"cannot convert an array of dtype {a.dtype} to float32") from None
    return a
