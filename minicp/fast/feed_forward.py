"""The feed-forward sub-layer as one autograd primitive with a hand-written VJP (the fast engine).

autograd pays a Python-level cost for every operation it records, and a primitive's backward pass can
reuse what its forward pass computed only if both live in one primitive. The feed-forward sub-layer is
therefore one primitive here:

    feed_forward(x):   xn = LN(x) = xhat w_ln + b_ln,   xhat = (x - mean) / s,   s = sqrt(var + eps)
                       h = xn W1^T + b1,   a = GELU(h) = h Phi(h),   y = x + a W2^T + b2

    backward for g = dL/dy:
        db2 = sum g,   dW2 = g^T a,   da = g W2
        dh = da GELU'(h),   GELU'(h) = Phi(h) + h phi(h)           (kept from the forward pass)
        db1 = sum dh,   dW1 = dh^T xn,   dxn = dh W1
        dw_ln = sum dxn xhat,   db_ln = sum dxn,   u = dxn w_ln
        dx = g + (u - mean(u) - xhat mean(u xhat)) / s

Under ``autograd.grad`` (arguments traced) the forward pass keeps xhat, s, xn, a and GELU'(h) for the
backward pass; untraced calls keep nothing. The reference's composition (``minicp.nn.model.feed_forward``)
gives the same values and gradients (tests/fast/test_feed_forward.py). Written against the backend's plain
array module ``B.raw`` (NumPy or CuPy); element-wise passes run on row ranges in parallel on the CPU
(``minicp.fast.threads``); on CuPy the element-wise parts are three CUDA kernels.
"""

from autograd.extend import defvjp_argnums, primitive

from minicp import backend as B
from minicp.fast import arrays as A
from minicp.fast import threads
from minicp.fast.cuda import kernels
from minicp.fast.cuda import layers as cuda_layers
from minicp.fast.gelu import gelu_rows
from minicp.fast.primitives import kept_vjp, normalise, traced

_kept = {}  # id(output of a traced call) -> what its backward pass needs, taken by the VJP maker at once


def feed_forward(x, ln_w, ln_b, w1, b1, w2, b2, eps=1e-5):
    """x + Linear2(GELU(Linear1(LN(x)))) for the stream x (..., D): LN weights (D,), W1 (F, D), b1 (F,),
    W2 (D, F), b2 (D,), PyTorch layouts. One autograd node."""
    keep = traced(x, ln_w, ln_b, w1, b1, w2, b2)
    return _feed_forward(x, ln_w, ln_b, w1, b1, w2, b2, eps, keep)


def _feed_forward_gpu(x, x2, ln_w, ln_b, w1, b1, w2, b2, eps, keep):
    """The same sub-layer on CuPy in three kernels and two products (``minicp.fast.cuda.layers``):
    LayerNorm (keeping xhat and s when traced), bias + GELU (+ GELU'), residual + bias. None when the
    kernels do not apply (dtype, layout)."""
    normed = cuda_layers.layer_norm(x2, ln_w, ln_b, eps, save=keep)
    if normed is None:
        return None
    xn, xhat, std = normed if keep else (normed, None, None)
    h = xn @ w1.T  # (r, F)
    a = B.raw.empty_like(h)
    deriv = B.raw.empty_like(h) if keep else None
    gelu_rows(h, a, deriv, bias=b1)
    y = B.raw.reshape(cuda_layers.residual_bias_(a @ w2.T, x2, b2), x.shape)
    if keep:
        _kept[id(y)] = (xhat, std, xn, a, deriv)
    return y


@primitive
def _feed_forward(x, ln_w, ln_b, w1, b1, w2, b2, eps, keep):
    xp = B.raw
    x2 = A.rows(x)  # (r, D)
    if B.name == "cupy" and kernels.enabled:
        y = _feed_forward_gpu(x, x2, ln_w, ln_b, w1, b1, w2, b2, eps, keep)
        if y is not None:
            return y
    if not keep and B.name == "numpy":
        return xp.reshape(_feed_forward_blocks(x2, ln_w, ln_b, w1, b1, w2, b2, eps), x.shape)
    rows = x2.shape[0]
    xhat = xp.empty(x2.shape, dtype=x.dtype)
    std = xp.empty((rows, 1), dtype=x.dtype)
    xn = xp.empty(x2.shape, dtype=x.dtype)

    def normalise_rows(lo, hi):
        _, std[lo:hi] = normalise(x2[lo:hi], eps, out=xhat[lo:hi])
        xp.multiply(xhat[lo:hi], ln_w, out=xn[lo:hi])
        xn[lo:hi] += ln_b

    A.parallel(rows, x2.size, normalise_rows)
    h = A.dot(xn, w1.T)  # (r, F)
    a = xp.empty(h.shape, dtype=x.dtype)
    deriv = xp.empty(h.shape, dtype=x.dtype) if keep else None

    def activate(lo, hi):
        gelu_rows(h[lo:hi], a[lo:hi], None if deriv is None else deriv[lo:hi], bias=b1)

    A.parallel(rows, 2 * h.size, activate)
    y = A.dot(a, w2.T)  # (r, D)

    def residual(lo, hi):
        y[lo:hi] += x2[lo:hi]
        y[lo:hi] += b2

    A.parallel(rows, y.size, residual)
    y = xp.reshape(y, x.shape)
    if keep:
        _kept[id(y)] = (xhat, std, xn, a, deriv)
    return y


BLOCK_ENTRIES = 1 << 20  # entries of one row block's hidden activations (4 MiB of float32): fewer repacks of W1, W2


def _feed_forward_blocks(x2, ln_w, ln_b, w1, b1, w2, b2, eps):
    """The untraced sub-layer on NumPy (inference): the same formulas over blocks of rows, so that a
    block's LayerNorm, hidden activations (rows, F) and GELU stay in cache and no (r, F) array is made.
    Each thread takes a contiguous range of rows and runs its products single-threaded."""
    xp = B.raw
    rows, D = x2.shape
    step = max(1, min(rows, BLOCK_ENTRIES // w1.shape[0]))
    y = xp.empty(x2.shape, dtype=x2.dtype)

    def run(lo, hi):
        xn = xp.empty((step, D), dtype=x2.dtype)
        h = xp.empty((step, w1.shape[0]), dtype=x2.dtype)
        a = xp.empty_like(h)
        for r0 in range(lo, hi, step):
            r1 = min(hi, r0 + step)
            xs, ns, hs, as_, ys = x2[r0:r1], xn[: r1 - r0], h[: r1 - r0], a[: r1 - r0], y[r0:r1]
            normalise(xs, eps, out=ns)
            ns *= ln_w
            ns += ln_b
            xp.matmul(ns, w1.T, out=hs)
            gelu_rows(hs, as_, bias=b1)
            xp.matmul(as_, w2.T, out=ys)
            ys += xs
            ys += b2

    threads.parallel_products(rows, rows * w1.shape[0], run)  # work: hidden activations
    return y


def _feed_forward_vjp(g, saved, ln_w, w1, w2):
    """(dx, dln_w, dln_b, dW1, db1, dW2, db2) for the upstream g (..., D); ``saved`` from the forward."""
    xp = B.raw
    xhat, std, xn, a, deriv = saved
    g2 = A.rows(g)
    db2, dw2 = A.column_sum(g2), A.dot_tn(g2, a)
    dh = A.dot(g2, w2)  # da (r, F), turned into dh in place
    A.parallel(dh.shape[0], dh.size, lambda lo, hi: dh[lo:hi].__imul__(deriv[lo:hi]))
    db1, dw1 = A.column_sum(dh), A.dot_tn(dh, xn)
    dxn = A.dot(dh, w1)  # (r, D)
    dx = xp.empty(g2.shape, dtype=g.dtype)
    parts_w, parts_b = {}, {}
    inv = 1.0 / g2.shape[-1]

    def rows(lo, hi):
        u, xh, out = dxn[lo:hi], xhat[lo:hi], dx[lo:hi]
        parts_w[lo], parts_b[lo] = A.column_sum(u * xh), A.column_sum(u)
        u *= ln_w  # dL/dxhat
        xp.multiply(xh, xp.sum(u * xh, axis=-1, keepdims=True) * inv, out=out)
        xp.subtract(u, out, out=out)
        out -= xp.sum(u, axis=-1, keepdims=True) * inv
        out /= std[lo:hi]
        out += g2[lo:hi]  # the residual

    A.parallel(g2.shape[0], 3 * g2.size, rows)
    return xp.reshape(dx, g.shape), A.total(parts_w), A.total(parts_b), dw1, db1, dw2, db2


defvjp_argnums(
    _feed_forward,
    kept_vjp(
        "feed_forward",
        _kept,
        lambda g, saved, x, ln_w, ln_b, w1, b1, w2, b2, eps, keep: _feed_forward_vjp(g, saved, ln_w, w1, w2),
    ),
)
