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
(tests/nn/test_fused_attention.py).
"""

from autograd.extend import defvjp_argnums, primitive

from minicp import backend as B
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


@primitive
def _ecp_core(q, kv, m, keep):
    xp = B.raw
    Q, K = _blocks(q, kv, m)  # (b, h, N, m, d)
    K2 = xp.concatenate([K[:, :, :-1], K[:, :, 1:]], axis=3)  # (b, h, N-1, 2m, d)
    first, pairs = _masks(m)
    if ops._score_log is not None:  # the same score tensors as the readable path's two attend calls
        ops._score_log.extend([Q.shape[:2] + (m, m), K2.shape[:3] + (m, 2 * m)])
    P0 = ops._probs_fast(Q[:, :, 0], K[:, :, 0], B.constant(first))  # (b, h, m, m)
    P = ops._probs_fast(Q[:, :, 1:], K2, B.constant(pairs))  # (b, h, N-1, m, 2m)
    O = xp.concatenate([ops._matmul(P0, K[:, :, 0])[:, :, None], ops._matmul(P, K2)], axis=2)
    out = xp.reshape(O, q.shape)
    if keep:
        _kept[id(out)] = (P0, P, K2)
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


def _ecp_core_maker(argnums, ans, args, kwargs):
    q, kv, m, _ = args
    saved = _kept.pop(id(ans), None)
    if saved is None:  # not kept: ans itself traced, a higher-order derivative
        fused.first_order_only("ecp_core", ans)

    def vjp(g):
        grads = _ecp_core_vjp(g, q, kv, m, saved)
        return tuple(grads[i] for i in argnums)

    return vjp


defvjp_argnums(_ecp_core, _ecp_core_maker)
