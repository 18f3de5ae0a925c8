"""The building blocks every architecture shares: the reference, exactly as it runs.

All of them are pure functions of arrays and parameter dicts, written against the backend's array
module ``B.xp`` (autograd.numpy on the CPU, CuPy on the GPU), so ``autograd.grad`` differentiates them
with its own rules. Weights use PyTorch's layout, so an official state_dict entry drops in unchanged:
``Linear(x) = x W^T + b`` with ``W`` of shape (out, in).

Shape letters: b batch, h heads, n sequence, i query rows, j key columns, d head dim, D model dim.

One op has a hand-written gradient: ``attend``, softmax(q k^T + mask) v. autograd would keep five
score-sized intermediates of the softmax for its backward pass, one set per block of every layer; as one
primitive, only q, k and v are kept and the backward pass rebuilds the probabilities P once per call (one
score matrix alive at a time). ``attend_vjp`` is that backward pass, written as the four formulas of its
docstring and checked against finite differences (``check_grads``, orders 1 and 2) in tests/nn/test_ops.py.

This is the reference engine. The fast engine computes the same functions with its own primitives;
``minicp.engines`` chooses between the two.
"""

import contextlib
import functools
import math

import numpy as onp  # host-side constants only (masks); never applied to traced values
from autograd.extend import defvjp_argnums, primitive

from minicp import backend as B

# ----------------------------------------------------------------------------------------------------
# Dense layers
# ----------------------------------------------------------------------------------------------------


def linear(x, p):
    """PyTorch ``nn.Linear``: y = x W^T + b.  x (..., in), p = {"weight": (out, in), "bias"?: (out,)}."""
    w = p["weight"]
    rows = B.xp.reshape(x, (-1, x.shape[-1]))  # (r, in): one 2-D product
    y = B.xp.reshape(rows @ w.T, (*x.shape[:-1], w.shape[0]))  # (..., out)
    if "bias" in p:
        y = y + p["bias"]
    return y


def layer_norm(x, p, eps=1e-5):
    """PyTorch ``nn.LayerNorm`` over the last axis: biased variance, eps inside the square root.

    mean = sum(x) / D,  var = sum((x - mean)^2) / D,  y = (x - mean) / sqrt(var + eps) * w + b
    """
    xp = B.xp
    inv = 1.0 / x.shape[-1]  # sum * (1/D), not mean: autograd's mean VJP turns float32 into float64
    mean = xp.sum(x, axis=-1, keepdims=True) * inv
    var = xp.sum((x - mean) ** 2, axis=-1, keepdims=True) * inv  # biased, as torch
    return (x - mean) / xp.sqrt(var + eps) * p["weight"] + p["bias"]


def gelu(x):
    """Exact GELU (``nn.GELU()`` default): x Phi(x) = x/2 (1 + erf(x / sqrt 2)); erf, not the tanh form."""
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

_score_log = None  # inside record_scores: the list every attend() call appends its score shape to


@contextlib.contextmanager
def record_scores():
    """Record the shape of every score matrix ``attend`` builds (for exact step counting).

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


def probabilities(q, k, mask):
    """P = softmax over keys of q k^T, masked entries exactly 0. q (..., i, d), k (..., j, d) -> (..., i, j).

    Pure array operations, so autograd can differentiate it (the second-order gradient of ``attend``
    runs through ``attend_vjp``, which calls this with traced arrays).
    """
    xp = B.xp
    s = q @ xp.swapaxes(k, -1, -2)  # (..., i, j)
    if mask is not None:
        # -inf instead of the official -finfo.max: identical results because no row is fully masked
        # (the patterns check that), and exp(-inf) is exactly 0 without overflow warnings.
        s = xp.where(B.constant(mask), s, -xp.inf)
    s = s - xp.max(s, axis=-1, keepdims=True)  # stable: the row max is always a visible entry
    e = xp.exp(s)
    return e / xp.sum(e, axis=-1, keepdims=True)


@primitive
def attend(q, k, v, mask=None):
    """O = softmax(q k^T, masked) v, the core of every attention in minicp.

    q (..., i, d) must already carry the 1/sqrt(d) scale (the official code scales q, not the scores),
    k (..., j, d), v (..., j, e), mask: None or a host boolean array broadcastable to (..., i, j),
    True = visible. Returns (..., i, e).
    """
    if _score_log is not None:
        _score_log.append(tuple(q.shape[:-1]) + (k.shape[-2],))
    return probabilities(q, k, mask) @ v  # (..., i, e)


def attend_vjp(g, q, k, v, mask=None):
    """Gradients (dq, dk, dv) of ``attend`` for the upstream gradient g (..., i, e):

    P = softmax(S), S = q k^T     dV = P^T g      dP = g V^T
    dS = P * (dP - rowsum(dP * P))     dq = dS k     dk = dS^T q
    """
    xp = B.xp
    p = probabilities(q, k, mask)  # (..., i, j), rebuilt from q and k
    dp = g @ xp.swapaxes(v, -1, -2)  # (..., i, j)
    ds = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True))
    dq = ds @ k  # (..., i, d)
    dk = xp.swapaxes(ds, -1, -2) @ q  # (..., j, d)
    dv = xp.swapaxes(p, -1, -2) @ g  # (..., j, e)
    return dq, dk, dv


def unbroadcast(grad, shape):
    """Sum a gradient over the axes that broadcasting added or stretched to reach ``shape``."""
    xp = B.xp
    while grad.ndim > len(shape):
        grad = xp.sum(grad, axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = xp.sum(grad, axis=axis, keepdims=True)
    return grad


def _attend_vjp_maker(argnums, ans, args, kwargs):
    q, k, v = args[:3]
    mask = args[3] if len(args) > 3 else kwargs.get("mask")

    def vjp(g):
        grads = attend_vjp(g, q, k, v, mask)
        return tuple(unbroadcast(grads[a], args[a].shape) for a in argnums)

    return vjp


defvjp_argnums(attend, _attend_vjp_maker)
