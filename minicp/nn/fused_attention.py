"""ECP's attention core as one autograd primitive (the fast path of ``minicp.nn.attention.ecp``).

With K = V (the official sub-layer shares them) and n a multiple of m, N = n / m half segments:

    forward:   Q, K = q, kv as blocks (b, h, N, m, d)
               O_0 = attend(Q_0, K_0, K_0)           causal m x m          (ATTN)
               O_t = attend(Q_t, K2_t, K2_t)         K2_t = [K_{t-1}; K_t], m x 2m, query r sees keys 0..m+r (PAR)
    backward:  (dQ_0, dK_0, dV_0) and (dQ_t, dK2_t, dV2_t) from ``ops.attend_vjp`` with the kept probabilities;
               dKV = dK + dV, and each pair's gradient goes back to the two half segments it was built from:
               dKV_0 = dKV of ATTN,   dKV_{t-1} += dKV2_t[:m],   dKV_t += dKV2_t[m:]

The readable path (``ecp.attention``: slices, two concatenations and two ``ops.attend`` calls) computes the
same values, bit for bit, and the same gradients up to the order of three additions; as one primitive autograd
records one node instead of about sixteen, and its backward pass needs no zero-filled gradient for each slice
(tests/nn/test_fused_attention.py). On CuPy an untraced call (inference, nothing kept) is computed without
building K2 at all: ``minicp.backend.cuda_blocks``, equal up to float rounding (tests/backend/test_gpu_blocks.py).
On NumPy every call goes through ``minicp.backend.cpu_blocks``: windows of the keys instead of K2, and the
blocks in cache-sized groups spread over the thread pool.
"""

from autograd.extend import defvjp_argnums, primitive

from minicp import backend as B
from minicp.backend import cpu_blocks, cuda_blocks
from minicp.nn import fused, ops

_kept = {}  # id(output of a traced call) -> (P_0, P, K2), taken by the VJP maker at once


def ecp_core(q, kv, half_segment):
    """ECP attention of q (b, h, n, d), already scaled, against K = V = kv (b, h, n, d); n = N m, N >= 2."""
    return _ecp_core(q, kv, half_segment, ops._traced(q, kv))


def _blocks(q, kv, m):
    b, h, n, d = q.shape
    shape = (b, h, n // m, m, d)
    return B.raw.reshape(q, shape), B.raw.reshape(kv, shape)


def _masks(m):
    return ops.causal_mask(m, m), ops.causal_mask(m, 2 * m, diagonal=m)


def _core_forward(q, kv, m, keep):
    """ECP attention of plain arrays: (out (b, h, n, d), what the VJP needs; None when not ``keep``)."""
    xp = B.raw
    if not keep and B.name == "cupy" and cuda_blocks.applies(q, kv):  # inference on the GPU: no copies
        masks = (B.constant(mask) for mask in _masks(m))
        return cuda_blocks.ecp_forward(q, kv, m, *masks, B.masked_softmax_), None
    if ops._score_log is not None:  # the same score tensors as the readable path's two attend calls
        ops._score_log.extend([q.shape[:2] + (m, m), q.shape[:2] + (q.shape[2] // m - 1, m, 2 * m)])
    if B.name == "numpy" and cpu_blocks.applies(q, kv, m):  # CPU: groups of blocks in cache, no copies
        return cpu_blocks.ecp_forward(q, kv, m, *_masks(m), keep)
    Q, K = _blocks(q, kv, m)  # (b, h, N, m, d)
    K2 = xp.concatenate([K[:, :, :-1], K[:, :, 1:]], axis=3)  # (b, h, N-1, 2m, d)
    first, pairs = _masks(m)
    P0 = ops._probs_fast(Q[:, :, 0], K[:, :, 0], B.constant(first))  # (b, h, m, m)
    P = ops._probs_fast(Q[:, :, 1:], K2, B.constant(pairs))  # (b, h, N-1, m, 2m)
    O = xp.concatenate([ops._matmul(P0, K[:, :, 0])[:, :, None], ops._matmul(P, K2)], axis=2)
    return xp.reshape(O, q.shape), (P0, P, K2)


@primitive
def _ecp_core(q, kv, m, keep):
    out, saved = _core_forward(q, kv, m, keep)
    if keep:
        _kept[id(out)] = saved
    return out


def _ecp_core_vjp(g, q, kv, m, saved):
    """(dq, dkv) for the upstream g (b, h, n, d)."""
    xp = B.raw
    P0, P, K2 = saved
    Q, K = _blocks(q, kv, m)
    G = xp.reshape(g, Q.shape)
    first, pairs = _masks(m)
    dq0, dk0, dv0 = ops.attend_vjp(G[:, :, 0], Q[:, :, 0], K[:, :, 0], K[:, :, 0], first, P0)
    dq2, dk2, dv2 = ops.attend_vjp(G[:, :, 1:], Q[:, :, 1:], K2, K2, pairs, P)
    dq = xp.reshape(xp.concatenate([dq0[:, :, None], dq2], axis=2), q.shape)
    dk2 += dv2  # (b, h, N-1, 2m, d): K2 is both the keys and the values
    dkv = xp.zeros(K.shape, dtype=dk2.dtype)
    dkv[:, :, 0] = dk0 + dv0
    dkv[:, :, :-1] += dk2[:, :, :, :m]  # the first half of each pair: half segment t - 1
    dkv[:, :, 1:] += dk2[:, :, :, m:]  # the second half: half segment t
    return dq, xp.reshape(dkv, kv.shape)


defvjp_argnums(
    _ecp_core, fused.kept_vjp("ecp_core", _kept, lambda g, saved, q, kv, m, keep: _ecp_core_vjp(g, q, kv, m, saved))
)


# ----------------------------------------------------------------------------------------------------
# The whole ECP attention sub-layer as one primitive
# ----------------------------------------------------------------------------------------------------
#
#   forward:   q = to_q(x), kv = to_kv(x) as heads (b, h, n, d);  RoPE on both (where the layer has it);
#              q = q d^-0.5;  o = ecp_core(q, kv);  om = o as (b, n, D)
#              y[:, :m] = om[:, :m] W0^T + b0 (to_out_0),   y[:, m:] = om[:, m:] W^T + b (to_out)
#   backward:  dW0, db0, dW, db from g and om;  dom = g W (row blocks);  (dq, dkv) = ecp_core's VJP;
#              dq = dq d^-0.5;  RoPE^T (the rotation by -angle) on dq and dkv;
#              dWq = dq^T x,  dWkv = dkv^T x,  dx = dq Wq + dkv Wkv
#
# About twenty autograd nodes become one, and the slices, concatenations and head reshapes need no
# zero-filled gradients of their own in the backward pass (on a GPU each of those is a kernel launch).

_kept_sublayer = {}  # id(output of a traced call) -> what its backward pass needs


def sublayer_applies(cfg, n):
    """True when ``ecp_sublayer`` computes the layer: K = V, no per-head LayerNorm, n = N m with N >= 2."""
    m = cfg.half_segment
    return not cfg.separate_kv and not cfg.kv_layernorm and n % m == 0 and n // m >= 2


def ecp_sublayer(x, wq, wkv, w0, b0, w, b, tables, heads, m, style):
    """ECP attention sub-layer of the normalised stream x (b, n, D): the official projections (PyTorch
    layouts), RoPE by ``tables`` = (cos, sin) (n, d // 2) or None, ECP with K = V, and the two output
    projections. (b, n, D) -> (b, n, D); the same values as the composition in ``ecp.attention_layer``."""
    keep = ops._traced(x, wq, wkv, w0, b0, w, b)
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
    q, kv = _heads(fused.linear(x, wq), heads), _heads(fused.linear(x, wkv), heads)  # (b, h, n, d)
    if tables is not None:
        q, kv = fused.rope(q, *tables, style), fused.rope(kv, *tables, style)
    q = q * (D // heads) ** -0.5  # python float: keeps float32
    o, saved = _core_forward(q, kv, m, keep)
    om = _merged(o)  # (b, n, D)
    kept = (q, kv, om, saved) if keep else None
    del q, kv, o, saved  # untraced: the probabilities and the heads are freed before the output projections
    y = xp.empty((bsz, n, D), dtype=om.dtype)
    y[:, :m] = fused.linear(om[:, :m], w0, b0)  # rows 0..m-1: to_out_0
    y[:, m:] = fused.linear(om[:, m:], w, b)  # rows m..n-1: to_out
    if keep:
        _kept_sublayer[id(y)] = kept
    return y


def _sublayer_vjp(g, kept, x, wq, wkv, w0, b0, w, b, tables, heads, m, style, keep):
    """(dx, dWq, dWkv, dW0, db0, dW, db) for the upstream g (b, n, D); the arguments of ``_sublayer``."""
    xp = B.raw
    q, kv, om, saved = kept
    g0, g1 = fused._rows(g[:, :m]), fused._rows(g[:, m:])  # (b m, D), (b (n - m), D)
    dw0, db0 = fused._matmul_tn(g0, fused._rows(om[:, :m])), B.column_sum(g0)
    dw, db = fused._matmul_tn(g1, fused._rows(om[:, m:])), B.column_sum(g1)
    dom = xp.empty(om.shape, dtype=g.dtype)
    dom[:, :m] = xp.reshape(fused._dot(g0, w0), dom[:, :m].shape)
    dom[:, m:] = xp.reshape(fused._dot(g1, w), dom[:, m:].shape)
    dq, dkv = _ecp_core_vjp(_heads(dom, heads), q, kv, m, saved)
    dq = dq * (x.shape[-1] // heads) ** -0.5
    if tables is not None:
        cos, sin = tables
        dq, dkv = fused.rope(dq, cos, -sin, style), fused.rope(dkv, cos, -sin, style)  # the inverse rotation
    dq, dkv = fused._rows(_merged(dq)), fused._rows(_merged(dkv))  # (b n, D)
    dx = xp.reshape(fused._dot(dq, wq) + fused._dot(dkv, wkv), x.shape)
    x2 = fused._rows(x)
    return dx, fused._matmul_tn(dq, x2), fused._matmul_tn(dkv, x2), dw0, db0, dw, db


defvjp_argnums(_sublayer, fused.kept_vjp("ecp_sublayer", _kept_sublayer, _sublayer_vjp))
