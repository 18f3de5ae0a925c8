"""ECP's attention core on CuPy without layout copies: strided-batched cuBLAS over overlapping windows.

ECP's pairs are K2_t = [K_{t-1}; K_t], the 2m rows (t-1) m .. (t+1) m - 1 of a head's keys: in a C-contiguous
(b, h, n, d) array they are one window of 2m * d numbers, and the window of block t + 1 starts m * d
numbers later. So the products of every pair are one strided-batched GEMM whose input windows overlap
(cuBLAS reads them; nothing is written there), with no concatenated K2, no contiguous copy of the query
slice and none of the output. The plain path (``minicp.nn.fused_attention._core_forward``) builds K2 and
concatenates the outputs: about 0.6 ms of copies per layer at n = 32768, D 512 on an H200.

The heads follow each other in memory with the same step (n d = N m d), so all heads' pairs are one batch:
blocks j = 1 .. b h N - 1, each with the window starting at block j - 1. The blocks j = (b h) N with t = 0
(the first block of every head after the first) get a wrong window (the previous head's last block); their
results are overwritten by the first-block attention (causal m x m, one batch over the heads), issued
after it on the same stream: 1/N of the pair products is wasted.

Row-major products through column-major cuBLAS: a row-major (r, c) matrix with row step ld is a
column-major (c, r) one with leading dimension ld, so row-major C = A B^T is column-major C^T = B A^T.

    S_j = Q_j Kw_j^T   (m, 2m)   gemm(T, N, M=2m, N=m, K=d, A=Kw (ld d), B=Q_j (ld d), C=S_j (ld 2m))
    O_j = P_j Kw_j     (m, d)    gemm(N, N, M=d,  N=m, K=2m, A=Kw (ld d), B=P_j (ld 2m), C=O_j (ld d))

Only for untraced calls (inference): the autograd path keeps K2 for its backward pass. Tested against the
plain path in ``tests/backend/test_gpu_autograd.py``.
"""

import numpy as onp

from minicp.backend.cuda import _cupy

DTYPES = ("float32", "float64")


def applies(q, kv):
    """True when ``ecp_forward`` computes the core: CuPy arrays, C-contiguous, one float dtype, same shape."""
    xp = _cupy()
    return (
        isinstance(q, xp.ndarray)
        and isinstance(kv, xp.ndarray)
        and q.dtype == kv.dtype
        and q.dtype.name in DTYPES
        and q.shape == kv.shape
        and q.ndim == 4
        and q.flags.c_contiguous
        and kv.flags.c_contiguous
    )


def _gemm(dtype, transa, transb, M, N, K, a, lda, sa, b, ldb, sb, c, ldc, sc, count):
    """cuBLAS {s,d}gemmStridedBatched on device pointers (alpha 1, beta 0), on the current stream."""
    xp = _cupy()
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


def ecp_forward(q, kv, m, first_mask, pair_mask, softmax_):
    """ECP attention of q (b, h, n, d), already scaled, against K = V = kv, n = N m with N >= 2.

    ``first_mask`` (m, m) and ``pair_mask`` (m, 2m): device booleans, True = visible; ``softmax_(s, mask)``
    the masked softmax in place (``minicp.backend.masked_softmax_``). Returns out (b, h, n, d)."""
    xp = _cupy()
    assert applies(q, kv)
    b, h, n, d = q.shape
    N, BH = n // m, b * h
    assert n == N * m and N >= 2
    dt, size = q.dtype.type, q.dtype.itemsize
    out = xp.empty_like(q)
    blocks = BH * N  # all heads' half segments, m * d numbers apart
    S = xp.empty((blocks - 1, m, 2 * m), dtype=q.dtype)
    step = m * d * size  # bytes from one block to the next
    # the pairs: block j = 1 .. blocks - 1 against the window of blocks j - 1 and j
    _gemm(dt, "T", "N", 2 * m, m, d, kv.data.ptr, d, m * d, q.data.ptr + step, d, m * d, S.data.ptr, 2 * m, 2 * m * m, blocks - 1)  # fmt: skip
    softmax_(S, pair_mask)
    _gemm(dt, "N", "N", d, m, 2 * m, kv.data.ptr, d, m * d, S.data.ptr, 2 * m, 2 * m * m, out.data.ptr + step, d, m * d, blocks - 1)  # fmt: skip
    # the first block of every head (causal m x m), written over what the pair product left there
    S0 = xp.empty((BH, m, m), dtype=q.dtype)
    _gemm(dt, "T", "N", m, m, d, kv.data.ptr, d, n * d, q.data.ptr, d, n * d, S0.data.ptr, m, m * m, BH)  # fmt: skip
    softmax_(S0, first_mask)
    _gemm(dt, "N", "N", d, m, m, kv.data.ptr, d, n * d, S0.data.ptr, m, m * m, out.data.ptr, d, n * d, BH)  # fmt: skip
    return out
