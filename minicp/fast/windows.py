"""ECP's core for inference as batched products over overlapping windows of the keys: nothing is copied.

ECP's pairs are K2_t = [K_{t-1}; K_t], the 2m rows (t-1) m .. (t+1) m - 1 of a head's keys. In a C-contiguous
(b, h, n, d) array, viewed as one matrix of b h n rows, they are a window of 2m rows, and the window of the
next block starts m rows later. So the products of every pair are one batched product whose key windows
overlap (they are only read), with no concatenated K2, no copy of the queries and none of the output. On
CuPy the batched products are cuBLAS's strided-batched GEMMs (``minicp.fast.cuda.blocks``); on NumPy the same
windows are strided views (used by the tests, which check this plan on the CPU against the reference).

The heads follow each other in memory with the same step (n rows = N blocks), so all heads' pairs are one
batch: blocks j = 1 .. b h N - 1, each against the window that starts at block j - 1. The blocks j = k N
(the first block of each head after the first) get a wrong window (the previous head's last block); their
results are overwritten by the first-block attention (causal m x m, one batch over the heads), computed
after it: 1/N of the pair products is wasted.

    S_j = Q_j W_j^T      (m, 2m)     W_j: rows (j - 1) m .. (j + 1) m - 1 of the keys
    P_j = softmax(S_j, pair mask)
    O_j = P_j W_j        (m, d)
    then for each head k, block j = k N:  S = Q_j K_j^T (m, m), causal;  O_j = softmax(S) K_j
"""

from collections import namedtuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from minicp import backend as B
from minicp.fast import arrays as A
from minicp.fast.cuda import blocks as cuda_blocks

Window = namedtuple("Window", "array first rows step count")
Window.__doc__ = """``count`` matrices of ``rows`` rows each from the C-contiguous array ``array`` seen as one matrix of
d columns: matrix i is its rows first + i * step .. first + i * step + rows - 1 (windows may overlap)."""


def applies(q, kv):
    """True for C-contiguous float32/float64 arrays q, kv of one dtype and shape (b, h, n, d) of the backend."""
    return (
        q.dtype == kv.dtype
        and q.dtype.name in ("float32", "float64")
        and q.shape == kv.shape
        and q.ndim == 4
        and q.flags.c_contiguous
        and kv.flags.c_contiguous
    )


def view(w, writeable=False):
    """A NumPy Window as a strided (count, rows, d) view of its array: nothing copied."""
    a = w.array
    d = a.shape[-1]
    flat = a.reshape(-1, d)  # C-contiguous: a view
    row, item = flat.strides
    start = flat[w.first :]
    return as_strided(start, (w.count, w.rows, d), (w.step * row, row, item), writeable=writeable)


def products_nt(out, a, b):
    """out[i] = a[i] b[i]^T for the windows a (count, r, d), b (count, c, d); out (count, r, c) contiguous."""
    if B.name == "cupy":
        cuda_blocks.gemm_nt(out, a, b)
    else:
        np.matmul(view(a), view(b).swapaxes(-1, -2), out=out)


def products_nn(out, p, b):
    """out[i] = p[i] b[i] for p (count, r, c) contiguous and the windows b (count, c, d), out (count, r, d)."""
    if B.name == "cupy":
        cuda_blocks.gemm_nn(out, p, b)
    else:
        np.matmul(p, view(b), out=view(out, writeable=True))


def ecp_forward(q, kv, m, first_mask, pair_mask):
    """ECP attention of q (b, h, n, d), already scaled, against K = V = kv; both C-contiguous, n = N m, N >= 2.

    ``first_mask`` (m, m), ``pair_mask`` (m, 2m): backend booleans, True = visible. Returns out (b, h, n, d)."""
    assert applies(q, kv)
    b, h, n, d = q.shape
    N = n // m
    assert n == N * m and N >= 2
    blocks = b * h * N  # all heads' half segments, m rows apart
    out = B.raw.empty_like(q)
    S = B.raw.empty((blocks - 1, m, 2 * m), dtype=q.dtype)
    keys = Window(kv, 0, 2 * m, m, blocks - 1)  # the window of block j - 1 and block j
    products_nt(S, Window(q, m, m, m, blocks - 1), keys)  # blocks j = 1 .. blocks - 1
    A.masked_softmax_(S, pair_mask)
    products_nn(Window(out, m, m, m, blocks - 1), S, keys)
    # the first block of every head (causal m x m), written over what the pair products left there
    heads = b * h
    S0 = B.raw.empty((heads, m, m), dtype=q.dtype)
    first_keys = Window(kv, 0, m, n, heads)
    products_nt(S0, Window(q, 0, m, n, heads), first_keys)
    A.masked_softmax_(S0, first_mask)
    products_nn(Window(out, 0, m, n, heads), S0, first_keys)
    return out
