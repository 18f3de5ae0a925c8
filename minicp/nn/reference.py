"""The plain O(n^2) reference: dense scores, a boolean mask, softmax.

Deliberately the dumbest correct thing, independent of every architecture module: tests hold each
explicit, blockwise implementation against this function applied to the mask derived from the
architecture's declared pattern.
"""

import numpy as onp

from minicp import backend as B


def dense_attention(q, k, v, mask, scale=None):
    """softmax(scale q k^T masked) v over the rows the mask computes.

    q, k, v (b, h, n, d); mask (n, n) or (h, n, n) boolean, True = visible; rows of the mask that are
    all False are not computed and are left out of the result. Returns (b, h, rows, d).
    """
    xp = B.xp
    mask = onp.asarray(mask, dtype=bool)
    rows = onp.flatnonzero(mask.reshape(-1, mask.shape[-2], mask.shape[-1]).any(axis=-1).any(axis=0))
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q * scale) @ xp.swapaxes(k, -1, -2)  # (b, h, n, n)
    s = xp.where(B.asarray(mask), s, -xp.inf)
    s = s[:, :, rows]  # (b, h, rows, n)
    s = s - xp.max(s, axis=-1, keepdims=True)
    p = xp.exp(s)
    p = p / xp.sum(p, axis=-1, keepdims=True)
    return p @ v
