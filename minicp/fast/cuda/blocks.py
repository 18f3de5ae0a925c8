"""Batched products over windows of an array on CuPy, as cuBLAS strided-batched GEMMs on device pointers.

``minicp.fast.windows`` computes ECP's core for inference as products over overlapping windows of the keys
(nothing copied); this module is its CuPy half. A window (``minicp.fast.windows.Window``) is ``count`` matrices
of ``rows`` rows of a C-contiguous array seen as one matrix of d columns, ``step`` rows apart: in cuBLAS terms
a pointer, a leading dimension d and a stride of step * d elements. Windows may overlap: cuBLAS only reads them.

Row-major products through column-major cuBLAS: a row-major (r, c) matrix with row step ld is a
column-major (c, r) one with leading dimension ld, so row-major C = A B^T is column-major C^T = B A^T:

    out_i = a_i b_i^T   (r, c)    gemm(T, N, M=c, N=r, K=d, A=b (ld d), B=a (ld d), C=out (ld c))
    out_i = p_i b_i     (r, d)    gemm(N, N, M=d, N=r, K=c, A=b (ld d), B=p (ld c), C=out (ld d))

Tested on the GPU against the same plan on NumPy strided views and against the reference
(tests/fast/test_gpu_routes.py).
"""

import numpy as onp

from minicp.fast.cuda.kernels import cupy_module


def _gemm(dtype, transa, transb, M, N, K, a, lda, sa, b, ldb, sb, c, ldc, sc, count):
    """cuBLAS {s,d}gemmStridedBatched on device pointers (alpha 1, beta 0), on the current stream."""
    xp = cupy_module()
    cublas = xp.cuda.cublas  # CuPy's own cuBLAS bindings
    handle = xp.cuda.device.get_cublas_handle()
    cublas.setStream(handle, xp.cuda.get_current_stream().ptr)
    one, zero = onp.ones(1, dtype), onp.zeros(1, dtype)
    ops = {"N": cublas.CUBLAS_OP_N, "T": cublas.CUBLAS_OP_T}
    call = cublas.sgemmStridedBatched if dtype == onp.float32 else cublas.dgemmStridedBatched
    call(
        handle, ops[transa], ops[transb], M, N, K, one.ctypes.data, a, lda, sa, b, ldb, sb, zero.ctypes.data,
        c, ldc, sc, count,
    )  # fmt: skip


def _pointer(w):
    """Device pointer of the first row of the window ``w``, its leading dimension and its stride (elements)."""
    d = w.array.shape[-1]
    return w.array.data.ptr + w.first * d * w.array.itemsize, d, w.step * d


def gemm_nt(out, a, b):
    """out[i] = a[i] b[i]^T for the windows a (count, r, d), b (count, c, d) into the contiguous out (count, r, c)."""
    count, r, c = out.shape
    d = a.array.shape[-1]
    assert a.count == b.count == count and a.rows == r and b.rows == c and out.flags.c_contiguous
    pa, lda, sa = _pointer(a)
    pb, ldb, sb = _pointer(b)
    _gemm(out.dtype.type, "T", "N", c, r, d, pb, ldb, sb, pa, lda, sa, out.data.ptr, c, r * c, count)


def gemm_nn(out, p, b):
    """out[i] = p[i] b[i] for the contiguous p (count, r, c) and the window b (count, c, d), into the window out."""
    count, r, c = p.shape
    d = b.array.shape[-1]
    assert out.count == b.count == count and out.rows == r and b.rows == c and p.flags.c_contiguous
    pb, ldb, sb = _pointer(b)
    po, ldo, so = _pointer(out)
    _gemm(p.dtype.type, "N", "N", d, r, c, pb, ldb, sb, p.data.ptr, c, r * c, po, ldo, so, count)
