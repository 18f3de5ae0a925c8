"""Block-by-block attention with explicit gradients: the float64 reference and the plain low-precision twin.

Every computed query row of an architecture lies in exactly one block of its block list
(``minicp.analysis.kernel_pattern.blocks``): rows r, key columns c, and the in-block mask
"local (i, j) visible iff j <= i + diagonal". One block, for one head, is plain attention:

    S = (q_r * scale) k_c^T          (|r|, |c|)       P = softmax(S masked)       O = P v_c
    dP = dO v_c^T      dS = P * (dP - rowsum(dP * P))
    dq_r = (dS k_c) * scale          dk_c += dS^T (q_r * scale)          dv_c += P^T dO

so the cost is the pattern's own (linear in n for ECP, LongLoRA, PerceiverAR ...). Rows are processed
in chunks (softmax is per row, so chunking is exact); a causal block only reads the key columns its
chunk can see.

``dtype="float64"`` is the reference (exact float64 arithmetic). Any other dtype gives the *plain
implementation in that dtype*: the same formulas with every intermediate (q * scale, S, P, O, dP, dS,
dq, dk, dv) rounded to the dtype, products accumulated in float32 (float64 for float64); this is what a
straightforward PyTorch implementation in that dtype computes, and its error against the reference is
the rounding floor that ``minicp.testing.verdict`` scales the budgets by.
"""

import numpy as onp

from minicp.analysis import kernel_pattern
from minicp.testing.dtypes import rounder

__all__ = ["block_plan", "attention_blocks", "ROW_CHUNK"]

ROW_CHUNK = 256


def block_plan(arch, n, heads, pattern_args):
    """[(head, rows, cols, diagonal or None, name)] and the sorted output rows of the pattern."""
    blocks = kernel_pattern.blocks(arch, n, heads, **pattern_args)
    plan = [(b["head"], b["rows"], b["cols"], b["diagonal"], b["name"]) for b in blocks]
    return plan, kernel_pattern.rows(arch, n, heads, **pattern_args).astype(onp.int64)


def _chunk_cols(n_cols, i0, i1, diagonal):
    """Key columns the rows i0..i1-1 of a block can see: a prefix [0, stop) of the block's columns."""
    if diagonal is None:
        return n_cols
    return int(min(n_cols, max(0, i1 - 1 + diagonal + 1)))


def _softmax(S, rnd):
    S_max = onp.max(S, axis=-1, keepdims=True)
    S_max = onp.where(onp.isfinite(S_max), S_max, 0.0)
    E = onp.exp(S - S_max)
    return rnd(E / onp.sum(E, axis=-1, keepdims=True))


def attention_blocks(
    q, k, v, plan, rows, *, dtype="float64", dout=None, scale=None, row_chunk=ROW_CHUNK, intermediates=True
):
    """Attention (and, with ``dout``, its gradients) of the block plan, q, k, v (b, h, n, d).

    Returns a dict with ``out`` (b, h, R, d) for the R sorted ``rows``, and ``dq, dk, dv`` (b, h, n, d)
    when ``dout`` (b, h, R, d) is given; float64 arrays holding values of the plain dtype implementation
    (exact float64 for dtype="float64"). ``intermediates=False``: the *accurate* implementation, float32
    arithmetic throughout and only the inputs and results rounded to the dtype."""
    rnd_io = rounder(dtype)
    rnd = rnd_io if intermediates else rounder("float64" if dtype == "float64" else "float32")
    ct = onp.float64 if dtype == "float64" else onp.float32
    q, k, v = (rnd_io(onp.asarray(x, dtype=ct)) for x in (q, k, v))
    b, h, n, d = q.shape
    scale = d**-0.5 if scale is None else scale
    out = onp.zeros((b, h, len(rows), v.shape[-1]), dtype=ct)
    grads = dout is not None
    if grads:
        dout = rnd_io(onp.asarray(dout, dtype=ct))
        dq, dk, dv = onp.zeros_like(q), onp.zeros_like(k), onp.zeros_like(v)
    for head, r, c, diagonal, _ in plan:
        out_index = onp.searchsorted(rows, r)
        for i0 in range(0, len(r), row_chunk):
            i1 = min(len(r), i0 + row_chunk)
            cc = c[: _chunk_cols(len(c), i0, i1, diagonal)]
            rr = r[i0:i1]
            Qs = rnd(q[:, head, rr] * ct(scale))  # (b, R', d)
            K, V = k[:, head, cc], v[:, head, cc]  # (b, C', d)
            S = rnd(Qs @ onp.swapaxes(K, -1, -2))  # (b, R', C')
            if diagonal is not None:
                visible = onp.arange(len(cc))[None, :] <= onp.arange(i0, i1)[:, None] + diagonal
                S = onp.where(visible, S, -onp.inf)
            P = _softmax(S, rnd)
            oi = out_index[i0:i1]
            out[:, head, oi] = rnd(P @ V)
            if grads:
                dO = dout[:, head, oi]
                dP = rnd(dO @ onp.swapaxes(V, -1, -2))
                dS = rnd(P * (dP - onp.sum(dP * P, axis=-1, keepdims=True)))
                dq[:, head, rr] += dS @ K
                _add_rows(dk, head, cc, onp.swapaxes(dS, -1, -2) @ Qs)
                _add_rows(dv, head, cc, onp.swapaxes(P, -1, -2) @ dO)
    result = {"out": rnd_io(out).astype(onp.float64)}
    if grads:
        result.update(
            dq=rnd_io(rnd(dq) * ct(scale)).astype(onp.float64),
            dk=rnd_io(dk).astype(onp.float64),
            dv=rnd_io(dv).astype(onp.float64),
        )
    return result


def _add_rows(target, head, cols, values):
    """target[:, head, cols] += values for the distinct cols of a block (a slice when contiguous)."""
    if len(cols) and cols[-1] - cols[0] + 1 == len(cols):
        target[:, head, cols[0] : cols[-1] + 1] += values
    else:
        target[:, head, cols] += values
