"""A corpus of PyTorch attention kernels: correct ones written several ways, and planted bugs.

Each kernel factory takes the case (arch, pattern args, dtype) and returns fn(q, k, v) on (b, h, n, d)
tensors. Used by tests/testing/test_verdicts.py (small) and tests/testing/corpus.py (the sweep).
"""

import torch
import torch.nn.functional as F

import minicp.analysis.kernel_pattern as kp
from minicp.nn import rope as R


def _blocks(arch, n, h, pa):
    return kp.blocks(arch, n, h, **pa)


def sdpa_blocks(arch, pa, drop_diagonal_mask=False, scale=None, head_map=None):
    """One SDPA call per block of the block list (``head_map``: the pattern of which head each head uses)."""

    def fn(q, k, v):
        b, h, n, d = q.shape
        rows = torch.from_numpy(kp.rows(arch, n, h, **pa))
        out = q.new_zeros(b, h, n, d)
        for blk in _blocks(arch, n, h, pa):
            r, c = torch.from_numpy(blk["rows"]), torch.from_numpy(blk["cols"])
            mask = None
            if blk["diagonal"] is not None and not drop_diagonal_mask:
                mask = torch.ones(len(r), len(c), dtype=torch.bool).tril(diagonal=blk["diagonal"])
            hd = blk["head"] if head_map is None else head_map[blk["head"]]
            out[:, hd, r] = F.scaled_dot_product_attention(
                q[:, hd, r], k[:, hd, c], v[:, hd, c], attn_mask=mask, scale=scale
            )
        return out[:, :, rows]

    return fn


def flash(arch, pa, tile=64, state_dtype=torch.float32):
    """Online softmax over key tiles inside each block; state (max, sum, accumulator) in ``state_dtype``."""

    def fn(q, k, v):
        b, h, n, d = q.shape
        rows = torch.from_numpy(kp.rows(arch, n, h, **pa))
        out = q.new_zeros(b, h, n, d)
        scale = d**-0.5
        for blk in _blocks(arch, n, h, pa):
            r, c, hd = torch.from_numpy(blk["rows"]), torch.from_numpy(blk["cols"]), blk["head"]
            Q = q[:, hd, r].float() * scale
            m = torch.full((b, len(r), 1), -torch.inf, dtype=state_dtype)
            l = torch.zeros((b, len(r), 1), dtype=state_dtype)
            acc = torch.zeros((b, len(r), d), dtype=state_dtype)
            for j0 in range(0, len(c), tile):
                cc = c[j0 : j0 + tile]
                s = Q @ k[:, hd, cc].float().transpose(-1, -2)
                if blk["diagonal"] is not None:
                    vis = torch.arange(j0, j0 + len(cc))[None, :] <= torch.arange(len(r))[:, None] + blk["diagonal"]
                    s = s.masked_fill(~vis, -torch.inf)
                m_new = torch.maximum(m.float(), s.amax(-1, keepdim=True))
                m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
                p = torch.exp(s - m_safe)
                alpha = torch.exp(m.float() - m_safe)
                l = (l.float() * alpha + p.sum(-1, keepdim=True)).to(state_dtype)
                acc = (acc.float() * alpha + p.to(q.dtype).float() @ v[:, hd, cc].float()).to(state_dtype)
                m = m_new.to(state_dtype)
            out[:, hd, r] = (acc.float() / l.float()).to(q.dtype)
        return out[:, :, rows]

    return fn


def dense(arch, pa, predicate=None):
    """SDPA with a dense boolean mask: the pattern's, or one from a hand-written predicate(q_idx, kv_idx)."""

    def fn(q, k, v):
        b, h, n, d = q.shape
        if predicate is None:
            mask = torch.from_numpy(kp.dense_mask(arch, n, h, **pa))[None]
        else:
            i = torch.arange(n)
            mask = predicate(i[:, None], i[None, :])
        rows = torch.from_numpy(kp.rows(arch, n, h, **pa))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)[:, :, rows]

    return fn


def causal_sdpa(arch, pa):
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)


def ecp_predicate(m, off_by_one=False, own_half_only=False):
    def allowed(qi, ki):
        if off_by_one:  # '>' for '>=': loses the previous half's first key
            return (ki <= qi) & (ki > (qi // m - 1) * m)
        start = (qi // m) * m if own_half_only else torch.clamp((qi // m - 1) * m, min=0)
        return (ki <= qi) & (ki >= start)

    return allowed


def rope_torch(x, style, offset=0):
    """RoPE in the tensor's dtype with float32 angles (position * theta), as a PyTorch kernel writes it."""
    n, d = x.shape[-2], x.shape[-1]
    theta = torch.from_numpy(R.rope_angles([1.0], d, "float32")[0])  # (d/2,) float32
    ang = (torch.arange(n, dtype=torch.float32) + offset)[:, None] * theta[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    if style == "interleaved":
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).flatten(-2)
    half = d // 2
    first, second = x[..., :half], x[..., half:]
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)


def with_rope(kernel, style, q_offset=0):
    """RoPE on q and k, then the kernel; ``q_offset`` shifts the query positions only (a uniform shift of
    both is invisible: attention sees only relative positions)."""
    return lambda q, k, v: kernel(rope_torch(q, style, q_offset), rope_torch(k, style), v)
