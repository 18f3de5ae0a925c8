"""CUDA kernels for whole layers on CuPy: exact GELU (with the bias, and GELU' for the backward pass),
LayerNorm (optionally keeping xhat and the divisor), and the residual-and-bias add.

Each replaces several array passes by one read and one write; each has a GPU test against an independent
float64 formula in ``tests/fast/test_gpu_kernels.py``. The shared machinery (NVRTC compilation with the
dtype's words filled in, the kernel cache) is ``minicp.fast.cuda.kernels``.
"""

from minicp.fast.cuda.kernels import KERNEL_TYPES, compiled, cupy_module, raw_kernel

# NVRTC defines no M_SQRT1_2 / M_2_SQRTPI: the constants are written out.
_RSQRT2 = "0.70710678118654752440"  # 1 / sqrt(2)
_RSQRT2PI = "0.39894228040143267794"  # 1 / sqrt(2 pi)


# LayerNorm over rows of D entries: one warp per row; the mean, then the centred variance (two passes
# over the row, as the array formula), then y = (x - mean) / sqrt(var + eps) * w + b.
_LAYER_NORM_SOURCE = r"""
extern "C" __global__ void KERNEL_NAME(
        const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b, T* __restrict__ y,
        T* __restrict__ xhat, T* __restrict__ stds, const int save, const long long rows, const int D,
        const double eps) {
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const T* xr = x + row * D;
    T* yr = y + row * D;
    T sum = 0;
    for (int i = lane; i < D; i += 32) sum += xr[i];
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, o);
    const T mean = sum * ((T)1 / (T)D);
    T sq = 0;
    for (int i = lane; i < D; i += 32) { const T c = xr[i] - mean; sq += c * c; }
    for (int o = 16; o > 0; o >>= 1) sq += __shfl_xor_sync(0xffffffff, sq, o);
    const T std = SQRT(sq * ((T)1 / (T)D) + (T)eps);
    if (save) {
        if (lane == 0) stds[row] = std;
        T* hr = xhat + row * D;
        for (int i = lane; i < D; i += 32) { const T h = (xr[i] - mean) / std; hr[i] = h; yr[i] = h * w[i] + b[i]; }
    } else {
        for (int i = lane; i < D; i += 32) yr[i] = (xr[i] - mean) / std * w[i] + b[i];
    }
}
"""


def layer_norm(x2, w, b, eps, save=False):
    """LayerNorm of the rows of the contiguous 2-D CuPy array ``x2`` in one kernel, or None where it does
    not apply (another dtype, non-contiguous operands). ``save=True``: returns (y, xhat, std (rows, 1))."""
    xp = cupy_module()
    dtype = x2.dtype.name
    if dtype not in KERNEL_TYPES or x2.ndim != 2 or x2.size == 0 or x2.shape[1] >= 2**31:
        return None
    if not all(isinstance(a, xp.ndarray) and a.flags.c_contiguous and a.dtype == x2.dtype for a in (x2, w, b)):
        return None
    rows, D = x2.shape
    y = xp.empty_like(x2)
    # save=False: the kernel never writes xhat or std; y stands in for the two pointers
    xhat, std = (xp.empty_like(x2), xp.empty((rows, 1), dtype=x2.dtype)) if save else (y, y)
    kernel = raw_kernel("minicp_layer_norm", _LAYER_NORM_SOURCE, dtype, SQRT="sqrtf" if dtype == "float32" else "sqrt")
    warps = 8
    args = (x2, w, b, y, xhat, std, xp.int32(save), xp.int64(rows), xp.int32(D), float(eps))
    kernel(((rows + warps - 1) // warps,), (32 * warps,), args)
    return (y, xhat, std) if save else y


def bias_gelu_(h, b, a, d=None):
    """GELU(z) into ``a`` and, when given, GELU'(z) into ``d``, for z = h + b (``b`` (F,) or None), in one
    kernel over the rows h (r, F); ``a`` may be None when only ``d`` is wanted. z is formed in the array's dtype
    (as h + b is), the rest in double from CUDA's erfc and rounded once, so that a float32 result is within a
    float32 rounding of the exact function of z, the negative tail included (1 + erf would cancel there, and
    float32 arithmetic would lose z^2 / 2 for large |z|):

    GELU(z) = z Phi(z), Phi(z) = erfc(-z / sqrt 2) / 2;  GELU'(z) = Phi(z) + z exp(-z^2 / 2) / sqrt(2 pi).
    """
    xp = cupy_module()
    if "gelu" not in compiled:
        phi = f"T z = h + b; double zd = (double)z; double p = 0.5 * erfc(-zd * {_RSQRT2});"
        dphi = f"(T)(p + zd * exp(-0.5 * zd * zd) * {_RSQRT2PI})"
        compiled["gelu"] = xp.ElementwiseKernel("T h, T b", "T a", f"{phi} a = (T)(zd * p);", "minicp_gelu")
        compiled["gelu_d"] = xp.ElementwiseKernel(
            "T h, T b", "T a, T d", f"{phi} a = (T)(zd * p); d = {dphi};", "minicp_gelu_d"
        )
        compiled["dgelu"] = xp.ElementwiseKernel("T h, T b", "T d", f"{phi} d = {dphi};", "minicp_dgelu")
    b = xp.zeros((), dtype=h.dtype) if b is None else b
    if d is None:
        compiled["gelu"](h, b, a)
    elif a is None:
        compiled["dgelu"](h, b, d)
    else:
        compiled["gelu_d"](h, b, a, d)


def residual_bias_(y, x, b):
    """y = (y + x) + b in place, for y, x (r, D) and the bias b (D,): one kernel for two passes."""
    xp = cupy_module()
    if "residual_bias" not in compiled:
        compiled["residual_bias"] = xp.ElementwiseKernel("T x, T b", "T y", "y = y + x + b;", "minicp_residual_bias")
    compiled["residual_bias"](x, b, y)
    return y
