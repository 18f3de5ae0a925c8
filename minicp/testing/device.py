"""Checks on a GPU: where a case lives, its inputs drawn there, and the kernel's tensors read there.

``device=None`` (or ``"cpu"``) keeps a check on the host. ``device="cuda"`` (``"cuda:1"``, ...) draws the
inputs on that GPU (draw 3, below), hands them to the kernel as CuPy arrays (``array_fn`` turns them into
the kernel's tensors without a copy: ``torch.from_dlpack``), and computes the float64 reference, the floors
and the verdict's row statistics there with CuPy; only a few numbers per row come back to the host. The
kernel's results are read through DLPack (``device_array``): PyTorch, JAX, CuPy and anything with
``__dlpack__`` on the same GPU, bfloat16 included, without a copy to the host.

Draw 3 is counter-based, so the host (NumPy) and any GPU compute the same inputs: for tensor t (q, k, v,
dout = 0, 1, 2, 3) and pair j, two 64-bit words x = mix(key_t + i * GOLDEN) (i = 2j, 2j + 1, ``mix`` the
SplitMix64 finaliser, key_t = mix(seed * GOLDEN + (t + 1) * SECOND)) give uniforms u = ((x >> 11) + 1) 2^-53
in (0, 1], and Box-Muller gives the normals sqrt(-2 ln u1) (cos, sin)(2 pi u2) at 2j and 2j + 1, in float64,
then rounded to float32 and to the dtype. The integer part is exact everywhere; log, cos and sin may
differ in their last float64 bit between libraries, which changes a float32 input with a probability of
about 1e-9 per value. A check always computes its reference from the values it handed the kernel.
"""

import re
import sys

import numpy as onp

from minicp.testing.arrays import cupy_module
from minicp.testing.convert import to_numpy_any
from minicp.testing.dtypes import dtype_name, round_to_bfloat16

__all__ = ["check_device", "device_module", "draw_normals", "on_gpu", "device_array", "GOLDEN", "SECOND"]

GOLDEN, SECOND = 0x9E3779B97F4A7C15, 0xD1B54A32D192ED03
MASK64 = (1 << 64) - 1
DLPACK_GPU = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def check_device(device):
    """None for the host ("cpu" or None), else the canonical "cuda:<index>"; ValueError naming ``device``."""
    if device is None:
        return None
    text = str(device).strip().lower()
    if text == "cpu":
        return None
    match = re.fullmatch(r"(cuda|gpu)(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"device must be None, 'cpu', 'cuda' or 'cuda:<index>', got {device!r}")
    return f"cuda:{int(match.group(2) or 0)}"


def device_module(device):
    """CuPy with ``device`` ("cuda:<index>") made current; RuntimeError when no such GPU can be used."""
    cupy = cupy_module()
    index = int(device.split(":")[1])
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy imports fine where no driver is present
        raise RuntimeError(f"device {device!r}: CuPy finds no usable GPU ({type(e).__name__}: {e})") from None
    if index >= count:
        raise ValueError(f"device {device!r} does not exist: {count} GPU(s) visible")
    cupy.cuda.Device(index).use()
    return cupy


def _mix(x):
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = (x ^ (x >> onp.uint64(30))) * onp.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> onp.uint64(27))) * onp.uint64(0x94D049BB133111EB)
    return x ^ (x >> onp.uint64(31))


def _mix_int(x):
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def draw_normals(xp, seed, tensor, count):
    """``count`` standard normals (float64) of tensor number ``tensor`` of ``seed``, draw 3, in module ``xp``."""
    key = _mix_int((seed * GOLDEN + (tensor + 1) * SECOND) & MASK64)
    pairs = (count + 1) // 2
    i = xp.arange(2 * pairs, dtype=xp.uint64)
    with onp.errstate(over="ignore"):
        x = _mix(onp.uint64(key) + i * onp.uint64(GOLDEN))
    u = ((x >> onp.uint64(11)).astype(xp.float64) + 1.0) * 2.0**-53  # (0, 1]
    u1, u2 = u[0::2], u[1::2]
    radius = xp.sqrt(-2.0 * xp.log(u1))
    angle = (2.0 * onp.pi) * u2
    out = xp.empty(2 * pairs, dtype=xp.float64)
    out[0::2] = radius * xp.cos(angle)
    out[1::2] = radius * xp.sin(angle)
    return out[:count]


def on_gpu(x):
    """True when ``x`` is a tensor or array on a GPU (CuPy, PyTorch, JAX, any DLPack producer)."""
    if type(x).__module__.startswith("cupy"):
        return True
    dev = getattr(x, "device", None)
    if getattr(dev, "type", None) == "cuda":
        return True
    probe = getattr(x, "__dlpack_device__", None)
    if callable(probe):
        try:
            return int(probe()[0]) in DLPACK_GPU
        except Exception:
            return False
    return False


def _bits16(x):
    """The 16-bit patterns of a bfloat16 tensor, without a copy where the library allows it."""
    module = type(x).__module__.split(".")[0]
    if module == "torch" and callable(getattr(x, "view", None)):
        return x.contiguous().view(sys.modules["torch"].int16)
    if module in ("jax", "jaxlib"):
        jax = sys.modules["jax"]
        return jax.lax.bitcast_convert_type(x, jax.numpy.int16)
    return None


def device_array(x, xp):
    """``x`` (a kernel's result) as an array of ``xp`` (CuPy) on the current GPU, read through DLPack;
    bfloat16 comes back as float32 holding the same values. Arrays of another library or place are copied
    through the host."""
    if isinstance(x, xp.ndarray):
        return x
    x = x.detach() if callable(getattr(x, "detach", None)) else x
    if dtype_name(x) == "bfloat16" and on_gpu(x):
        bits = _bits16(x)
        if bits is not None:
            raw = xp.from_dlpack(bits).view(xp.uint16)
            return (raw.astype(xp.uint32) << 16).view(xp.float32)
    if on_gpu(x) and hasattr(x, "__dlpack__"):
        try:
            return xp.from_dlpack(x)
        except Exception:  # pragma: no cover - a producer CuPy cannot read: through the host
            pass
    host = to_numpy_any(x)
    if dtype_name(x) == "bfloat16":
        host = round_to_bfloat16(host)
    return xp.asarray(host)
