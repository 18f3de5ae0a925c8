"""CUDA kernels of the fast engine on CuPy: a fused masked softmax and a fused RoPE, and the machinery
every kernel of ``minicp.fast.cuda`` shares (NVRTC compilation with the dtype's words filled in, a cache).

Each entry point returns None when it does not apply (dtype, shape, layout), and the caller then computes
the same thing with array passes. The kernel sources are plain CUDA C with a few words (T, EXP, ITEMS, ...)
filled in per dtype before NVRTC compiles them once. ``enabled = False`` turns every kernel of the fast
engine off on CuPy (array passes instead), for comparisons.
"""

import re

import numpy as _onp

enabled = True  # False: array passes instead of the fast engine's CUDA kernels (for comparisons)


def cupy_module():
    import cupy  # optional dependency: this module only runs on the GPU backend

    return cupy


def fused_rope(x, cos, sin, style):
    """RoPE of x (..., n, d) by cos, sin (n, d // 2) in one kernel, or None where it does not apply.

    Each product and sum rounded separately (no FMA contraction), so the numbers equal the array formula's
    bit for bit.
    """
    xp = cupy_module()
    if not enabled or not isinstance(x, xp.ndarray) or x.dtype.name not in KERNEL_TYPES:
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
        first, second = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
        y_first, y_second = y[..., 0 : 2 * half : 2], y[..., 1 : 2 * half : 2]
        if d % 2:
            y[..., -1] = x[..., -1]  # odd last channel: not rotated
    _rope_kernel()(first, second, cos, sin, y_first, y_second)
    return y


KERNEL_TYPES = {
    "float32": dict(
        T="float", EXP="expf", NEG_INF_VALUE="__int_as_float(0xff800000)", NAN_VALUE="__int_as_float(0x7fc00000)"
    ),
    "float64": dict(
        T="double",
        EXP="exp",
        NEG_INF_VALUE="__longlong_as_double((long long)0xfff0000000000000ULL)",
        NAN_VALUE="__longlong_as_double((long long)0x7ff8000000000000ULL)",
    ),
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

_vec4_softmax = True  # float4 variant of the warp kernel where it applies

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

compiled = {}
_no_mask = {}


def raw_kernel(kernel_name, source, dtype_name, **words):
    """Compile ``source`` with T, EXP, ... filled in for ``dtype_name`` (NVRTC, once; CuPy caches on disk)."""
    xp = cupy_module()
    words = dict(KERNEL_TYPES[dtype_name], **words)
    words["KERNEL_NAME"] = "_".join(
        [kernel_name, dtype_name] + [f"{k}{v}" for k, v in sorted(words.items()) if k == "ITEMS"]
    )
    if words["KERNEL_NAME"] not in compiled:
        src = re.sub(r"\b(" + "|".join(words) + r")\b", lambda mo: str(words[mo.group(1)]), source)
        compiled[words["KERNEL_NAME"]] = xp.RawKernel(src, words["KERNEL_NAME"])
    return compiled[words["KERNEL_NAME"]]


def fused_softmax(s, mask):
    """Run a fused kernel when it applies and return s; None when the caller must fall back."""
    xp = cupy_module()
    if s.dtype.name not in KERNEL_TYPES or s.ndim < 1 or s.size == 0 or not s.flags.c_contiguous:
        return None
    J = s.shape[-1]
    rows = s.size // J
    if rows >= 2**31:
        return None
    if mask is None:
        device = xp.cuda.Device().id
        if device not in _no_mask:
            _no_mask[device] = xp.zeros(1, dtype=bool)
        mask, has_mask, mask_rows = _no_mask[device], 0, 1
    else:
        mask = xp.asarray(mask)
        # the kernels read mask row (row % mask_rows): the mask must equal the trailing axes of s
        if (
            mask.dtype != _onp.bool_
            or mask.ndim < 1
            or mask.shape != s.shape[s.ndim - mask.ndim :]
            or not mask.flags.c_contiguous
        ):
            return None
        has_mask, mask_rows = 1, mask.size // J
    args = (s, mask, _onp.int32(has_mask), _onp.int64(mask_rows), _onp.int32(J), _onp.int64(rows))
    warps = 4
    if (
        _vec4_softmax
        and s.dtype.name == "float32"
        and J <= 1024
        and J % 128 == 0
        and s.data.ptr % 16 == 0
        and (not has_mask or mask.data.ptr % 4 == 0)
    ):
        raw_kernel("minicp_softmax_warp_vec4", _SOFTMAX_WARP_VEC4_SOURCE, "float32", ITEMS=J // 32)(
            (-(-rows // warps),), (32 * warps,), args
        )
    elif J <= 1024:
        items = 1 << max(0, (-(-J // 32) - 1).bit_length())  # next power of two >= J / 32
        raw_kernel("minicp_softmax_warp", _SOFTMAX_WARP_SOURCE, s.dtype.name, ITEMS=items)(
            (-(-rows // warps),), (32 * warps,), args
        )
    else:
        threads = 256 if J <= 4096 else 1024
        raw_kernel("minicp_softmax_block", _SOFTMAX_BLOCK_SOURCE, s.dtype.name)((rows,), (threads,), args)
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
    xp = cupy_module()
    if "rope" not in compiled:
        compiled["rope"] = xp.ElementwiseKernel(
            "T a, T b, T c, T s",
            "T ya, T yb",
            "ya = sub_rn(mul_rn(a, c), mul_rn(b, s)); yb = add_rn(mul_rn(b, c), mul_rn(a, s));",
            "minicp_rope",
            preamble=_ROPE_PREAMBLE,
        )
    return compiled["rope"]
