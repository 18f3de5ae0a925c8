"""CUDA kernels for whole layers on CuPy: exact GELU (alone, or with the bias and GELU' for the backward
pass), LayerNorm (optionally keeping xhat and the divisor), the residual-and-bias add, and AdamW.

Each replaces several array passes by one read and one write; each has a GPU test against an independent
float64 formula in ``tests/backend/test_gpu_autograd.py``. The shared machinery (NVRTC compilation with
the dtype's words filled in, the kernel cache) is ``minicp.backend.cuda``.
"""

from minicp.backend.cuda import _KERNEL_TYPES, _cupy, _kernels, _raw_kernel

# NVRTC defines no M_SQRT1_2 / M_2_SQRTPI: the constants are written out.
_RSQRT2 = "0.70710678118654752440"  # 1 / sqrt(2)
_RSQRT2PI = "0.39894228040143267794"  # 1 / sqrt(2 pi)


def gelu(x, grad=None):
    """Exact GELU of x in one kernel (``grad`` None), or its VJP g * GELU'(x) in one kernel.

    GELU(x) = x/2 (1 + erf(x / sqrt 2));  GELU'(x) = (1 + erf(x / sqrt 2)) / 2 + x exp(-x^2 / 2) / sqrt(2 pi).
    """
    xp = _cupy()
    if "gelu" not in _kernels:
        _kernels["gelu"] = xp.ElementwiseKernel(
            "T x", "T y", f"y = (T)0.5 * x * ((T)1 + erf(x * (T){_RSQRT2}));", "minicp_gelu"
        )
        _kernels["gelu_vjp"] = xp.ElementwiseKernel(
            "T g, T x",
            "T dx",
            f"dx = g * ((T)0.5 * ((T)1 + erf(x * (T){_RSQRT2})) + x * exp((T)-0.5 * x * x) * (T){_RSQRT2PI});",
            "minicp_gelu_vjp",
        )
    return _kernels["gelu"](x) if grad is None else _kernels["gelu_vjp"](grad, x)


def adamw_(p, g, m, v, *, decay, beta1, beta2, bias2_sqrt, eps, step_size):
    """One AdamW update of one parameter in one kernel, in place on p, m, v (CuPy arrays of one dtype).

    The same operations in the same order as ``minicp.lm.optim.adamw_step`` (scalars rounded to the
    array's dtype first); only the compiler's fused multiply-adds can round differently.
    """
    xp = _cupy()
    if "adamw" not in _kernels:
        _kernels["adamw"] = xp.ElementwiseKernel(
            "T g, float64 decay, float64 one_minus_b1, float64 beta2, float64 one_minus_b2, "
            "float64 bias2_sqrt, float64 eps, float64 step_size",
            "T p, T m, T v",
            "p = p * (T)decay; m = m + (g - m) * (T)one_minus_b1; v = v * (T)beta2; "
            "v = v + (T)one_minus_b2 * g * g; p = p - (T)step_size * (m / (sqrt(v) / (T)bias2_sqrt + (T)eps));",
            "minicp_adamw",
        )
    _kernels["adamw"](g, decay, 1.0 - beta1, beta2, 1.0 - beta2, bias2_sqrt, eps, step_size, p, m, v)


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
    xp = _cupy()
    dtype = x2.dtype.name
    if dtype not in _KERNEL_TYPES or x2.ndim != 2 or x2.size == 0 or x2.shape[1] >= 2**31:
        return None
    if not all(isinstance(a, xp.ndarray) and a.flags.c_contiguous and a.dtype == x2.dtype for a in (x2, w, b)):
        return None
    rows, D = x2.shape
    y = xp.empty_like(x2)
    # save=False: the kernel never writes xhat or std; y stands in for the two pointers
    xhat, std = (xp.empty_like(x2), xp.empty((rows, 1), dtype=x2.dtype)) if save else (y, y)
    kernel = _raw_kernel("minicp_layer_norm", _LAYER_NORM_SOURCE, dtype, SQRT="sqrtf" if dtype == "float32" else "sqrt")
    warps = 8
    args = (x2, w, b, y, xhat, std, xp.int32(save), xp.int64(rows), xp.int32(D), float(eps))
    kernel(((rows + warps - 1) // warps,), (32 * warps,), args)
    return (y, xhat, std) if save else y


def bias_gelu(h, b, deriv=False):
    """a = GELU(h + b) for h (r, F) and the bias b (F,), in one kernel; ``deriv=True``: (a, GELU'(h + b)).

    GELU(z) = z Phi(z), Phi(z) = (1 + erf(z / sqrt 2)) / 2;  GELU'(z) = Phi(z) + z exp(-z^2 / 2) / sqrt(2 pi).
    """
    xp = _cupy()
    if "bias_gelu" not in _kernels:
        _kernels["bias_gelu"] = xp.ElementwiseKernel(
            "T h, T b", "T a", f"T z = h + b; a = z * ((T)0.5 * ((T)1 + erf(z * (T){_RSQRT2})));", "minicp_bias_gelu"
        )
        _kernels["bias_gelu_d"] = xp.ElementwiseKernel(
            "T h, T b",
            "T a, T d",
            f"T z = h + b; T p = (T)0.5 * ((T)1 + erf(z * (T){_RSQRT2})); a = z * p;"
            f" d = p + z * exp((T)-0.5 * z * z) * (T){_RSQRT2PI};",
            "minicp_bias_gelu_d",
        )
    return _kernels["bias_gelu_d"](h, b) if deriv else _kernels["bias_gelu"](h, b)


def residual_bias_(y, x, b):
    """y = (y + x) + b in place, for y, x (r, D) and the bias b (D,): one kernel for two passes."""
    xp = _cupy()
    if "residual_bias" not in _kernels:
        _kernels["residual_bias"] = xp.ElementwiseKernel("T x, T b", "T y", "y = y + x + b;", "minicp_residual_bias")
    _kernels["residual_bias"](x, b, y)
    return y
