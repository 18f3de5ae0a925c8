"""ECP's attention in the fast engine: its core as one autograd primitive with three routes, and the whole
attention sub-layer as one primitive.

With K = V (the official sub-layer shares them) and n = N m, N >= 2 half segments:

    forward:   O_0 = attend(Q_0, K_0, K_0)        causal m x m                                   (ATTN)
               O_t = attend(Q_t, K2_t, K2_t)      K2_t = [K_{t-1}; K_t], m x 2m, query r sees keys 0..m+r  (PAR)
    backward:  (dQ_0, dK_0, dV_0) and (dQ_t, dK2_t, dV2_t) from the kept probabilities (arrays.attend_backward);
               dKV = dK + dV, and each pair's gradient goes back to the two half segments it was built from:
               dKV_0 = dKV of ATTN,   dKV_{t-1} += dKV2_t[:m],   dKV_t += dKV2_t[m:]

Routes of the forward pass (``ROUTES``; ``route=`` forces one, as the tests do on NumPy):

    "cpu-blocks"  NumPy (the default there): ``minicp.fast.cpu_blocks``, strided key windows, the blocks in
                  cache-sized groups over the thread pool
    "k2"          any backend: K2 concatenated, every block's scores in one array, the fused softmax
                  (the default on CuPy under autograd)
    "windows"     strided-batched products over overlapping key windows, nothing copied (the default for
                  CuPy inference, through cuBLAS; on NumPy the same plan through strided views)

All three feed one backward pass. The reference is ``minicp.nn.attention.ecp.attention`` (slices, two
concatenations, two ``ops.attend``): every route equals it in float64 to 1e-14 relative, values and gradients,
and float32 to float32 rounding (tests/fast/test_ecp_routes.py).
"""

from autograd.extend import defvjp_argnums, primitive

from minicp import backend as B
from minicp.fast import arrays as A
from minicp.fast import cpu_blocks, windows
from minicp.fast.primitives import kept_vjp, linear, rope, traced
from minicp.nn.ops import causal_mask

ROUTES = ("cpu-blocks", "k2", "windows")

_kept = {}  # id(output of a traced call) -> (P_0, P, K2), taken by the VJP maker at once


def applies(q, kv, m):
    """True when ``core`` computes ECP for these arrays: one float dtype and shape (b, h, n, d), n = N m, N >= 2."""
    return (
        q.ndim == 4
        and q.shape == kv.shape
        and q.dtype == kv.dtype
        and q.dtype.kind == "f"
        and q.shape[2] % m == 0
        and q.shape[2] // m >= 2
    )


def route_for(q, kv, m, keep):
    """The route the core takes by default for these arrays (see the module docstring)."""
    if B.name == "numpy" and cpu_blocks.applies(q, kv, m):
        return "cpu-blocks"
    if B.name == "cupy" and not keep and windows.applies(q, kv):
        return "windows"
    return "k2"


def core(q, kv, half_segment, route=None):
    """ECP attention of q (b, h, n, d), already scaled, against K = V = kv (b, h, n, d); n = N m, N >= 2."""
    if route is not None and route not in ROUTES:
        raise ValueError(f"route {route!r} is not one of {ROUTES}")
    return _core(q, kv, half_segment, traced(q, kv), route)


def _blocks(a, m):
    """(b, h, n, d) -> (b, h, N, m, d)."""
    b, h, n, d = a.shape
    return B.raw.reshape(a, (b, h, n // m, m, d))


def masks(m):
    """Host masks of the first block (m, m) and of the pairs (m, 2m), True = visible."""
    return causal_mask(m, m), causal_mask(m, 2 * m, diagonal=m)


def _k2_forward(q, kv, m, keep):
    """The K2 route: (out (b, h, n, d), (P0, P, K2) when ``keep``)."""
    xp = B.raw
    Q, K = _blocks(q, m), _blocks(kv, m)  # (b, h, N, m, d)
    K2 = xp.concatenate([K[:, :, :-1], K[:, :, 1:]], axis=3)  # (b, h, N-1, 2m, d)
    first, pairs = (B.constant(mask) for mask in masks(m))
    P0 = A.probabilities(Q[:, :, 0], K[:, :, 0], first)  # (b, h, m, m)
    P = A.probabilities(Q[:, :, 1:], K2, pairs)  # (b, h, N-1, m, 2m)
    O = xp.concatenate([A.matmul(P0, K[:, :, 0])[:, :, None], A.matmul(P, K2)], axis=2)  # (b, h, N, m, d)
    return xp.reshape(O, q.shape), ((P0, P, K2) if keep else None)


def core_forward(q, kv, m, keep, route=None):
    """ECP attention of plain arrays: (out (b, h, n, d), what the VJP needs, or None unless ``keep``)."""
    route = route_for(q, kv, m, keep) if route is None else route
    if route == "cpu-blocks":
        return cpu_blocks.ecp_forward(q, kv, m, *masks(m), keep)
    if route == "windows":
        if keep:
            raise ValueError("the 'windows' route keeps nothing for a backward pass (inference only)")
        first, pairs = (B.constant(mask) for mask in masks(m))
        return windows.ecp_forward(B.raw.ascontiguousarray(q), B.raw.ascontiguousarray(kv), m, first, pairs), None
    return _k2_forward(q, kv, m, keep)


@primitive
def _core(q, kv, m, keep, route):
    out, saved = core_forward(q, kv, m, keep, route)
    if keep:
        _kept[id(out)] = saved
    return out


def core_vjp(g, q, kv, m, saved):
    """(dq, dkv) for the upstream g (b, h, n, d); ``saved`` = (P0, P, K2) from the forward pass."""
    xp = B.raw
    P0, P, K2 = saved
    Q, K = _blocks(q, m), _blocks(kv, m)
    G = xp.reshape(g, Q.shape)
    dq0, dk0, dv0 = A.attend_backward(G[:, :, 0], Q[:, :, 0], K[:, :, 0], K[:, :, 0], P0)
    dq2, dk2, dv2 = A.attend_backward(G[:, :, 1:], Q[:, :, 1:], K2, K2, P)
    dq = xp.reshape(xp.concatenate([dq0[:, :, None], dq2], axis=2), q.shape)
    dk2 += dv2  # (b, h, N-1, 2m, d): K2 is both the keys and the values
    dkv = xp.zeros(K.shape, dtype=dk2.dtype)
    dkv[:, :, 0] = dk0 + dv0
    dkv[:, :, :-1] += dk2[:, :, :, :m]  # the first half of each pair: half segment t - 1
    dkv[:, :, 1:] += dk2[:, :, :, m:]  # the second half: half segment t
    return dq, xp.reshape(dkv, kv.shape)


defvjp_argnums(_core, kept_vjp("ecp_core", _kept, lambda g, saved, q, kv, m, keep, route: core_vjp(g, q, kv, m, saved)))


# ----------------------------------------------------------------------------------------------------
# The whole ECP attention sub-layer as one primitive
# ----------------------------------------------------------------------------------------------------
#
#   forward:   q = to_q(x), kv = to_kv(x) as heads (b, h, n, d);  RoPE on both (where the layer has it);
#              q = q d^-0.5;  o = core(q, kv);  om = o as (b, n, D)
#              y[:, :m] = om[:, :m] W0^T + b0 (to_out_0),   y[:, m:] = om[:, m:] W^T + b (to_out)
#   backward:  dW0, db0, dW, db from g and om;  dom = g W (row blocks);  (dq, dkv) = core_vjp;
#              dq = dq d^-0.5;  RoPE^T (the rotation by -angle) on dq and dkv;
#              dWq = dq^T x,  dWkv = dkv^T x,  dx = dq Wq + dkv Wkv
#
# About twenty autograd nodes become one, and the slices, concatenations and head reshapes need no
# zero-filled gradients of their own in the backward pass (on a GPU each of those is a kernel launch).

_kept_sublayer = {}  # id(output of a traced call) -> what its backward pass needs


def sublayer_applies(cfg, n):
    """True when ``sublayer`` computes the layer: K = V, no per-head LayerNorm, n = N m with N >= 2."""
    m = cfg.half_segment
    return not cfg.separate_kv and not cfg.kv_layernorm and n % m == 0 and n // m >= 2


def sublayer(x, wq, wkv, w0, b0, w, b, tables, heads, m, style):
    """ECP attention sub-layer of the normalised stream x (b, n, D): the official projections (PyTorch
    layouts), RoPE by ``tables`` = (cos, sin) (n, d // 2) or None, ECP with K = V, and the two output
    projections. (b, n, D) -> (b, n, D); the function of ``minicp.nn.attention.ecp.attention_layer``."""
    keep = traced(x, wq, wkv, w0, b0, w, b)
    return _sublayer(x, wq, wkv, w0, b0, w, b, tables, heads, m, style, keep)


def _heads(a, heads):
    """(b, n, D) -> (b, h, n, d), a view."""
    bsz, n, D = a.shape
    return B.raw.swapaxes(B.raw.reshape(a, (bsz, n, heads, D // heads)), 1, 2)


def _merged(a):
    """(b, h, n, d) -> (b, n, D)."""
    bsz, h, n, d = a.shape
    return B.raw.reshape(B.raw.swapaxes(a, 1, 2), (bsz, n, h * d))


@primitive
def _sublayer(x, wq, wkv, w0, b0, w, b, tables, heads, m, style, keep):
    xp = B.raw
    bsz, n, D = x.shape
    q, kv = _heads(linear(x, wq), heads), _heads(linear(x, wkv), heads)  # (b, h, n, d)
    if tables is not None:
        q, kv = rope(q, *tables, style), rope(kv, *tables, style)
    q = q * (D // heads) ** -0.5  # python float: keeps float32
    o, saved = core_forward(q, kv, m, keep)
    om = _merged(o)  # (b, n, D)
    kept = (q, kv, om, saved) if keep else None
    del q, kv, o, saved  # untraced: the probabilities and the heads are freed before the output projections
    y = xp.empty((bsz, n, D), dtype=om.dtype)
    y[:, :m] = linear(om[:, :m], w0, b0)  # rows 0..m-1: to_out_0
    y[:, m:] = linear(om[:, m:], w, b)  # rows m..n-1: to_out
    if keep:
        _kept_sublayer[id(y)] = kept
    return y


def _sublayer_vjp(g, kept, x, wq, wkv, w0, b0, w, b, tables, heads, m, style, keep):
    """(dx, dWq, dWkv, dW0, db0, dW, db) for the upstream g (b, n, D); the arguments of ``_sublayer``."""
    xp = B.raw
    q, kv, om, saved = kept
    g0, g1 = A.rows(g[:, :m]), A.rows(g[:, m:])  # (b m, D), (b (n - m), D)
    dw0, db0 = A.dot_tn(g0, A.rows(om[:, :m])), A.column_sum(g0)
    dw, db = A.dot_tn(g1, A.rows(om[:, m:])), A.column_sum(g1)
    dom = xp.empty(om.shape, dtype=g.dtype)
    dom[:, :m] = xp.reshape(A.dot(g0, w0), dom[:, :m].shape)
    dom[:, m:] = xp.reshape(A.dot(g1, w), dom[:, m:].shape)
    dq, dkv = core_vjp(_heads(dom, heads), q, kv, m, saved)
    dq = dq * (x.shape[-1] // heads) ** -0.5
    if tables is not None:
        cos, sin = tables
        dq, dkv = rope(dq, cos, -sin, style), rope(dkv, cos, -sin, style)  # the inverse rotation
    dq, dkv = A.rows(_merged(dq)), A.rows(_merged(dkv))  # (b n, D)
    dx = xp.reshape(A.dot(dq, wq) + A.dot(dkv, wkv), x.shape)
    x2 = A.rows(x)
    return dx, A.dot_tn(dq, x2), A.dot_tn(dkv, x2), dw0, db0, dw, db


defvjp_argnums(_sublayer, kept_vjp("ecp_sublayer", _kept_sublayer, _sublayer_vjp))
