"""Multi-tensor CUDA kernels for the optimiser step on CuPy: one launch for all parameters, not one each.

A training step ends with gradient clipping and AdamW over every parameter (about 50 for a small model).
Per parameter that is a squared norm, a scaling and an update, each one kernel launch with its Python
overhead, and on a GPU the host's launches are what the step waits for. Here each of the three is one
kernel over all tensors: a table of device pointers and sizes, the tensors cut into chunks of ``CHUNK``
elements, one thread block per chunk.

    sum_squares(arrays)      per tensor sum of g^2, accumulated in float64 (one atomic add per block)
    scale_(arrays, coef)     g *= coef, coef a device scalar (no read back to the host)
    clip_(arrays, max_norm)  the two for gradient clipping, on one pointer table
    adamw_(p, g, m, v, ...)  the update of ``minicp.lm.optim.adamw_step``, the same operations in the
                             same order, with per-tensor decay and step size

Tensors must be C-contiguous and of one float dtype; ``applies`` says when they are. Tested against the
readable update and CuPy's own reductions in ``tests/fast/test_gpu_kernels.py``.
"""

import numpy as onp

from minicp.fast.cuda.kernels import cupy_module, raw_kernel

CHUNK = 1 << 14  # elements per thread block
THREADS = 256

_TABLE = r"""
    const int t = chunk_tensor[blockIdx.x];
    const long long start = chunk_start[blockIdx.x];
    const long long stop = min(start + (long long)CHUNK, sizes[t]);
"""

_SUM_SQUARES = (
    r"""
extern "C" __global__ void KERNEL_NAME(const unsigned long long* ptrs, const long long* sizes,
        const int* chunk_tensor, const long long* chunk_start, double* out) {
"""
    + _TABLE
    + r"""
    const T* g = (const T*)ptrs[t];
    double acc = 0.0;
    for (long long i = start + threadIdx.x; i < stop; i += blockDim.x) { const double x = g[i]; acc += x * x; }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffff, acc, o);
    __shared__ double warp_sums[32];
    if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < blockDim.x / 32; ++w) total += warp_sums[w];
        atomicAdd(out + t, total);
    }
}
"""
)

_SCALE = (
    r"""
extern "C" __global__ void KERNEL_NAME(const unsigned long long* ptrs, const long long* sizes,
        const int* chunk_tensor, const long long* chunk_start, const double* coef) {
"""
    + _TABLE
    + r"""
    T* g = (T*)ptrs[t];
    const T c = (T)coef[0];
    for (long long i = start + threadIdx.x; i < stop; i += blockDim.x) g[i] = g[i] * c;
}
"""
)

_ADAMW = (
    r"""
extern "C" __global__ void KERNEL_NAME(const unsigned long long* ptrs, const long long* sizes,
        const int* chunk_tensor, const long long* chunk_start, const double* decay, const double* step_size,
        const double one_minus_b1, const double beta2, const double one_minus_b2, const double bias2_sqrt,
        const double eps, const int count) {
"""
    + _TABLE
    + r"""
    T* p = (T*)ptrs[t];
    const T* g = (const T*)ptrs[count + t];
    T* m = (T*)ptrs[2 * count + t];
    T* v = (T*)ptrs[3 * count + t];
    const T d = (T)decay[t], s = (T)step_size[t];
    for (long long i = start + threadIdx.x; i < stop; i += blockDim.x) {
        const T gi = g[i];
        T pi = p[i] * d;
        const T mi = m[i] + (gi - m[i]) * (T)one_minus_b1;
        T vi = v[i] * (T)beta2;
        vi = vi + (T)one_minus_b2 * gi * gi;
        pi = pi - s * (mi / (sqrt(vi) / (T)bias2_sqrt + (T)eps));
        p[i] = pi; m[i] = mi; v[i] = vi;
    }
}
"""
)


def applies(*groups):
    """True when every array of every group is a C-contiguous CuPy array of one float32/float64 dtype."""
    arrays = [a for group in groups for a in group]
    if not arrays or not all(type(a).__module__.startswith("cupy") for a in arrays):
        return False
    dtype = arrays[0].dtype
    return dtype.name in ("float32", "float64") and all(a.dtype == dtype and a.flags.c_contiguous for a in arrays)


def _table(groups):
    """Device pointer table (all groups, one after the other), the sizes and the chunk map (tensor and start
    of every chunk) of the first group."""
    xp = cupy_module()
    sizes = onp.array([a.size for a in groups[0]], dtype=onp.int64)
    counts = -(-sizes // CHUNK)  # chunks per tensor
    tensor = onp.repeat(onp.arange(len(sizes), dtype=onp.int32), counts)
    first = onp.cumsum(counts) - counts  # index of each tensor's first chunk
    start = (onp.arange(len(tensor)) - onp.repeat(first, counts)) * CHUNK
    ptrs = onp.array([a.data.ptr for group in groups for a in group], dtype=onp.uint64)
    return [xp.asarray(x) for x in (ptrs, sizes, tensor, start.astype(onp.int64))], len(tensor)


def _sum_squares(table, blocks, dtype_name, count):
    out = cupy_module().zeros(count, dtype=onp.float64)
    if blocks:
        kernel = raw_kernel("minicp_sum_squares", _SUM_SQUARES, dtype_name, CHUNK=CHUNK)
        kernel((blocks,), (THREADS,), (*table, out))
    return out


def sum_squares(arrays):
    """Per tensor sum of squares (float64, on the device) of the arrays."""
    return _sum_squares(*_table([arrays]), arrays[0].dtype.name, len(arrays))


def _scale(table, blocks, dtype_name, coef):
    if blocks:
        kernel = raw_kernel("minicp_scale", _SCALE, dtype_name, CHUNK=CHUNK)
        kernel((blocks,), (THREADS,), (*table, coef))


def scale_(arrays, coef):
    """arrays *= coef (a float64 device scalar), in place."""
    _scale(*_table([arrays]), arrays[0].dtype.name, coef)


def clip_(arrays, max_norm):
    """torch's clip_grad_norm_ for all arrays, in place: the global norm (a float64 device scalar, not read
    back) and, when ``max_norm``, every array times min(1, max_norm / (norm + 1e-6)) (a factor 1 changes
    nothing). One pointer table for both kernels."""
    xp = cupy_module()
    table, blocks = _table([arrays])
    norm = xp.sqrt(xp.sum(_sum_squares(table, blocks, arrays[0].dtype.name, len(arrays))))
    if max_norm:
        _scale(table, blocks, arrays[0].dtype.name, xp.minimum(1.0, max_norm / (norm + 1e-6)))
    return norm


def adamw_(params, grads, ms, vs, decays, step_sizes, *, beta1, beta2, bias2_sqrt, eps):
    """AdamW for every tensor at once, in place on params, ms, vs; ``decays`` and ``step_sizes`` per tensor."""
    xp = cupy_module()
    table, blocks = _table([params, grads, ms, vs])
    if not blocks:
        return
    decay, step = (xp.asarray(onp.asarray(x, dtype=onp.float64)) for x in (decays, step_sizes))
    kernel = raw_kernel("minicp_multi_adamw", _ADAMW, params[0].dtype.name, CHUNK=CHUNK)
    args = (*table, decay, step, onp.float64(1.0 - beta1), onp.float64(beta2), onp.float64(1.0 - beta2))
    kernel((blocks,), (THREADS,), (*args, onp.float64(bias2_sqrt), onp.float64(eps), onp.int32(len(params))))
