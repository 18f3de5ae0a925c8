"""ECP's attention core as one autograd primitive (the fast path of ``minicp.nn.attention.ecp``).

With K = V (the official sub-layer shares them) and n a multiple of m, N = n / m half segments:

    forward:   Q, K = q, kv as blocks (b, h, N, m, d), computed as one flat stack of b h N blocks
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
    """q, kv (b, h, n, d) as F = b h N half-segment blocks (F, m, d), one flat stack over batch and heads."""
    b, h, n, d = q.shape
    shape = (b * h * (n // m), m, d)
    return B.raw.reshape(q, shape), B.raw.reshape(kv, shape)


def _masks(m):
    return ops.causal_mask(m, m), ops.causal_mask(m, 2 * m, diagonal=m)


@primitive
def _ecp_core(q, kv, m, keep):
    xp = B.raw
    b, h, n, d = q.shape
    N = n // m
    Q, K = _blocks(q, kv, m)  # (F, m, d), F = b h N
    # Pair j = blocks (j, j + 1) of the flat stack, for query block j + 1: every later half segment of a
    # head, plus b h - 1 pairs that straddle two heads (query block 0 of the next head). Those are computed
    # (one stack, no copies of Q or of the output), then overwritten by the first blocks' own attention.
    K2 = xp.concatenate([K[:-1], K[1:]], axis=1)  # (F - 1, 2m, d)
    first, pairs = _masks(m)
    if ops._score_log is not None:  # the same score tensors as the readable path's two attend calls
        ops._score_log.extend([(b, h, m, m), (b, h, N - 1, m, 2 * m)])
    P = ops._probs_fast(Q[1:], K2, B.constant(pairs))  # (F - 1, m, 2m)
    P[N - 1 :: N] = 0.0  # the straddling pairs: no output, no gradient
    O = xp.empty(Q.shape, dtype=P.dtype)  # (F, m, d)
    ops._matmul_into(P, K2, O[1:])
    P0 = ops._probs_fast(Q[::N], K[::N], B.constant(first))  # (b h, m, m): every head's first half segment
    O[::N] = ops._matmul(P0, K[::N])
    out = xp.reshape(O, q.shape)
    if keep:
        _kept[id(out)] = (P0, P, K2)
    return out


def _ecp_core_vjp(g, q, kv, m, saved):
    """(dq, dkv) for the upstream g (b, h, n, d)."""
    xp = B.raw
    P0, P, K2 = saved
    N = q.shape[2] // m
    Q, K = _blocks(q, kv, m)
    G = xp.reshape(g, Q.shape)  # (F, m, d)
    first, pairs = _masks(m)
    dq = xp.empty(Q.shape, dtype=G.dtype)
    dq[1:], dk2, dv2 = ops.attend_vjp(G[1:], Q[1:], K2, K2, pairs, P)  # straddling pairs: P = 0, all zero
    dk2 += dv2  # (F - 1, 2m, d): K2 is both the keys and the values
    dq0, dk0, dv0 = ops.attend_vjp(G[::N], Q[::N], K[::N], K[::N], first, P0)
    dq[::N] = dq0
    dkv = xp.zeros(K.shape, dtype=dk2.dtype)
    dkv[:-1] += dk2[:, :m]  # the first half of each pair: block j
    dkv[1:] += dk2[:, m:]  # the second half: block j + 1
    dkv[::N] += dk0 + dv0
    return xp.reshape(dq, q.shape), xp.reshape(dkv, kv.shape)


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
