"""Blocks of every head at once, for a GPU: groups whose blocks have the same rows and columns in each of a
contiguous range of heads (causal attention, dense masks) are read as plain slices of all those heads, in
row chunks of ``DEVICE_ROW_CHUNK`` rows, so that one launch covers every head.

The arithmetic is ``minicp.testing.blockmath``'s. Where the key-side partial sums dk, dv are kept in the
dtype (the plain and production floors in bfloat16 and float16), a chunk's key gradients come in parts of
``KEY_GRAD_CHUNK`` rows, each added and rounded in order: the same model as the host's chunks of that
many rows, with fewer, larger launches.
"""

import numpy as onp

from minicp.testing.blockmath import chunk_cols, chunk_math

__all__ = ["head_batched", "run_head_batched"]


def head_batched(heads, r, c, acc):
    """(h0, h1, row start, col start, output row start) when the group's blocks are contiguous rows and
    columns, identical in each of the contiguous heads h0..h1-1, and their output rows are contiguous too;
    else None."""
    R, C = r.shape[1], c.shape[1]
    if len(heads) == 0 or not (heads == heads[0] + onp.arange(len(heads))).all():
        return None
    if not ((r == r[:1]).all() and (c == c[:1]).all()):
        return None
    if not ((r[0] == r[0, 0] + onp.arange(R)).all() and (c[0] == c[0, 0] + onp.arange(C)).all()):
        return None
    oi = onp.searchsorted(acc["rows"], r[0])
    if not ((oi == oi[0] + onp.arange(R)).all() and (acc["rows"][onp.minimum(oi, len(acc["rows"]) - 1)] == r[0]).all()):
        return None
    return int(heads[0]), int(heads[-1]) + 1, int(r[0, 0]), int(c[0, 0]), int(oi[0])


def run_head_batched(q, k, v, span, R, C, diagonal, row_chunk, acc):
    """Every row chunk of a head-batched group (``head_batched``'s span), all its heads in one launch each."""
    h0, h1, r0, c0, o0 = span
    grads = "dq" in acc
    for i0 in range(0, R, row_chunk):
        i1 = min(R, i0 + row_chunk)
        cols = chunk_cols(C, i0, i1, diagonal)
        into = {"O": acc["out"][:, h0:h1, o0 + i0 : o0 + i1]}
        if grads:
            into["dQ"] = acc["dq"][:, h0:h1, r0 + i0 : r0 + i1]
        dO = acc["dout"][:, h0:h1, o0 + i0 : o0 + i1] if grads else None
        Q, K, V = q[:, h0:h1, r0 + i0 : r0 + i1], k[:, h0:h1, c0 : c0 + cols], v[:, h0:h1, c0 : c0 + cols]
        _, g = chunk_math(Q, K, V, dO, i0, diagonal, acc, into)
        if g is None:
            continue
        dK, dV = (part if isinstance(part, list) else [part] for part in g[1:])
        for target, parts in ((acc["dk"], dK), (acc["dv"], dV)):
            view = target[:, h0:h1, c0 : c0 + cols]
            for part in parts:
                if acc["store_exact"]:
                    view += part
                else:
                    view[...] = acc["store"](view + part)
