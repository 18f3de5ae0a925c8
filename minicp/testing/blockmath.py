"""The arithmetic of one row chunk of same-shaped blocks (``minicp.testing.blockwise`` drives it), in any
array module (NumPy on the host, CuPy on a GPU).

For rows r of a block, key columns c and the block's in-block mask:

    S = (q_r * scale) k_c^T        P = softmax(S masked)        O = P v_c
    dP = dO v_c^T      dS = P * (dP - D)      dq_r = dS k_c * scale      dk_c += dS^T (q_r scale)      dv_c += P^T dO

with D = rowsum(dO * O) (= rowsum(dP * P) in exact arithmetic). Four implementations share these lines:

* the **reference** (float64 throughout, D from dO and O);
* the **plain** one in the dtype: every intermediate (q * scale, S, P, O, dP, dS) rounded to it,
  products accumulated in float32, D = rowsum(dP * P) as PyTorch's softmax backward computes it;
* the **accurate** one: float32 arithmetic, only inputs and results rounded;
* the **production** one, the accurate one rounded where fused attention kernels on GPUs round
  (FlashAttention, FlexAttention, PyTorch's memory-efficient kernel): the unnormalised probabilities
  E = exp(S - rowmax) rounded to the dtype before E @ V (O = (E @ V) / rowsum(E), the sum from the
  unrounded E); the backward's P recomputed as exp(S - lse) from the row's float32 log-sum-exp (whose
  rounding, eps * |lse|, exceeds a normalisation's), rounded before P^T dO; dS rounded before dS k and
  dS^T q; D from the *stored* (rounded) output. Softmax state and accumulators stay in float32.

``acc["mm"]``: the rounding a product applies to its float32 operands (TF32 tensor cores), or None.
``acc["key_parts"]``: when set, the key gradients of a chunk come back as a list, one per that many rows
(their partial sums are then rounded in order, as over chunks of that many rows).
"""

import numpy as onp

from minicp.testing.arrays import is_numpy

__all__ = ["chunk_math", "scratch", "wide", "mask_diagonal", "chunk_cols"]


def chunk_cols(n_cols, i0, i1, diagonal):
    """Key columns the rows i0..i1-1 of a block can see: a prefix [0, stop) of the block's columns."""
    if diagonal is None:
        return n_cols
    return int(min(n_cols, max(0, i1 - 1 + diagonal + 1)))


def scratch(acc, name, shape, dtype):
    """A C-contiguous (shape) array of ``dtype`` inside the thread's buffer ``name``, grown on demand: one
    allocation per thread and name instead of one per chunk (fresh pages of every new temporary cost
    more than the products that fill them)."""
    work, xp = acc["work"], acc["xp"]
    size = int(onp.prod(shape))
    buf = work.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        buf = work[name] = xp.empty(max(size, 0 if buf is None else buf.size), dtype)
    return buf[:size].reshape(shape)


def wide(acc, name, x, dtype):
    """x as ``dtype`` (a scratch copy when it is narrower: float32 values are exact in float64)."""
    if x is None or x.dtype == dtype:
        return x
    out = scratch(acc, name, x.shape, dtype)
    acc["xp"].copyto(out, x)
    return out


def mask_diagonal(xp, S, i0, diagonal):
    """S[..., i, j] = -inf where the chunk's row i0 + i may not see column j (j > i0 + i + diagonal), in place;
    only the columns past the first row's last visible one are touched."""
    lo = max(0, i0 + diagonal + 1)
    if lo < S.shape[-1]:
        hidden = xp.arange(lo, S.shape[-1])[None, :] > xp.arange(i0, i0 + S.shape[-2])[:, None] + diagonal
        xp.copyto(S[..., lo:], -onp.inf, where=hidden)


def _matmul(acc, a, b, out=None):
    """a @ b (operands rounded by ``acc["mm"]`` when set), written into ``out`` when given."""
    xp, mm = acc["xp"], acc["mm"]
    if mm is not None:
        a, b = mm(a), mm(b)
    if is_numpy(xp):
        return onp.matmul(a, b, out=out)
    r = xp.matmul(a, b)
    if out is None:
        return r
    out[...] = r
    return out


def _exp_rows(xp, S):
    """E = exp(S - rowmax) in place (S is consumed), its row sums and the row maxima: the unnormalised softmax."""
    S_max = xp.max(S, axis=-1, keepdims=True)
    S_max = xp.where(xp.isfinite(S_max), S_max, 0.0)
    E = xp.exp(xp.subtract(S, S_max, out=S), out=S)
    return E, xp.sum(E, axis=-1, keepdims=True), S_max


def _product(acc, A, B, target, rnd, exact):
    """rnd(A @ B), written into ``target`` when given (straight from the product when rnd changes nothing)."""
    if target is None:
        return rnd(_matmul(acc, A, B))
    if exact:
        return _matmul(acc, A, B, out=target)
    target[...] = rnd(_matmul(acc, A, B))
    return target


def chunk_math(Q, K, V, dO, i0, diagonal, acc, into=None):
    """One row chunk of G blocks: Q (b, G, R', d) query rows, K, V (b, G, C', d) key columns, dO (b, G, R', d)
    or None. Returns (O, None) without dO, else (O, (dQ, dK, dV)): O, dQ (unscaled) (b, G, R', d), dK, dV
    (b, G, C', d). ``into``: views to write O (``"O"``) and dQ (``"dQ"``) into, which are then returned.
    S, dP, dK and dV are written into the thread's scratch buffers (valid until its next chunk)."""
    xp, rnd, store, exact, into, ct = acc["xp"], acc["rnd"], acc["store"], acc["exact"], into or {}, acc["out"].dtype
    temp = lambda name, shape: scratch(acc, name, shape, ct)
    production = acc["production"]
    K, V, dO = wide(acc, "K", K, ct), wide(acc, "V", V, ct), wide(acc, "dO", dO, ct)
    Qs = rnd(xp.multiply(Q, acc["scale"], out=temp("Qs", Q.shape)))  # (b, G, R', d)
    S = rnd(_matmul(acc, Qs, xp.swapaxes(K, -1, -2), out=temp("S", Q.shape[:-1] + K.shape[-2:-1])))
    assert S.shape == Q.shape[:-1] + (K.shape[-2],)  # (b, G, R', C')
    if diagonal is not None:
        mask_diagonal(xp, S, i0, diagonal)
    if production and dO is not None:
        S_kept = temp("S kept", S.shape)
        S_kept[...] = S
    E, L, M = _exp_rows(xp, S)
    if production:  # O = (round(E) @ V) / rowsum(E): the fused kernels' rounding of the probabilities
        O = _product(acc, store(E), V, into.get("O"), rnd, True)
        xp.divide(O, L, out=O)
        P = xp.divide(E, L, out=E)
        if dO is not None:  # the backward recomputes P = exp(S - lse) from the row's log-sum-exp in float32
            lse = M + xp.log(L)
            P = xp.exp(xp.subtract(S_kept, lse, out=S_kept), out=S_kept)
    else:
        P = rnd(xp.divide(E, L, out=E))
        O = _product(acc, P, V, into.get("O"), rnd, exact)
    if dO is None:
        return O, None
    dP = rnd(_matmul(acc, dO, xp.swapaxes(V, -1, -2), out=temp("dP", S.shape)))
    if P.dtype == onp.float64:  # the reference: rowsum(dP * P) = rowsum(dO * O), exactly in real arithmetic
        dP -= xp.einsum("...i,...i->...", dO, O)[..., None]
    elif production:  # D from the output as stored, in the dtype
        dP -= xp.einsum("...i,...i->...", dO, store(O))[..., None]
    else:  # the plain and accurate implementations: softmax's backward as PyTorch computes it, from dP
        dP -= xp.sum(xp.multiply(dP, P, out=temp("dP*P", S.shape)), axis=-1, keepdims=True)
    dS = rnd(xp.multiply(dP, P, out=dP))
    if production:
        dS, P = store(dS), store(P)
    dQ = _matmul(acc, dS, K, out=into.get("dQ"))  # unscaled, never rounded here
    step = acc.get("key_parts")
    if step and Q.shape[-2] > step:  # the key gradients of every ``step`` rows apart, in order (to be rounded)
        parts = range(0, Q.shape[-2], step)
        dK = [_matmul(acc, xp.swapaxes(dS[..., i : i + step, :], -1, -2), Qs[..., i : i + step, :]) for i in parts]
        dV = [_matmul(acc, xp.swapaxes(P[..., i : i + step, :], -1, -2), dO[..., i : i + step, :]) for i in parts]
        return O, (dQ, dK, dV)
    dK = _matmul(acc, xp.swapaxes(dS, -1, -2), Qs, out=temp("dK", K.shape))
    return O, (dQ, dK, _matmul(acc, xp.swapaxes(P, -1, -2), dO, out=temp("dV", V.shape)))
