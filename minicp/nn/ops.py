"""The building blocks every architecture shares.

All of them are pure functions of arrays and parameter dicts, written against the backend's array
module ``B.xp`` (autograd.numpy on the CPU, CuPy on the GPU). Weights use PyTorch's layout, so an
official state_dict entry drops in unchanged: ``Linear(x) = x W^T + b`` with ``W`` of shape (out, in).

Shape letters: b batch, h heads, n sequence, i query rows, j key columns, d head dim, D model dim.

The one op with a hand-written gradient is ``attend``: softmax(q k^T + mask) v. Its VJP computes the
probabilities P once and reuses them for all three gradients, and it is written with ``B.xp`` so the
same function serves as the GPU backward (``attend_vjp``).
"""

import contextlib
import functools
import math

import numpy as onp  # host-side constants only (masks, angles); never applied to traced values
from autograd.core import SparseObject, vspace
from autograd.extend import Box, defvjp, defvjp_argnums, primitive
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.numpy.numpy_vjps import untake

from minicp import backend as B
from minicp.nn import fused
from minicp.nn.rope import ROPE_STYLES, rope, rope_angles, rope_frequencies, rope_tables  # noqa: F401 (re-exported)

# ----------------------------------------------------------------------------------------------------
# Dense layers
# ----------------------------------------------------------------------------------------------------


def linear(x, p):
    """PyTorch ``nn.Linear``: y = x W^T + b.  x (..., in), p = {"weight": (out, in), "bias"?: (out,)}."""
    w = p["weight"]
    if fused.active():
        return fused.linear(x, w, p.get("bias"))
    if x.ndim > 2:  # one 2-D matrix product: NumPy's stacked-matmul path is several times slower
        y = B.xp.reshape(B.xp.reshape(x, (-1, x.shape[-1])) @ w.T, (*x.shape[:-1], w.shape[0]))
    else:
        y = x @ w.T  # (..., out)
    if "bias" in p:
        y = y + p["bias"]
    return y


def layer_norm(x, p, eps=1e-5):
    """PyTorch ``nn.LayerNorm`` over the last axis: biased variance, eps inside the square root."""
    if fused.active():
        return fused.layer_norm(x, p["weight"], p["bias"], eps)
    xp = B.xp
    inv = 1.0 / x.shape[-1]  # sum * (1/D), not mean: autograd's mean VJP turns float32 into float64
    mean = xp.sum(x, axis=-1, keepdims=True) * inv
    var = xp.sum((x - mean) ** 2, axis=-1, keepdims=True) * inv  # biased, as torch
    return (x - mean) / xp.sqrt(var + eps) * p["weight"] + p["bias"]


def gelu(x):
    """Exact GELU (``nn.GELU()`` default): x * Phi(x) = x/2 * (1 + erf(x / sqrt 2))."""
    if fused.active():
        return fused.gelu(x)
    return 0.5 * x * (1.0 + B.special.erf(x * (1.0 / math.sqrt(2.0))))


# ----------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------


def split_heads(x, heads):
    """'b n (h d) -> b h n d': head j owns channels j*d .. (j+1)*d - 1, as the official rearrange."""
    b, n, D = x.shape
    d = D // heads
    return B.xp.swapaxes(B.xp.reshape(x, (b, n, heads, d)), 1, 2)  # (b, h, n, d)


def merge_heads(x):
    """'b h n d -> b n (h d)', the inverse of ``split_heads``."""
    b, h, n, d = x.shape
    return B.xp.reshape(B.xp.swapaxes(x, 1, 2), (b, n, h * d))  # (b, n, D)


# ----------------------------------------------------------------------------------------------------
# Masked attention: softmax(q k^T + mask) v with a hand-written VJP
# ----------------------------------------------------------------------------------------------------

_score_log = None  # when a list, every attend() call appends the shape of the score tensor it built


@contextlib.contextmanager
def record_scores():
    """Record the shape of every score matrix ``attend`` materialises (for exact step counting).

    >>> with record_scores() as shapes: ...      # shapes: list of tuples (..., i, j)
    """
    global _score_log
    previous, _score_log = _score_log, []
    try:
        yield _score_log
    finally:
        _score_log = previous


@functools.lru_cache(maxsize=16)
def causal_mask(rows, cols, diagonal=0):
    """Boolean (rows, cols) mask: entry (r, c) is visible iff c <= r + diagonal (np.tril's k).

    Cached and read-only, so that ``B.constant`` moves each mask to the GPU once.
    """
    mask = onp.tril(onp.ones((rows, cols), dtype=bool), k=diagonal)
    mask.flags.writeable = False
    return mask


def _probs(q, k, mask):
    """P = softmax over keys of q k^T, masked entries exactly 0. q (..., i, d), k (..., j, d).

    Written with pure array ops so that autograd can differentiate it (second-order gradients run
    through the VJP below, which calls this).
    """
    xp = B.xp
    s = q @ xp.swapaxes(k, -1, -2)  # (..., i, j)
    if mask is not None:
        # -inf instead of the official -finfo.max: identical results because no row is fully masked
        # (patterns check that), and exp(-inf) is exactly 0 without overflow warnings.
        s = xp.where(mask, s, -xp.inf)
    s = s - xp.max(s, axis=-1, keepdims=True)  # stable: the row max is always a visible entry
    e = xp.exp(s)
    return e / xp.sum(e, axis=-1, keepdims=True)


def _probs_fast(q, k, mask):
    """The same P, computed in place in one (..., i, j) buffer: for plain (untraced) arrays only.

    Score matrices dominate memory and time, so the forward pass and the first-order VJP avoid the
    four temporaries of ``_probs``. On NumPy these are the same operations in the same order, so the
    same numbers; on CuPy one fused kernel (``B.masked_softmax_``), equal up to float rounding.
    """
    s = _matmul(q, B.xp.swapaxes(k, -1, -2))  # (..., i, j), the only big allocation
    return B.masked_softmax_(s, mask)  # NumPy: the ops of _probs in place; CuPy: fused


def _traced(*arrays):
    return any(isinstance(a, Box) for a in arrays)


def _matmul(a, b):
    """a @ b of plain arrays; on the CPU large stacks of products run in parallel (``threads.matmul``)."""
    return B.threads.matmul(a, b) if B.name == "numpy" else a @ b


_kept = {}  # id(output of a traced attend) -> its probabilities P, handed from the forward to its VJP


def attend(q, k, v, mask=None):
    """O = softmax(q k^T, masked) v, the core of every attention in minicp.

    q (..., i, d) must already carry the 1/sqrt(d) scale (the official code scales q, not the scores),
    k (..., j, d), v (..., j, e), mask: None or a host boolean array broadcastable to (..., i, j),
    True = visible. Returns (..., i, e). Under ``autograd.grad`` the probabilities P of the forward pass
    are kept for the backward pass (one score matrix per call), which then needs no second q k^T.
    """
    return _attend(q, k, v, mask, _traced(q, k, v))


@primitive
def _attend(q, k, v, mask, keep):
    """``attend`` as one autograd primitive; ``keep``: hand P to the VJP (only when traced)."""
    if _score_log is not None:
        _score_log.append(tuple(q.shape[:-1]) + (k.shape[-2],))
    p = _probs_fast(q, k, None if mask is None else B.constant(mask))
    out = _matmul(p, v)
    if keep:
        _kept[id(out)] = p  # taken at once by _attend_vjp_maker, which autograd calls right after
    return out


def attend_vjp(g, q, k, v, mask=None, p=None):
    """Gradients (dq, dk, dv) of attend for the upstream gradient g (..., i, e).

    P = softmax(S), S = q k^T     dV = P^T g      dP = g V^T
    dS = P * (dP - rowsum(dP * P))     dq = dS k     dk = dS^T q
    ``p``: the forward pass's P (plain arrays only); computed here when None.
    """
    xp = B.xp
    mask = None if mask is None else B.constant(mask)
    if not _traced(g, q, k, v):
        return _attend_vjp_plain(g, q, k, v, mask, p)
    p = _probs(q, k, mask)  # differentiating the VJP itself (order 2): P must be traced too
    dp = g @ xp.swapaxes(v, -1, -2)  # (..., i, j)
    ds = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True))
    dq = ds @ k  # (..., i, d)
    dk = xp.swapaxes(ds, -1, -2) @ q  # (..., j, d)
    dv = xp.swapaxes(p, -1, -2) @ g  # (..., j, e)
    return dq, dk, dv


def _attend_vjp_plain(g, q, k, v, mask, p):
    """``attend_vjp`` for plain arrays: dS in place in the dP buffer, products in parallel on the CPU."""
    p = _probs_fast(q, k, mask) if p is None else p
    swap = B.xp.swapaxes
    ds = _matmul(g, swap(v, -1, -2))  # dP, then turned into dS in place
    _softmax_backward_(ds, p)
    return _matmul(ds, k), _matmul(swap(ds, -1, -2), q), _matmul(swap(p, -1, -2), g)  # dq, dk, dv


def _softmax_backward_(ds, p):
    """dS = P * (dP - rowsum(dP * P)) in place in the dP buffer ds; row ranges in parallel on the CPU."""
    xp = B.raw

    def rows(d2, p2):
        d2 -= xp.sum(d2 * p2, axis=-1, keepdims=True)
        d2 *= p2

    if B.name != "numpy" or not (ds.flags.c_contiguous and p.flags.c_contiguous):
        rows(ds, p)
        return
    d2, p2 = ds.reshape(-1, ds.shape[-1]), p.reshape(-1, p.shape[-1])
    B.threads.parallel_rows(d2.shape[0], 2 * d2.size, lambda lo, hi: rows(d2[lo:hi], p2[lo:hi]))


def _unbroadcast(grad, shape):
    """Sum a gradient over the axes that broadcasting added or stretched to reach ``shape``."""
    xp = B.xp
    while grad.ndim > len(shape):
        grad = xp.sum(grad, axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = xp.sum(grad, axis=axis, keepdims=True)
    return grad


def _attend_vjp_maker(argnums, ans, args, kwargs):
    q, k, v, mask, _ = args
    p = _kept.pop(id(ans), None)  # None when ans is itself traced (order 2): attend_vjp recomputes

    def vjp(g):
        grads = attend_vjp(g, q, k, v, mask, p)
        return tuple(_unbroadcast(grads[a], args[a].shape) for a in argnums)

    return vjp


defvjp_argnums(_attend, _attend_vjp_maker)


# ----------------------------------------------------------------------------------------------------
# A faster gradient for indexing x[idx] on the CPU
# ----------------------------------------------------------------------------------------------------
# autograd's VJP of ``x[idx]`` scatters the cotangent with ``numpy.add.at``, which is slow (a quarter of
# a training step's time here). For basic indices (slices, integers) no element is selected twice, so a
# plain ``A[idx] += g`` gives the same numbers; for an integer row lookup (the embedding) we sum the rows
# of equal ids with one ``add.reduceat``. Everything else, and differentiating the VJP itself (boxed g),
# keeps autograd's own rule. This re-registers the VJP of ``ArrayBox.__getitem__`` for the process.


def _basic_index(idx):
    parts = idx if isinstance(idx, tuple) else (idx,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, onp.integer)) for p in parts)


def _scatter_add(g, idx, vs):
    if isinstance(g, Box):
        return untake(g, idx, vs)
    if B.name == "cupy" and not _basic_index(idx):

        def add_on_device(A):
            import cupyx  # optional dependency: only on the GPU backend

            cupyx.scatter_add(A, idx, g)
            return A

        return SparseObject(vs, add_on_device)
    if _basic_index(idx):

        def add_into(A):
            A[idx] += g
            return A

        return SparseObject(vs, add_into)
    if isinstance(idx, onp.ndarray) and idx.dtype.kind in "iu" and len(vs.shape) == 2:

        def add_rows(A):
            ids = idx.ravel()
            order = onp.argsort(ids, kind="stable")
            rows, starts = onp.unique(ids[order], return_index=True)
            A[rows] += onp.add.reduceat(onp.reshape(g, (-1, vs.shape[1]))[order], starts, axis=0)
            return A

        return SparseObject(vs, add_rows)
    return untake(g, idx, vs)


def _register_fast_getitem_vjp():
    defvjp(ArrayBox.__getitem__, lambda ans, A, idx: lambda g: _scatter_add(g, idx, vspace(A)))


_register_fast_getitem_vjp()
