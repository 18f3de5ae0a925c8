"""Plain-array building blocks of the fast engine, the same code on either backend (``B.raw``: NumPy or CuPy).

These work on untraced arrays only, inside the fast engine's autograd primitives, and may write in place.
On the CPU the large passes run on row ranges over the thread pool (``minicp.fast.threads``); on the GPU
the softmax is one CUDA kernel (``minicp.fast.cuda.kernels``).

    rows(a)                      (..., F) -> (r, F), a view of a contiguous array
    parallel(r, work, fn)        fn(lo, hi) over row ranges: the CPU pool, or one call on the GPU
    dot(a, b), dot_tn(a, b)      a @ b and a^T b of 2-D arrays (activations with weights; weight gradients)
    matmul(a, b)                 stacks of products (attention blocks)
    column_sum(a)                (r, c) -> (c,)
    total(parts)                 partial sums, added in the order of their ranges
    masked_softmax_(s, mask)     softmax over the last axis in place, masked entries exactly 0
    probabilities(q, k, mask)    P = softmax(q k^T, masked) in one buffer
    attend_backward(g, q, k, v, p)         (dq, dk, dv) of attention from its kept probabilities P

Each computes what the reference's formulas compute (``minicp.nn.ops``); only the order of summation can
differ (split products, partial sums in range order).
"""

from minicp import backend as B
from minicp.fast import threads
from minicp.fast.cuda import kernels


def rows(a):
    """a as a 2-D (rows, last axis) array: a view when a is contiguous."""
    return B.raw.reshape(a, (-1, a.shape[-1]))


def parallel(count, work, fn):
    """fn(lo, hi) over contiguous ranges of ``count`` rows: on the CPU pool when ``work`` (entries touched)
    is large; one call on the GPU (its kernels are parallel already)."""
    if B.name == "numpy":
        threads.parallel_rows(count, work, fn)
    else:
        fn(0, count)


def dot(a, b):
    """a @ b for 2-D a, b; on the CPU the rows of a are split over the pool (``threads.matmul_rows``)."""
    return threads.matmul_rows(a, b) if B.name == "numpy" else a @ b


def dot_tn(a, b):
    """a^T b (a weight gradient); on the CPU the long sum over rows is split over the pool."""
    return threads.matmul_tn(a, b) if B.name == "numpy" else a.T @ b


def matmul(a, b):
    """a @ b of stacks (..., i, d) @ (..., d, j); on the CPU large stacks run in parallel (``threads.matmul``)."""
    return threads.matmul(a, b) if B.name == "numpy" else a @ b


def column_sum(a):
    """Sum over the rows of the 2-D array ``a``: (r, c) -> (c,). On CuPy a matrix-vector product
    (``ones(r) @ a``, a cuBLAS GEMV), several times faster there than a column reduction."""
    if B.name == "cupy" and a.ndim == 2:
        return B.raw.ones(a.shape[0], dtype=a.dtype) @ a
    return B.raw.sum(a, axis=0)


def total(parts):
    """The sum of the per-range partial sums in ``parts`` (a dict keyed by range start), in range order."""
    keys = sorted(parts)
    result = parts[keys[0]]
    for k in keys[1:]:
        result = result + parts[k]
    return result


def _softmax_rows_(s, mask):
    """The passes of the reference's softmax on s (..., j), in place: mask, subtract the row max, exp, divide."""
    xp = B.raw
    if mask is not None:
        xp.copyto(s, -xp.inf, where=xp.logical_not(mask))
    s -= xp.max(s, axis=-1, keepdims=True)  # stable: the row max is a visible entry
    xp.exp(s, out=s)
    s /= xp.sum(s, axis=-1, keepdims=True)
    return s


def masked_softmax_(s, mask=None):
    """Softmax of the score buffer ``s`` (..., i, j) over its last axis, **in place**; entries where ``mask``
    (None or a backend boolean array broadcastable to s, True = visible) is False become 0. Returns s.

    CuPy: one CUDA kernel where it applies (float32/float64, mask matching the trailing axes). NumPy: the
    reference's passes on contiguous row ranges in parallel (NumPy releases the GIL). A row whose entries
    are all masked becomes NaN on both, as exp(-inf - -inf).
    """
    if B.name == "cupy" and kernels.enabled and kernels.fused_softmax(s, mask) is not None:
        return s
    if B.name == "numpy" and s.flags.c_contiguous and s.ndim >= 2 and (mask is None or mask.ndim <= 2):
        s3 = s.reshape(-1, *s.shape[-2:])  # (R, i, j), a view
        if s3.shape[0] >= threads.threads or mask is None or mask.ndim == 1 or mask.shape[0] == 1:
            s2 = s3 if s3.shape[0] >= threads.threads else s.reshape(-1, s.shape[-1])
            threads.parallel_rows(s2.shape[0], s.size, lambda lo, hi: _softmax_rows_(s2[lo:hi], mask))
        else:  # few matrices: split their rows, and the mask's with them
            for r in range(s3.shape[0]):
                block = s3[r]
                threads.parallel_rows(
                    block.shape[0], block.size, lambda lo, hi, block=block: _softmax_rows_(block[lo:hi], mask[lo:hi])
                )
        return s
    return _softmax_rows_(s, mask)


def probabilities(q, k, mask):
    """P = softmax over keys of q k^T, masked entries 0, computed in one (..., i, j) buffer.
    q (..., i, d), k (..., j, d), mask: None or a backend boolean array (True = visible)."""
    return masked_softmax_(matmul(q, B.raw.swapaxes(k, -1, -2)), mask)


def softmax_backward_(ds, p):
    """dS = P * (dP - rowsum(dP * P)) in place in the dP buffer ``ds``; row ranges in parallel on the CPU."""
    xp = B.raw

    def block(d2, p2):
        d2 -= xp.sum(d2 * p2, axis=-1, keepdims=True)
        d2 *= p2

    if B.name != "numpy" or not (ds.flags.c_contiguous and p.flags.c_contiguous):
        block(ds, p)
        return
    d2, p2 = ds.reshape(-1, ds.shape[-1]), p.reshape(-1, p.shape[-1])
    threads.parallel_rows(d2.shape[0], 2 * d2.size, lambda lo, hi: block(d2[lo:hi], p2[lo:hi]))


def attend_backward(g, q, k, v, p):
    """(dq, dk, dv) of O = P v, P = softmax(q k^T, masked), for the upstream g (..., i, e) and the forward
    pass's P. The formulas of ``minicp.nn.ops.attend_vjp``."""
    swap = B.raw.swapaxes
    ds = matmul(g, swap(v, -1, -2))  # dP, turned into dS in place
    softmax_backward_(ds, p)
    return matmul(ds, k), matmul(swap(ds, -1, -2), q), matmul(swap(p, -1, -2), g)  # dq, dk, dv
