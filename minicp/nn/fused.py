"""Fused primitives: the model's heavy element-wise and dense operations as autograd primitives.

Each function here is one ``autograd.extend.primitive`` with a hand-written VJP, computed with the
backend's plain array module ``B.raw`` (NumPy on the CPU, CuPy on the GPU), so the same code is the GPU
backward pass and autograd records one node per operation instead of one per array op. On the CPU the
element-wise passes run on contiguous row ranges in parallel (``minicp.backend.threads``).

The readable path, plain compositions of ``autograd.numpy`` operations, stays in ``minicp.nn.ops``
and ``minicp.nn.model``; ``enabled`` switches between the two (default: fused). Both give the same
values up to rounding and the same gradients (tests/nn/test_fused.py checks them in float64).

    linear(x, w, b)        y = x W^T + b                 dx = g W,  dW = g^T x,  db = sum g
    layer_norm(x, w, b)    y = xhat w + b, xhat = (x - mean) / sqrt(var + eps)
                           dx = (gw - mean(gw) - xhat mean(gw xhat)) / sqrt(var + eps)
    gelu(x)                y = x Phi(x) (exact, erf)     dx = g (Phi(x) + x phi(x))
    rope(x, cos, sin)      a rotation of channel pairs   dx = the rotation by -angle of g
    embedding(w, ids)      y = w[ids]                    dW = rows of g summed per id
    cross_entropy(z, t)    mean_r (logsumexp(z_r) - z_r,t_r)   dz = (softmax(z) - onehot(t)) / rows
"""

import contextlib
import math

import numpy as onp
from autograd.extend import Box, defvjp, defvjp_argnums, primitive

from minicp import backend as B
from minicp.backend import threads
from minicp.nn import gelu32

enabled = True  # False: the readable compositions of autograd.numpy ops (minicp.nn.ops, minicp.nn.model)


def active():
    """True when ``ops`` and ``model`` should call these primitives: ``enabled``, on the NumPy backend, or
    on CuPy with ``gpu_autograd`` (the default there; ``autograd_on_gpu=False`` keeps the plain
    compositions, which then run forward only)."""
    return enabled and (B.name == "numpy" or B.gpu_autograd)


def first_order_only(name, *values):
    """Raise the one error for a derivative of a fused VJP (a higher-order gradient) when any of ``values``
    is traced. The VJPs of layer_norm, gelu, embedding, cross_entropy and the whole-sub-layer primitives
    work in place on plain buffers, so they are not themselves differentiable; linear's and rope's are."""
    if any(isinstance(v, Box) for v in values):
        raise NotImplementedError(
            f"{name}: the fused primitives give first-order gradients only; for higher orders switch them off "
            f"with minicp.nn.fused.use_fused(False)"
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


@contextlib.contextmanager
def use_fused(flag):
    """Temporarily switch the fused primitives on (True) or off (False)."""
    global enabled
    if not isinstance(flag, bool):
        raise TypeError(f"flag must be True or False, got {flag!r}")
    previous, enabled = enabled, flag
    try:
        yield
    finally:
        enabled = previous


def _rows(a):
    """a as a 2-D (rows, last axis) array: a view when a is contiguous."""
    return B.raw.reshape(a, (-1, a.shape[-1]))


def _parallel(rows, work, fn):
    """Row ranges in parallel on the CPU; one call on the GPU (its kernels are parallel already)."""
    if B.name == "numpy":
        threads.parallel_rows(rows, work, fn)
    else:
        fn(0, rows)


def _dot(a, b):
    """a @ b for 2-D a, b; on the CPU the rows of a are split over the pool (``threads.matmul_rows``)."""
    return threads.matmul_rows(a, b) if B.name == "numpy" else a @ b


def _matmul_tn(a, b):
    """a^T b (a weight gradient); on the CPU the long sum over rows is split over the pool."""
    return threads.matmul_tn(a, b) if B.name == "numpy" else a.T @ b


def _total(parts):
    """The sum of the per-range partial sums in ``parts`` (a dict keyed by range start), in range order."""
    keys = sorted(parts)
    total = parts[keys[0]]
    for k in keys[1:]:
        total = total + parts[k]
    return total


# ----------------------------------------------------------------------------------------------------
# Linear
# ----------------------------------------------------------------------------------------------------


@primitive
def linear(x, w, b=None):
    """PyTorch ``nn.Linear``: x (..., in), w (out, in), b (out,) or None -> (..., out); one 2-D matmul."""
    y = _dot(_rows(x), w.T)  # (rows, out)
    if b is not None:
        _parallel(y.shape[0], y.size, lambda lo, hi: y[lo:hi].__iadd__(b))
    return B.raw.reshape(y, (*x.shape[:-1], w.shape[0]))


defvjp(
    linear,
    lambda ans, x, w, b=None: lambda g: B.raw.reshape(_dot(_rows(g), w), x.shape),  # dx = g W
    lambda ans, x, w, b=None: lambda g: _matmul_tn(_rows(g), _rows(x)),  # dW = g^T x   (out, in)
    lambda ans, x, w, b=None: lambda g: B.column_sum(_rows(g)),  # db = sum over rows
)


# ----------------------------------------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------------------------------------


def _normalise(x2, eps, out=None):
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
    x2 = _rows(x)
    if B.name == "cupy" and B.fused_kernels:
        y = B.cuda_layers.layer_norm(x2, w, b, eps)  # one kernel instead of about eight passes
        if y is not None:
            return B.raw.reshape(y, x.shape)
    y = B.raw.empty(x2.shape, dtype=x.dtype)

    def rows(lo, hi):
        xhat, _ = _normalise(x2[lo:hi], eps, out=y[lo:hi])
        xhat *= w
        xhat += b

    _parallel(x2.shape[0], x2.size, rows)
    return B.raw.reshape(y, x.shape)


def _layer_norm_vjp(g, x, w, eps):
    """(dx, dw, db) of layer_norm for the upstream g, row ranges in parallel."""
    first_order_only("layer_norm", g, x, w)
    xp = B.raw
    x2, g2 = _rows(x), _rows(g)
    dx = xp.empty(x2.shape, dtype=x.dtype)
    parts_w, parts_b = {}, {}
    inv = 1.0 / x2.shape[-1]

    def rows(lo, hi):
        xhat, std = _normalise(x2[lo:hi], eps)
        gs = g2[lo:hi]
        parts_w[lo] = B.column_sum(gs * xhat)
        parts_b[lo] = B.column_sum(gs)
        gw = gs * w  # dL/dxhat
        out = dx[lo:hi]
        xp.multiply(xhat, xp.sum(gw * xhat, axis=-1, keepdims=True) * inv, out=out)
        xp.subtract(gw, out, out=out)
        out -= xp.sum(gw, axis=-1, keepdims=True) * inv
        out /= std

    _parallel(x2.shape[0], 3 * x2.size, rows)
    return xp.reshape(dx, x.shape), _total(parts_w), _total(parts_b)


def _layer_norm_maker(argnums, ans, args, kwargs):
    x, w = args[0], args[1]
    eps = args[3] if len(args) > 3 else kwargs.get("eps", 1e-5)

    def vjp(g):
        grads = _layer_norm_vjp(g, x, w, eps)
        return tuple(grads[a] for a in argnums)

    return vjp


defvjp_argnums(layer_norm, _layer_norm_maker)


# ----------------------------------------------------------------------------------------------------
# Exact GELU
# ----------------------------------------------------------------------------------------------------

_RSQRT2 = 1.0 / math.sqrt(2.0)
_RSQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@primitive
def gelu(x):
    """Exact GELU x/2 (1 + erf(x / sqrt 2)), the ``nn.GELU()`` default; erf, not the tanh approximation."""
    if B.name == "cupy" and B.fused_kernels:
        return B.cuda_layers.gelu(x)
    x2 = _rows(x)
    y = B.raw.empty(x2.shape, dtype=x.dtype)

    def rows(lo, hi):
        out, xs = y[lo:hi], x2[lo:hi]
        if gelu32.applies(xs, out):
            gelu32.gelu_rows(xs, a=out)
            return
        B.raw.multiply(xs, _RSQRT2, out=out)
        B.special.erf(out, out=out)
        out += 1.0
        out *= xs
        out *= 0.5  # exact: (x (1 + erf)) / 2 = (x / 2)(1 + erf)

    _parallel(x2.shape[0], x2.size, rows)
    return B.raw.reshape(y, x.shape)


def gelu_vjp(g, x):
    """g * GELU'(x) = g (Phi(x) + x phi(x)), Phi(x) = (1 + erf(x / sqrt 2)) / 2, phi the normal density."""
    first_order_only("gelu", g, x)
    if B.name == "cupy" and B.fused_kernels:
        return B.cuda_layers.gelu(x, grad=g)
    xp = B.raw
    x2, g2 = _rows(x), _rows(g)
    dx = xp.empty(x2.shape, dtype=x.dtype)

    def rows(lo, hi):
        out, xs = dx[lo:hi], x2[lo:hi]
        if gelu32.applies(xs, out):
            gelu32.gelu_rows(xs, deriv=out)
            out *= g2[lo:hi]
            return
        xp.multiply(xs, _RSQRT2, out=out)
        B.special.erf(out, out=out)
        out += 1.0
        out *= 0.5  # Phi(x)
        density = xs * xs
        density *= -0.5
        xp.exp(density, out=density)
        density *= xs
        density *= _RSQRT2PI  # x phi(x)
        out += density
        out *= g2[lo:hi]

    _parallel(x2.shape[0], 2 * x2.size, rows)
    return xp.reshape(dx, x.shape)


defvjp(gelu, lambda ans, x: lambda g: gelu_vjp(g, x))


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
    """Rotate the channel pairs of x (..., n, d) by the tables cos, sin (n, d//2) (see ``ops.rope``)."""
    fused = B.fused_rope(x, cos, sin, style)  # CuPy: one kernel; None elsewhere
    if fused is not None:
        return fused
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
    g2 = _rows(g)
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
    z2, t = _rows(logits), targets.ravel()
    picked = xp.empty(z2.shape[0], dtype=logits.dtype)

    def rows(lo, hi):
        m, lse = _log_normaliser(z2[lo:hi])
        r = xp.arange(hi - lo)
        picked[lo:hi] = (z2[lo:hi][r, t[lo:hi]] - m[:, 0]) - lse[:, 0]  # log p(target), as log_softmax

    _parallel(z2.shape[0], z2.size, rows)
    return -xp.sum(picked) * (1.0 / picked.size)


def cross_entropy_vjp(g, logits, targets):
    """d loss / d logits = g (softmax(logits) - onehot(targets)) / rows."""
    first_order_only("cross_entropy", g, logits)
    xp = B.raw
    z2, t = _rows(logits), targets.ravel()
    dz = xp.empty(z2.shape, dtype=logits.dtype)
    scale = g * (1.0 / z2.shape[0])

    def rows(lo, hi):
        out = dz[lo:hi]
        m, lse = _log_normaliser(z2[lo:hi])
        xp.subtract(z2[lo:hi], m + lse, out=out)
        xp.exp(out, out=out)  # softmax
        out[xp.arange(hi - lo), t[lo:hi]] -= 1.0
        out *= scale

    _parallel(z2.shape[0], 2 * z2.size, rows)
    return xp.reshape(dz, logits.shape)


defvjp(cross_entropy, lambda ans, logits, targets: lambda g: cross_entropy_vjp(g, logits, targets))
