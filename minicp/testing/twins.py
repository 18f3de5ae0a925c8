"""Twins of precision bugs: what a kernel that keeps part of its online-softmax state in the dtype would err.

A fused attention kernel walks each query row's keys in tiles, keeping a running maximum m, a running sum
l and an accumulator acc = sum_j exp(s_j - m) v_j, rescaled when m grows (FlashAttention's online
softmax). Production kernels keep all three in float32. Kept in bfloat16 or float16 between key tiles,
each adds one rounding per tile:

* ``acc``: the accumulator rounded after every tile (errors like extra roundings of the output);
* ``max``: the running maximum rounded, so the rescaling exp(m_old - m_new) uses a rounded m_old while
  the earlier tiles were scaled with the exact one (the tiles' relative weights shift);
* ``sum``: the running sum rounded, so the whole row is divided by a slightly wrong l (a row-wise scale
  error, which the row-parallel statistic sees).

For up to ``ROWS`` (1024) query rows of head 0 spread over its blocks, this module computes the float64 output,
the production kernel's (``correct``: probabilities rounded to the dtype before P @ V, state in float32)
and each bug's, over key tiles of ``TILE`` keys (the largest tile in common use: the fewest roundings,
the hardest case), to first order in the roundings: every partial value is rounded from its exact value.
``minicp.testing.verdict`` compares a bug's errors with the correct twin's to predict the share of the
budget such a kernel would use, and calls a passing check *inconclusive* when that share is within the
budget.
"""

import numpy as onp

from minicp.testing.arrays import module_of, rounder, to_host

__all__ = ["TILE", "ROWS", "BUGS", "twin_stats"]

TILE = 128
ROWS = 1024  # sampled query rows (head 0)
BLOCKS = 16  # at most this many of head 0's blocks, evenly spaced
BUGS = ("correct", "acc", "max", "sum")


def _sample(plan):
    """[(rows (G, r), cols (G, C), diagonal, local row indices (r,))]: up to ``BLOCKS`` of head 0's blocks,
    evenly spaced, up to ``ROWS`` rows in all, evenly spaced within each; blocks of one shape together."""
    own = [(r, c, diagonal) for head, r, c, diagonal, _ in plan if head == 0]
    if not own:
        return []
    picks = onp.unique(onp.linspace(0, len(own) - 1, min(BLOCKS, len(own))).round().astype(int))
    per = max(1, ROWS // len(picks))
    groups = {}
    for i in picks:
        r, c, diagonal = own[i]
        local = onp.unique(onp.linspace(0, len(r) - 1, min(per, len(r))).round().astype(int))
        groups.setdefault((len(r), len(c), diagonal, local.tobytes()), []).append((r[local], c, local))
    return [
        (onp.stack([x[0] for x in blocks]), onp.stack([x[1] for x in blocks]), key[2], blocks[0][2])
        for key, blocks in groups.items()
    ]


def _running_max(xp, tile_max):
    """Running maximum over the last (tile) axis, on the host (small arrays)."""
    return xp.asarray(onp.maximum.accumulate(to_host(tile_max), axis=-1))


def _block(xp, q, k, v, rows, cols, diagonal, local, dtype, scale):
    """(4, 3) sums [sum e^2, sum par, sum R^2] of the correct twin and each bug over G same-shaped blocks'
    sampled rows (``rows`` (G, r), ``cols`` (G, C), ``local`` (r,) the rows' places in their blocks)."""
    rnd = rounder(dtype, xp)
    Q = xp.asarray(q[0, 0][xp.asarray(rows)], dtype=xp.float64)  # batch 0, head 0: (G, r, d)
    K = xp.asarray(k[0, 0][xp.asarray(cols)], dtype=xp.float64)  # (G, C, d)
    V = xp.asarray(v[0, 0][xp.asarray(cols)], dtype=xp.float64)
    C = cols.shape[1]
    s = xp.matmul(Q * scale, xp.swapaxes(K, -1, -2))  # (G, r, C); a kernel's float32 products differ by roundings
    if diagonal is not None:
        visible = xp.arange(C)[None, :] <= xp.asarray(local)[:, None] + diagonal
        s = xp.where(visible, s, -onp.inf)
    exact = xp.exp(s - s.max(axis=-1, keepdims=True))
    R = xp.matmul(exact, V) / exact.sum(axis=-1, keepdims=True)  # the float64 reference rows (G, r, d)
    T = -(-C // TILE)
    pad = T * TILE - C
    G, r = s.shape[0], s.shape[1]
    s32 = xp.pad(s.astype(xp.float32), ((0, 0), (0, 0), (0, pad)), constant_values=-onp.inf).reshape(G, r, T, TILE)
    V32 = xp.pad(V.astype(xp.float32), ((0, 0), (0, pad), (0, 0))).reshape(G, T, TILE, -1)
    m = _running_max(xp, s32.max(axis=-1))  # (G, r, T): the running maximum after each tile
    m = xp.where(xp.isfinite(m), m, 0.0)  # no visible key yet: nothing accumulated, any shift will do
    m_final = m[..., -1:]
    E = xp.exp(s32 - m[..., None])  # the tile's probabilities as the kernel forms them (scale m_t)
    L = E.sum(axis=-1)  # (G, r, T)
    PV = xp.einsum("grtk,gtkd->grtd", rnd(E), V32)  # the production rounding of P before P @ V
    to_final = xp.exp(m - m_final)  # (G, r, T): scale m_t -> m_final
    acc, l_sum = (PV * to_final[..., None]).sum(axis=-2), (L * to_final).sum(axis=-1)
    outs = {"correct": rnd(acc / l_sum[..., None])}
    A = xp.cumsum(PV * to_final[..., None], axis=-2) / to_final[..., None]  # partial accumulators, scale m_t
    dA = ((rnd(A) - A) * to_final[..., None]).sum(axis=-2)
    outs["acc"] = rnd((acc + dA) / l_sum[..., None])
    Lam = xp.cumsum(L * to_final, axis=-1) / to_final  # partial sums, scale m_t
    outs["sum"] = rnd(acc / (l_sum + ((rnd(Lam) - Lam) * to_final).sum(axis=-1))[..., None])
    shift = rnd(m) - m  # the rounded maxima, used by the next tile's rescaling
    shift[..., -1] = 0.0
    factor = xp.exp(xp.flip(xp.cumsum(xp.flip(shift, axis=-1), axis=-1), axis=-1))
    acc_m = (PV * (to_final * factor)[..., None]).sum(axis=-2)
    outs["max"] = rnd(acc_m / (L * to_final * factor).sum(axis=-1)[..., None])
    rr = xp.einsum("grd,grd->gr", R, R)
    sums = []
    for bug in BUGS:
        e = outs[bug].astype(xp.float64) - R
        er = xp.einsum("grd,grd->gr", e, R)
        par = xp.sum(xp.where(rr > 0, er * er / xp.where(rr > 0, rr, 1.0), 0.0))
        sums.append(xp.stack([xp.sum(e * e), par, xp.sum(rr)]))
    return xp.stack(sums)


def twin_stats(q, k, v, plan, dtype, scale=None):
    """(4, 3) float64 host array: for the correct twin and the bugs ``acc``, ``max`` and ``sum`` (``BUGS``), the
    sum of squared errors, the sum of row-parallel parts and the sum of R^2 over the sampled rows, batch 0,
    head 0. All zero when the case has no block of head 0. q, k, v in the storage dtype (NumPy or CuPy)."""
    xp = module_of(q)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    total = xp.zeros((len(BUGS), 3))
    for rows, cols, diagonal, local in _sample(plan):
        total += _block(xp, q, k, v, rows, cols, diagonal, local, dtype, scale)
    return to_host(total)
