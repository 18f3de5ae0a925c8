"""The array module every kernel computes with.

minicp's kernels never import numpy directly. They ask this module for ``xp`` (the array module) and
``special`` (erf, logsumexp) *inside* each function call, so that switching the backend takes effect
everywhere at once:

* ``"numpy"`` (default): ``autograd.numpy`` on the CPU. Calling it outside of tracing costs the same
  as plain NumPy, and inside ``autograd.grad`` it records the tape.
* ``"cupy"``: CuPy on an NVIDIA GPU. autograd cannot trace CuPy arrays, so on the GPU you get forward
  passes plus the hand-written VJPs (``minicp.nn.ops.attend_vjp``), which are the same functions autograd
  uses on the CPU.

Switch with ``use_backend("cupy")``, temporarily with ``with backend("cupy"): ...``, or for a whole
process with the environment variable ``MINICP_BACKEND=cupy``. ``to_numpy`` brings any result back to
the host (for plotting and comparisons); ``asarray`` moves host data to the current backend.

Besides ``xp`` and ``special`` the backend provides two things the kernels use without knowing which
backend is active:

* ``constant(a)``: a host constant (a mask, a RoPE table) on the current backend. On the GPU a
  *read-only* host array is copied once and the device copy is reused (cached by identity; the cache
  holds the host array, so its id cannot be reused while cached). Writeable arrays are copied every
  time, because they may change.
* ``masked_softmax_(s, mask)``: softmax over the last axis of the score buffer ``s``, in place, with
  masked entries exactly 0. On NumPy it is the plain sequence of array operations; on CuPy one fused
  kernel (one read and one write of ``s`` instead of six passes), for float32 and float64, when the
  mask is None or its shape matches the trailing axes of ``s`` (otherwise the array operations).
* ``fused_rope(x, cos, sin, style)``: on CuPy, RoPE in one kernel (the array formula costs about ten
  passes over x); None elsewhere, and ``ops.rope`` then uses its array formula. Bit-identical results.

``fused_kernels = False`` turns both CuPy kernels off (for comparisons).

Why not ``from minicp.backend import xp``: that binds the module once at import time, and a later
``use_backend`` would never reach it. Write ``from minicp import backend as B`` and use ``B.xp``.
"""
import collections
import contextlib
import os
import re

import numpy as _onp

BACKENDS = ("numpy", "cupy")

name = None      # "numpy" or "cupy"
xp = None        # the array module: autograd.numpy or cupy
special = None   # erf / logsumexp: autograd.scipy.special or cupyx.scipy.special

fused_kernels = True     # CuPy only: use the fused softmax and RoPE kernels where they apply


def use_backend(which="numpy"):
    """Make ``which`` ("numpy" or "cupy") the array module of every kernel.

    Raises ValueError for an unknown name and RuntimeError when CuPy is not installed or no GPU is
    usable (CuPy imports fine on machines without a GPU, so we ask the driver for a device count).
    The backend is left unchanged when it raises.
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
        except ImportError as e:
            raise RuntimeError("backend 'cupy' needs CuPy, which is not installed: "
                               "pip install 'minicp[gpu]' (or cupy-cuda12x / cupy-cuda13x to match "
                               "your CUDA driver)") from e
        try:
            count = _xp.cuda.runtime.getDeviceCount()
        except Exception as e:
            raise RuntimeError(f"backend 'cupy': CuPy is installed but no usable NVIDIA GPU was found "
                               f"({type(e).__name__}: {e}); use backend 'numpy'") from e
        if count < 1:
            raise RuntimeError("backend 'cupy': CuPy is installed but CUDA reports no GPU; use backend 'numpy'")
    if which != name:
        clear_cache()
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


# ----------------------------------------------------------------------------------------------------
# Host constants on the device
# ----------------------------------------------------------------------------------------------------

_CACHE_SIZE = 16
_constants = collections.OrderedDict()   # id(host array) -> (host array, backend array)


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
# Fused kernels: masked softmax (in place) and RoPE
# ----------------------------------------------------------------------------------------------------

def masked_softmax_(s, mask=None):
    """Softmax of ``s`` over its last axis, **in place**; entries where ``mask`` is False become 0.

    s: a plain (untraced), writeable, floating array of the current backend (..., i, j).
    mask: None or a boolean array of the current backend, broadcastable to s, True = visible.
    Returns s. A row whose entries are all masked becomes NaN on both backends (as exp(-inf - -inf)).
    """
    if name == "cupy" and fused_kernels:
        done = _cupy_fused_softmax(s, mask)
        if done is not None:
            return done
    if mask is not None:
        xp.copyto(s, -xp.inf, where=xp.logical_not(mask))
    s -= xp.max(s, axis=-1, keepdims=True)               # stable: the row max is a visible entry
    xp.exp(s, out=s)
    s /= xp.sum(s, axis=-1, keepdims=True)
    return s


def fused_rope(x, cos, sin, style):
    """RoPE of x (..., n, d) by the tables cos, sin (n, d//2) in one CuPy kernel, or None.

    None (the caller then uses its array formula) on NumPy, under autograd tracing, with
    ``fused_kernels = False``, or for dtypes other than float32/float64. Same arithmetic as
    ``ops.rope``, each product and sum rounded separately (no FMA contraction), so the numbers equal
    the array formula's bit for bit:
        interleaved, pair (2i, 2i+1):  (x_2i cos - x_2i+1 sin,  x_2i+1 cos + x_2i sin); odd last channel kept
        halves, pair (i, i + d/2):     (x_i cos - x_i+d/2 sin,  x_i+d/2 cos + x_i sin)
    The kernel runs over the pairs: the two members of each pair are strided views of x (and of the
    contiguous output), so x may itself be a strided view (the heads of a projection).
    """
    if name != "cupy" or not fused_kernels or not isinstance(x, xp.ndarray) or x.dtype.name not in _KERNEL_TYPES:
        return None
    *lead, n, d = x.shape
    half = d // 2
    if x.size == 0 or half == 0 or tuple(cos.shape) != (n, half) or tuple(sin.shape) != (n, half):
        return None
    cos, sin = cos.astype(x.dtype, copy=False), sin.astype(x.dtype, copy=False)
    y = xp.empty(x.shape, dtype=x.dtype)
    if style == "halves":
        first, second, y_first, y_second = x[..., :half], x[..., half:], y[..., :half], y[..., half:]
    else:
        first, second = x[..., 0:2 * half:2], x[..., 1:2 * half:2]
        y_first, y_second = y[..., 0:2 * half:2], y[..., 1:2 * half:2]
        if d % 2:
            y[..., -1] = x[..., -1]                       # odd last channel: not rotated
    _rope_kernel()(first, second, cos, sin, y_first, y_second)
    return y


_KERNEL_TYPES = {
    "float32": dict(T="float", EXP="expf", NEG_INF_VALUE="__int_as_float(0xff800000)",
                    NAN_VALUE="__int_as_float(0x7fc00000)"),
    "float64": dict(T="double", EXP="exp", NEG_INF_VALUE="__longlong_as_double((long long)0xfff0000000000000ULL)",
                    NAN_VALUE="__longlong_as_double((long long)0x7ff8000000000000ULL)"),
}

# Rows of up to 1024 entries (ECP's m x 2m blocks, LongLoRA's groups): one warp per row, the row in
# registers (ITEMS entries per lane, loads unrolled), warp-shuffle max and sum, one read and one
# write of s. Masked entries are read as -inf, so exp(-inf - max) = 0, and a fully masked row gives
# exp(-inf - -inf) = NaN, exactly as the array formula.
_SOFTMAX_WARP_SOURCE = r"""
extern "C" __global__ void KERNEL_NAME(
        T* __restrict__ s, const unsigned char* __restrict__ mask, const int has_mask,
        const long long mask_rows, const int J, const long long rows)
{
    const T NEG_INF = NEG_INF_VALUE;
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    T* p = s + row * (long long)J;
    const unsigned char* mk = has_mask ? mask + (row % mask_rows) * (long long)J : 0;
    T v[ITEMS];
    T m = NEG_INF;
    #pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        const int j = lane + 32 * i;
        const T x = j < J ? p[j] : NEG_INF;
        const bool visible = j < J && (!mk || mk[j]);
        v[i] = visible ? x : NEG_INF;
        m = v[i] > m ? v[i] : m;
    }
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const T m2 = __shfl_xor_sync(0xffffffffu, m, off);
        m = m2 > m ? m2 : m;
    }
    T l = 0;
    #pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        v[i] = EXP(v[i] - m);
        l += v[i];
    }
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    #pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        const int j = lane + 32 * i;
        if (j < J) p[j] = v[i] / l;
    }
}
"""

# The same for float32 rows whose length is a multiple of 128 (ECP's 256 x 512 blocks): 16-byte
# loads and stores (float4, and uchar4 for the mask), ITEMS / 4 of them per lane.
_SOFTMAX_WARP_VEC4_SOURCE = r"""
extern "C" __global__ void KERNEL_NAME(
        float* __restrict__ s, const unsigned char* __restrict__ mask, const int has_mask,
        const long long mask_rows, const int J, const long long rows)
{
    const float NEG_INF = NEG_INF_VALUE;
    const int lane = threadIdx.x & 31;
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    float4* p = reinterpret_cast<float4*>(s + row * (long long)J);
    const uchar4* mk = has_mask ? reinterpret_cast<const uchar4*>(mask + (row % mask_rows) * (long long)J) : 0;
    float v[ITEMS];
    float m = NEG_INF;
    #pragma unroll
    for (int t = 0; t < ITEMS / 4; ++t) {
        const float4 x = p[lane + 32 * t];
        const uchar4 b = mk ? mk[lane + 32 * t] : make_uchar4(1, 1, 1, 1);
        v[4 * t + 0] = b.x ? x.x : NEG_INF;
        v[4 * t + 1] = b.y ? x.y : NEG_INF;
        v[4 * t + 2] = b.z ? x.z : NEG_INF;
        v[4 * t + 3] = b.w ? x.w : NEG_INF;
    }
    #pragma unroll
    for (int i = 0; i < ITEMS; ++i) m = v[i] > m ? v[i] : m;
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, off);
        m = m2 > m ? m2 : m;
    }
    float l = 0;
    #pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
        v[i] = expf(v[i] - m);
        l += v[i];
    }
    #pragma unroll
    for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
    #pragma unroll
    for (int t = 0; t < ITEMS / 4; ++t)
        p[lane + 32 * t] = make_float4(v[4 * t] / l, v[4 * t + 1] / l, v[4 * t + 2] / l, v[4 * t + 3] / l);
}
"""

_vec4_softmax = True     # float4 variant of the warp kernel where it applies

# Longer rows (full attention, the Perceiver family's latent rows): one thread block per row. Pass 1
# keeps a running (max, sum of exp) per thread over the visible entries (online softmax), a warp-
# shuffle + shared-memory reduction combines them; pass 2 writes exp(s - max) / sum, or 0 where masked.
_SOFTMAX_BLOCK_SOURCE = r"""
extern "C" __global__ void KERNEL_NAME(
        T* __restrict__ s, const unsigned char* __restrict__ mask, const int has_mask,
        const long long mask_rows, const int J, const long long rows)
{
    const T NEG_INF = NEG_INF_VALUE;
    const long long row = blockIdx.x;
    T* p = s + row * (long long)J;
    const unsigned char* mk = has_mask ? mask + (row % mask_rows) * (long long)J : 0;
    T m = NEG_INF, l = 0;                         // running max and sum of exp(x - m), this thread
    for (int j = threadIdx.x; j < J; j += blockDim.x) {
        if (mk && !mk[j]) continue;
        const T x = p[j];
        if (x > m) { l = l * EXP(m - x) + (T)1; m = x; }
        else       { l += EXP(x - m); }
    }
    __shared__ T sm[32], sl[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int round = 0; round < 2; ++round) {      // round 0: within warps; round 1: warp 0 over warps
        for (int off = 16; off > 0; off >>= 1) {
            const T m2 = __shfl_xor_sync(0xffffffffu, m, off);
            const T l2 = __shfl_xor_sync(0xffffffffu, l, off);
            const T M = m > m2 ? m : m2;
            l = (m == NEG_INF ? (T)0 : l * EXP(m - M)) + (m2 == NEG_INF ? (T)0 : l2 * EXP(m2 - M));
            m = M;
        }
        if (round == 1) break;
        if (lane == 0) { sm[warp] = m; sl[warp] = l; }
        __syncthreads();
        if (warp != 0) break;
        m = lane < nwarps ? sm[lane] : NEG_INF;
        l = lane < nwarps ? sl[lane] : (T)0;
    }
    if (threadIdx.x == 0) { sm[0] = m; sl[0] = l; }
    __syncthreads();
    m = sm[0]; l = sl[0];
    for (int j = threadIdx.x; j < J; j += blockDim.x) {
        if (m == NEG_INF)       p[j] = NAN_VALUE;  // every entry of the row masked
        else if (mk && !mk[j])  p[j] = (T)0;
        else                    p[j] = EXP(p[j] - m) / l;
    }
}
"""

_kernels = {}
_no_mask = {}


def _raw_kernel(kernel_name, source, dtype_name, **words):
    """Compile ``source`` with T, EXP, ... filled in for ``dtype_name`` (NVRTC, once; CuPy caches on disk)."""
    words = dict(_KERNEL_TYPES[dtype_name], **words)
    words["KERNEL_NAME"] = "_".join([kernel_name, dtype_name] + [f"{k}{v}" for k, v in sorted(words.items()) if k == "ITEMS"])
    if words["KERNEL_NAME"] not in _kernels:
        src = re.sub(r"\b(" + "|".join(words) + r")\b", lambda mo: str(words[mo.group(1)]), source)
        _kernels[words["KERNEL_NAME"]] = xp.RawKernel(src, words["KERNEL_NAME"])
    return _kernels[words["KERNEL_NAME"]]


def _cupy_fused_softmax(s, mask):
    """Run a fused kernel when it applies and return s; None when the caller must fall back."""
    if s.dtype.name not in _KERNEL_TYPES or s.ndim < 1 or s.size == 0 or not s.flags.c_contiguous:
        return None
    J = s.shape[-1]
    rows = s.size // J
    if rows >= 2 ** 31:
        return None
    if mask is None:
        device = xp.cuda.Device().id
        if device not in _no_mask:
            _no_mask[device] = xp.zeros(1, dtype=bool)
        mask, has_mask, mask_rows = _no_mask[device], 0, 1
    else:
        mask = xp.asarray(mask)
        # the kernels read mask row (row % mask_rows): the mask must equal the trailing axes of s
        if (mask.dtype != _onp.bool_ or mask.ndim < 1 or mask.shape != s.shape[s.ndim - mask.ndim:]
                or not mask.flags.c_contiguous):
            return None
        has_mask, mask_rows = 1, mask.size // J
    args = (s, mask, _onp.int32(has_mask), _onp.int64(mask_rows), _onp.int32(J), _onp.int64(rows))
    warps = 4
    if (_vec4_softmax and s.dtype.name == "float32" and J <= 1024 and J % 128 == 0 and s.data.ptr % 16 == 0
            and (not has_mask or mask.data.ptr % 4 == 0)):
        _raw_kernel("minicp_softmax_warp_vec4", _SOFTMAX_WARP_VEC4_SOURCE, "float32", ITEMS=J // 32)(
            (-(-rows // warps),), (32 * warps,), args)
    elif J <= 1024:
        items = 1 << max(0, (-(-J // 32) - 1).bit_length())             # next power of two >= J / 32
        _raw_kernel("minicp_softmax_warp", _SOFTMAX_WARP_SOURCE, s.dtype.name, ITEMS=items)(
            (-(-rows // warps),), (32 * warps,), args)
    else:
        threads = 256 if J <= 4096 else 1024
        _raw_kernel("minicp_softmax_block", _SOFTMAX_BLOCK_SOURCE, s.dtype.name)((rows,), (threads,), args)
    return s


_ROPE_PREAMBLE = r"""
__device__ __forceinline__ float  mul_rn(float a, float b)   { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float  add_rn(float a, float b)   { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ float  sub_rn(float a, float b)   { return __fsub_rn(a, b); }
__device__ __forceinline__ double sub_rn(double a, double b) { return __dsub_rn(a, b); }
"""


def _rope_kernel():
    if "rope" not in _kernels:
        _kernels["rope"] = xp.ElementwiseKernel(
            "T a, T b, T c, T s", "T ya, T yb",
            "ya = sub_rn(mul_rn(a, c), mul_rn(b, s)); yb = add_rn(mul_rn(b, c), mul_rn(a, s));",
            "minicp_rope", preamble=_ROPE_PREAMBLE)
    return _kernels["rope"]


use_backend(os.environ.get("MINICP_BACKEND", "numpy"))
