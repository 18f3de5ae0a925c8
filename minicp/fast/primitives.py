"""The fast engine's primitives: the model's dense and element-wise operations as autograd primitives.

Each function here is one ``autograd.extend.primitive`` with a hand-written VJP, computed with the
backend's plain array module ``B.raw`` (NumPy on the CPU, CuPy on the GPU), so the same code is the GPU
backward pass and autograd records one node per operation instead of one per array op. On the CPU the
element-wise passes run on contiguous row ranges in parallel (``minicp.fast.threads``); on CuPy LayerNorm
and RoPE are CUDA kernels (``minicp.fast.cuda``).

    linear(x, w, b)        y = x W^T + b                 dx = g W,  dW = g^T x,  db = sum g
    layer_norm(x, w, b)    y = xhat w + b, xhat = (x - mean) / sqrt(var + eps)
                           dx = (gw - mean(gw) - xhat mean(gw xhat)) / sqrt(var + eps)
    rope(x, cos, sin)      a rotation of channel pairs   dx = the rotation by -angle of g
    embedding(w, ids)      y = w[ids]                    dW = rows of g summed per id
    cross_entropy(z, t)    mean_r (logsumexp(z_r) - z_r,t_r)   dz = (softmax(z) - onehot(t)) / rows

The reference computes the same functions as compositions of array operations (``minicp.nn.ops``,
``minicp.nn.model``) differentiated by autograd; tests/fast/test_primitives.py holds each primitive's
values and gradients to the reference's in float64 and float32.
"""

import numpy as onp
from autograd.extend import Box, defvjp, defvjp_argnums, primitive

from minicp import backend as B
from minicp.fast import arrays as A
from minicp.fast.cuda import kernels, layers


def traced(*arrays):
    """True when any of ``arrays`` is an autograd box: the call is being differentiated, so a primitive
    keeps what its backward pass needs."""
    return any(isinstance(a, Box) for a in arrays)


def first_order_only(name, *values):
    """Raise the one error for a derivative of a fused VJP (a higher-order gradient) when any of ``values``
    is traced. The VJPs of layer_norm, embedding, cross_entropy and the whole-sub-layer primitives
    work in place on plain buffers, so they are not themselves differentiable; linear's and rope's are."""
    if traced(*values):
        raise NotImplementedError(
            f"{name}: the fast engine gives first-order gradients only; for higher orders use the reference "
            f"engine (engine='reference', or minicp.engine('reference'))"
        )


def kept_vjp(name, kept, full_vjp):
    """The VJP maker (for ``defvjp_argnums``) of a primitive whose traced forward pass stored what its backward
    pass needs in ``kept[id(output)]``: ``full_vjp(g, saved, *args)`` returns the gradients of every array
    argument, in order, and the maker hands autograd those it asks for. Nothing stored means the output is
    itself traced (a higher-order derivative): ``first_order_only`` raises."""

    def maker(argnums, ans, args, kwargs):
        saved = kept.pop(id(ans), None)
        if saved is None:
            first_order_only(name, ans)

        def vjp(g):
            grads = full_vjp(g, saved, *args)
            return tuple(grads[i] for i in argnums)

        return vjp

    return maker


# ----------------------------------------------------------------------------------------------------
# Linear
# ----------------------------------------------------------------------------------------------------


@primitive
def linear(x, w, b=None):
    """PyTorch ``nn.Linear``: x (..., in), w (out, in), b (out,) or None -> (..., out); one 2-D matmul."""
    y = A.dot(A.rows(x), w.T)  # (rows, out)
    if b is not None:
        A.parallel(y.shape[0], y.size, lambda lo, hi: y[lo:hi].__iadd__(b))
    return B.raw.reshape(y, (*x.shape[:-1], w.shape[0]))


defvjp(
    linear,
    lambda ans, x, w, b=None: lambda g: B.raw.reshape(A.dot(A.rows(g), w), x.shape),  # dx = g W
    lambda ans, x, w, b=None: lambda g: A.dot_tn(A.rows(g), A.rows(x)),  # dW = g^T x   (out, in)
    lambda ans, x, w, b=None: lambda g: A.column_sum(A.rows(g)),  # db = sum over rows
)


# ----------------------------------------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------------------------------------


def normalise(x2, eps, out=None):
    """xhat = (x - mean) / sqrt(var + eps) (into ``out``) and the divisor, for the rows x2 (r, D)."""
    xp = B.raw
    inv = 1.0 / x2.shape[-1]
    xc = xp.subtract(x2, xp.sum(x2, axis=-1, keepdims=True) * inv, out=out)
    std = xp.sqrt(xp.sum(xc * xc, axis=-1, keepdims=True) * inv + eps)  # biased variance, as torch
    xc /= std
    return xc, std


@primitive
def layer_norm(x, w, b, eps=1e-5):
    """PyTorch ``nn.LayerNorm`` over the last axis of x (..., D); w, b (D,)."""
    x2 = A.rows(x)
    if B.name == "cupy" and kernels.enabled:
        y = layers.layer_norm(x2, w, b, eps)  # one kernel instead of about eight passes
        if y is not None:
            return B.raw.reshape(y, x.shape)
    y = B.raw.empty(x2.shape, dtype=x.dtype)

    def rows(lo, hi):
        xhat, _ = normalise(x2[lo:hi], eps, out=y[lo:hi])
        xhat *= w
        xhat += b

    A.parallel(x2.shape[0], x2.size, rows)
    return B.raw.reshape(y, x.shape)


def layer_norm_vjp(g, x, w, eps):
    """(dx, dw, db) of layer_norm for the upstream g, row ranges in parallel."""
    first_order_only("layer_norm", g, x, w)
    xp = B.raw
    x2, g2 = A.rows(x), A.rows(g)
    dx = xp.empty(x2.shape, dtype=x.dtype)
    parts_w, parts_b = {}, {}
    inv = 1.0 / x2.shape[-1]

    def rows(lo, hi):
        xhat, std = normalise(x2[lo:hi], eps)
        gs = g2[lo:hi]
        parts_w[lo] = A.column_sum(gs * xhat)
        parts_b[lo] = A.column_sum(gs)
        gw = gs * w  # dL/dxhat
        out = dx[lo:hi]
        xp.multiply(xhat, xp.sum(gw * xhat, axis=-1, keepdims=True) * inv, out=out)
        xp.subtract(gw, out, out=out)
        out -= xp.sum(gw, axis=-1, keepdims=True) * inv
        out /= std

    A.parallel(x2.shape[0], 3 * x2.size, rows)
    return xp.reshape(dx, x.shape), A.total(parts_w), A.total(parts_b)


def _layer_norm_maker(argnums, ans, args, kwargs):
    x, w = args[0], args[1]
    eps = args[3] if len(args) > 3 else kwargs.get("eps", 1e-5)

    def vjp(g):
        grads = layer_norm_vjp(g, x, w, eps)
        return tuple(grads[a] for a in argnums)

    return vjp


defvjp_argnums(layer_norm, _layer_norm_maker)


# ----------------------------------------------------------------------------------------------------
# RoPE
# ----------------------------------------------------------------------------------------------------


def _pairs(a, style, half):
    """The two members of every rotated channel pair of a (..., d), as strided views."""
    if style == "halves":
        return a[..., :half], a[..., half:]
    return a[..., 0 : 2 * half : 2], a[..., 1 : 2 * half : 2]


@primitive
def rope(x, cos, sin, style):
    """Rotate the channel pairs of x (..., n, d) by the tables cos, sin (n, d//2) (see ``minicp.nn.rope.rope``)."""
    if B.name == "cupy":
        y = kernels.fused_rope(x, cos, sin, style)  # one kernel where it applies
        if y is not None:
            return y
    xp = B.raw
    half = x.shape[-1] // 2
    y = xp.empty(x.shape, dtype=x.dtype)
    first, second = _pairs(x, style, half)
    y_first, y_second = _pairs(y, style, half)
    xp.multiply(first, cos, out=y_first)
    y_first -= second * sin  # x_a cos - x_b sin
    xp.multiply(second, cos, out=y_second)
    y_second += first * sin  # x_b cos + x_a sin
    if x.shape[-1] % 2:
        y[..., -1] = x[..., -1]  # an odd last channel is not rotated
    return y


# The rotation is orthogonal: its transpose is the rotation by -angle, i.e. the same tables with -sin.
defvjp(rope, lambda ans, x, cos, sin, style: lambda g: rope(g, cos, -sin, style))


# ----------------------------------------------------------------------------------------------------
# Embedding lookup
# ----------------------------------------------------------------------------------------------------


@primitive
def embedding(w, ids):
    """Rows of the table w (V, D) for the integer ids (...) of the current backend -> (..., D)."""
    return w[ids]


def embedding_vjp(g, w, ids):
    """dW (V, D): the rows of g (..., D) summed per id. CPU: one sort and ``add.reduceat`` (not the slow
    ``add.at``); GPU: ``cupy.add.at`` (atomic adds)."""
    first_order_only("embedding", g, w)
    g2 = A.rows(g)
    flat = ids.ravel()
    dw = B.raw.zeros(w.shape, dtype=g.dtype)
    if B.name == "cupy":
        B.raw.add.at(dw, flat, g2)  # atomic adds
        return dw
    order = onp.argsort(flat, kind="stable")
    rows, starts = onp.unique(flat[order], return_index=True)
    dw[rows] = onp.add.reduceat(g2[order], starts, axis=0)
    return dw


defvjp(embedding, lambda ans, w, ids: lambda g: embedding_vjp(g, w, ids))


# ----------------------------------------------------------------------------------------------------
# Softmax cross-entropy
# ----------------------------------------------------------------------------------------------------


def _log_normaliser(z2):
    """Row max m (r, 1) and log sum exp(z - m) (r, 1) of the logits z2 (r, V)."""
    xp = B.raw
    m = xp.max(z2, axis=-1, keepdims=True)
    e = z2 - m
    xp.exp(e, out=e)
    return m, xp.log(xp.sum(e, axis=-1, keepdims=True))


@primitive
def cross_entropy(logits, targets):
    """Mean over rows of -log softmax(logits)[target]: logits (..., V), integer targets (...) -> scalar."""
    xp = B.raw
    z2, t = A.rows(logits), targets.ravel()
    picked = xp.empty(z2.shape[0], dtype=logits.dtype)

    def rows(lo, hi):
        m, lse = _log_normaliser(z2[lo:hi])
        r = xp.arange(hi - lo)
        picked[lo:hi] = (z2[lo:hi][r, t[lo:hi]] - m[:, 0]) - lse[:, 0]  # log p(target), as log_softmax

    A.parallel(z2.shape[0], z2.size, rows)
    return -xp.sum(picked) * (1.0 / picked.size)


def cross_entropy_vjp(g, logits, targets):
    """d loss / d logits = g (softmax(logits) - onehot(targets)) / rows."""
    first_order_only("cross_entropy", g, logits)
    xp = B.raw
    z2, t = A.rows(logits), targets.ravel()
    dz = xp.empty(z2.shape, dtype=logits.dtype)
    scale = g * (1.0 / z2.shape[0])

    def rows(lo, hi):
        out = dz[lo:hi]
        m, lse = _log_normaliser(z2[lo:hi])
        xp.subtract(z2[lo:hi], m + lse, out=out)
        xp.exp(out, out=out)  # softmax
        out[xp.arange(hi - lo), t[lo:hi]] -= 1.0
        out *= scale

    A.parallel(z2.shape[0], 2 * z2.size, rows)
    return xp.reshape(dz, logits.shape)


defvjp(cross_entropy, lambda ans, logits, targets: lambda g: cross_entropy_vjp(g, logits, targets))
