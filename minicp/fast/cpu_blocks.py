"""ECP's attention core on NumPy in cache-sized groups of blocks, over windows of the keys instead of copies.

The K2 route (``minicp.fast.ecp``, the one CuPy training takes)
concatenates K2_t = [K_{t-1}; K_t] for every pair, computes every block's scores into one array of
b h (N - 1) m 2m numbers, runs each softmax pass over all of it, and concatenates the outputs. At the
inference benchmark's size (n = 8192, m = 256, 8 heads) that array is 134 MB a layer: each pass streams
it through memory, and OpenBLAS first fills it with zeros (beta = 0).

Here, for one head at a time and a group of consecutive query blocks t0 .. t1 - 1:

    S = Q_t K2_t^T                     (g, m, 2m)   K2_t a strided window of the head's keys (no copy)
    S = fmin(S, L)                     L = +inf where visible, -inf where masked: a masked score becomes
                                       -inf whatever it was (inf, NaN included), a visible one is unchanged
    S = exp(S - max) / sum             the same passes, in the same order, as ``masked_softmax_``
    O_t = S K2_t                       written straight into the (b, n, h, d) output

with g chosen so that S fits a core's L2 cache, each group's products single-threaded and the groups
spread over ``minicp.fast.threads``. Block 0 of each head is the causal m x m block on K_0. Under
autograd the probabilities are kept for the backward pass: S is then a slice of the kept array P, and
the K2 handed to the VJP is the read-only window view. Tested against a dense n x n float64 reference in
``tests/fast/test_cpu_blocks.py``, and through the fast engine against the readable reference
(``tests/fast/test_ecp_routes.py``).
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from minicp.fast import threads

GROUP_ENTRIES = 1 << 17  # scores per group: 512 KiB of float32


def applies(q, kv, m):
    """True for NumPy float arrays q, kv (b, h, n, d) of one dtype and shape, whose last axis is contiguous
    (BLAS takes the row stride as is), with n = N m, N >= 2."""
    return (
        isinstance(q, np.ndarray)
        and isinstance(kv, np.ndarray)
        and q.dtype == kv.dtype
        and q.dtype in (np.float32, np.float64)
        and q.ndim == 4
        and q.shape == kv.shape
        and q.shape[2] % m == 0
        and q.shape[2] // m >= 2
        and q.strides[3] == kv.strides[3] == q.itemsize
    )


def _limits(mask, dtype):
    """+inf where ``mask`` is visible, -inf where masked: fmin(s, limits) masks s."""
    return np.where(mask, np.inf, -np.inf).astype(dtype)


def windows(x, m, span, writeable=False):
    """(b, h, N, m, d) blocks of x (b, h, n, d) when span = 1, or the (b, h, N - 1, 2m, d) pairs
    [x_{t-1}; x_t] when span = 2: strided views (read-only unless ``writeable``), nothing copied."""
    b, h, n, d = x.shape
    sb, sh, sn, sd = x.strides
    count = n // m - (span - 1)
    return as_strided(x, (b, h, count, span * m, d), (sb, sh, m * sn, sn, sd), writeable=writeable)


def _softmax_(s, limits, top, total):
    np.fmin(s, limits, out=s)
    np.max(s, axis=-1, keepdims=True, out=top)
    s -= top
    np.exp(s, out=s)
    np.sum(s, axis=-1, keepdims=True, out=total)
    s /= total


def ecp_forward(q, kv, m, first_mask, pair_mask, keep):
    """ECP attention of q (b, h, n, d), already scaled, against K = V = kv: (out (b, h, n, d), a view of a
    (b, n, h, d) array; (P0 (b, h, m, m), P (b, h, N - 1, m, 2m), K2 window view) when ``keep``, else None)."""
    b, h, n, d = q.shape
    N = n // m
    dtype = q.dtype
    Q, K, K2 = windows(q, m, 1), windows(kv, m, 1), windows(kv, m, 2)
    merged = np.empty((b, n, h, d), dtype=dtype)
    out = merged.swapaxes(1, 2)  # (b, h, n, d) view
    O = windows(out, m, 1, writeable=True)  # (b, h, N, m, d) blocks of the output
    P0 = np.empty((b, h, m, m), dtype=dtype) if keep else None
    P = np.empty((b, h, N - 1, m, 2 * m), dtype=dtype) if keep else None
    first, pairs = _limits(first_mask, dtype), _limits(pair_mask, dtype)
    group = max(1, min(N - 1, GROUP_ENTRIES // (2 * m * m)))
    items = [(i, t0, min(N - 1, t0 + group)) for i in range(b * h) for t0 in range(0, N - 1, group)]

    def run(lo, hi):
        scratch = None if keep else np.empty((group, m, 2 * m), dtype=dtype)
        top = np.empty((group, m, 1), dtype=dtype)
        total = np.empty((group, m, 1), dtype=dtype)
        for i, t0, t1 in items[lo:hi]:
            bi, head = divmod(i, h)
            g = t1 - t0
            if t0 == 0:  # block 0: causal m x m on K_0
                s0 = P0[bi, head] if keep else scratch[0, :, :m]
                np.matmul(Q[bi, head, 0], K[bi, head, 0].T, out=s0)
                _softmax_(s0, first, top[0], total[0])
                np.matmul(s0, K[bi, head, 0], out=O[bi, head, 0])
            s = P[bi, head, t0:t1] if keep else scratch[:g]
            k2 = K2[bi, head, t0:t1]  # (g, 2m, d)
            np.matmul(Q[bi, head, t0 + 1 : t1 + 1], k2.swapaxes(-1, -2), out=s)
            _softmax_(s, pairs, top[:g], total[:g])
            np.matmul(s, k2, out=O[bi, head, t0 + 1 : t1 + 1])

    threads.parallel_products(len(items), b * h * N * m * 2 * m, run)  # work: score entries
    return out, ((P0, P, K2) if keep else None)
