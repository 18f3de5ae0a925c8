"""Array modules for the checks: NumPy on the host, CuPy on an NVIDIA GPU, with the same code for both.

A check computes its reference, floors and verdicts with the module ``xp`` of the arrays it holds: NumPy
on the host, CuPy when the kernel's tensors live on a GPU (``minicp.testing.device``). Everything here
takes ``xp`` (or infers it from an array) and never imports CuPy unless a GPU check asks for it.

Rounding to a narrower dtype, computed in the array's own module:

* bfloat16: the float32 bit pattern rounded to its upper 16 bits, ties to even (``round_to_bfloat16``);
  on CuPy one fused elementwise kernel does the same integer arithmetic;
* float16: a cast there and back;
* TF32 (the 10-bit mantissa tensor cores read from float32 operands): the low 13 bits of the float32
  pattern cleared, i.e. truncated toward zero, the larger of the errors hardware conversions make.
"""

import numpy as onp

from minicp.testing.dtypes import round_to_bfloat16

__all__ = ["module_of", "is_numpy", "cupy_module", "to_host", "rounder", "operand_rounder", "as_strided"]

_CUPY = {}


def cupy_module():
    """CuPy, imported on first use (RuntimeError naming what is missing when it cannot be used)."""
    if "cupy" not in _CUPY:
        try:
            import cupy
        except ImportError as e:
            raise RuntimeError("a GPU check needs CuPy (pip install cupy-cuda12x or cupy-cuda13x)") from e
        _CUPY["cupy"] = cupy
    return _CUPY["cupy"]


def module_of(x):
    """numpy, or cupy for a CuPy array (CuPy is not imported for anything else: an array of it means the
    caller has imported it already)."""
    if type(x).__module__.split(".")[0] == "cupy":
        return cupy_module()
    return _CUPY["cupy"] if "cupy" in _CUPY and isinstance(x, _CUPY["cupy"].ndarray) else onp


def is_numpy(xp):
    return xp is onp


def to_host(x):
    """A NumPy array of ``x`` (a CuPy array copied to the host; NumPy and scalars as they are)."""
    if not is_numpy(module_of(x)):
        return x.get()
    return onp.asarray(x)


def as_strided(xp, x, shape, strides):
    """A writeable strided view of ``x`` (strides in bytes) in its own module."""
    if is_numpy(xp):
        return onp.lib.stride_tricks.as_strided(x, shape, strides, writeable=True)
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


_KERNELS = {}


def _elementwise(name, body):
    """A CuPy elementwise kernel float32 x -> float32 y with ``body`` (CUDA C), built once."""
    if name not in _KERNELS:
        _KERNELS[name] = cupy_module().ElementwiseKernel("float32 x", "float32 y", body, name)
    return _KERNELS[name]


_BF16_BODY = (
    "unsigned int b = __float_as_uint(x);"
    "y = (x != x) ? x : __uint_as_float((b + 0x7FFFu + ((b >> 16) & 1u)) & 0xFFFF0000u);"
)
_TF32_BODY = "y = (x != x) ? x : __uint_as_float(__float_as_uint(x) & 0xFFFFE000u);"


def _round_bf16(xp):
    if is_numpy(xp):
        return round_to_bfloat16
    kernel = _elementwise("minicp_round_bf16", _BF16_BODY)
    return lambda x: kernel(xp.asarray(x, dtype=xp.float32))


def _round_tf32(xp):
    if is_numpy(xp):

        def tf32(x):
            x32 = onp.array(x, dtype=onp.float32)
            bits = x32.view(onp.uint32)
            finite = onp.isfinite(x32)
            bits[finite] &= onp.uint32(0xFFFFE000)
            return x32

        return tf32
    kernel = _elementwise("minicp_round_tf32", _TF32_BODY)
    return lambda x: kernel(xp.asarray(x, dtype=xp.float32))


def rounder(dtype, xp=onp):
    """``rnd(x)``: x rounded to ``dtype`` ("float64", "float32", "bfloat16", "float16") and returned in the
    arithmetic dtype of a plain implementation in that dtype (float64 for float64, float32 otherwise:
    float16 and bfloat16 values carried in float32, the way PyTorch's kernels accumulate them)."""
    if dtype == "float64":
        return lambda x: xp.asarray(x, dtype=xp.float64)
    if dtype == "float32":
        return lambda x: xp.asarray(x, dtype=xp.float32)
    if dtype == "float16":
        return lambda x: xp.asarray(x, dtype=xp.float16).astype(xp.float32)
    if dtype == "bfloat16":
        return _round_bf16(xp)
    raise ValueError(f"dtype must be float64, float32, bfloat16 or float16, got {dtype!r}")


def operand_rounder(precision, xp=onp):
    """The rounding a product applies to its float32 operands: None (exact) or ``"tf32"`` (truncated to
    TF32's 10-bit mantissa)."""
    if precision is None:
        return None
    if precision == "tf32":
        return _round_tf32(xp)
    raise ValueError(f"precision must be None or 'tf32', got {precision!r}")
