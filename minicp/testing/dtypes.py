"""dtype names, storage dtypes and exact rounding to bfloat16 / float16 / float32 without importing torch.

NumPy has no bfloat16: a bfloat16 array is stored as float32 holding exactly bfloat16 values.
"""

import numpy as onp

__all__ = [
    "DTYPES",
    "STORAGE",
    "EPS",
    "dtype_name",
    "check_dtype",
    "round_to_bfloat16",
    "to_storage",
    "is_bfloat16_exact",
]

DTYPES = ("float64", "float32", "bfloat16", "float16")
STORAGE = {"float64": "float64", "float32": "float32", "bfloat16": "float32", "float16": "float16"}
EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "bfloat16": 2.0**-7, "float16": 2.0**-10}  # ulp of 1

_ALIASES = {
    "f64": "float64",
    "double": "float64",
    "fp64": "float64",
    "f32": "float32",
    "float": "float32",
    "fp32": "float32",
    "single": "float32",
    "bf16": "bfloat16",
    "f16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def dtype_name(x):
    """Plain name ('float32', 'bfloat16', ...) of a dtype, a dtype-like string, or an array's dtype.

    Works for NumPy, CuPy, PyTorch (``torch.bfloat16`` -> 'bfloat16'), JAX/ml_dtypes without importing them.
    """
    dt = x if isinstance(x, (type, onp.dtype, str)) else getattr(x, "dtype", x)
    if isinstance(dt, str):
        name = dt
    else:
        try:
            name = onp.dtype(dt).name
        except TypeError:
            name = str(dt)
    name = name.lower().replace("torch.", "").replace("jnp.", "")
    return _ALIASES.get(name, name)


def check_dtype(dtype, name="dtype"):
    """The canonical name of one of ``DTYPES`` (ValueError naming ``name`` otherwise)."""
    canonical = dtype_name(dtype)
    if canonical not in DTYPES:
        raise ValueError(f"{name} must be one of {DTYPES}, got {dtype!r}")
    return canonical


def round_to_bfloat16(x):
    """float32 array holding ``x`` rounded to the nearest bfloat16 (ties to even; NaN stays NaN).

    float64 input is first rounded to float32 (as ``torch.tensor(x).to(torch.bfloat16)`` does), then
    the low 16 bits of the float32 pattern are rounded away: add 0x7FFF plus the lowest kept bit,
    clear the low half. Finite values beyond the bfloat16 range become +-inf, as in PyTorch.
    """
    x32 = onp.asarray(x, dtype=onp.float32)
    bits = x32.view(onp.uint32).astype(onp.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(onp.uint32)
    out = rounded.view(onp.float32)
    return onp.where(onp.isnan(x32), onp.float32("nan"), out).astype(onp.float32)


def to_storage(x, dtype):
    """``x`` rounded to ``dtype`` and stored as NumPy (bfloat16 -> float32 holding bfloat16 values)."""
    name = check_dtype(dtype)
    x = onp.asarray(x)
    if name == "bfloat16":
        return round_to_bfloat16(x)
    return x.astype(STORAGE[name])


def is_bfloat16_exact(a):
    """True when ``a`` is float32 and every value is a bfloat16 number (low 16 bits zero)."""
    return a.dtype == onp.float32 and not (a.view(onp.uint32) & 0xFFFF).any()
