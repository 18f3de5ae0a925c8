"""Pieces the twin's attention layers and blocks share: RoPE, the tail-causal mask, K = V attention, the
common projection parameters, PreNorm and the feed-forward block (the official code's shared modules,
docs/official-code.md#shared-pieces).

Letters: b batch, h heads, n input length, D = dim, d = D // h.
"""

import torch
from torch import nn


class RotaryFreqs(nn.Module):
    """Holds the RoPE inverse frequencies theta_i = 1 / 10000^(2i/d), i = 0..d//2-1, as buffer ``freqs``.

    The values are computed in float32 (as the official code does) and follow the module's dtype when it
    is cast. One instance is shared by every layer of a model, so its buffer appears under each layer's
    ``pos_emb.freqs`` key.
    """

    def __init__(self, dim_head):
        super().__init__()
        exponents = torch.arange(0, dim_head, 2, dtype=torch.float32)[: dim_head // 2] / dim_head
        self.register_buffer("freqs", 1.0 / torch.pow(10000.0, exponents))  # (d//2,)

    def angles(self, n, device=None):
        """Angles (n, 2*(d//2)): angle[p, 2i] = angle[p, 2i+1] = p * theta_i, in the buffer's dtype."""
        positions = torch.arange(n, device=device).to(self.freqs.dtype)  # (n,)
        per_pair = positions[:, None] * self.freqs[None, :]  # (n, d//2)
        return per_pair.repeat_interleave(2, dim=-1)  # (n, 2*(d//2)), interleaved


def apply_rope(x, angles):
    """Interleaved-pair RoPE: (x_2i, x_2i+1) -> (x_2i cos - x_2i+1 sin, x_2i+1 cos + x_2i sin).

    x (..., n, d), angles (n, r) with r = 2*(d//2); an odd last channel passes through unchanged.
    """
    angles = angles.to(device=x.device, dtype=x.dtype)  # cos / sin in the tensor's dtype, as official
    r = angles.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    pairs = x_rot.unflatten(-1, (r // 2, 2))  # (..., n, r/2, 2)
    partner = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (-x_2i+1, x_2i) per pair
    rotated = x_rot * angles.cos() + partner * angles.sin()
    return torch.cat((rotated, x_pass), dim=-1)


def tail_causal_mask(rows, cols, device=None):
    """Boolean (rows, cols) mask, True = hidden: query row i sees every key j <= (cols - rows) + i.

    With cols == rows this is the plain causal mask. With cols > rows the first cols - rows key columns
    (history, or ECP's previous block) are fully visible and the last ``rows`` columns are causal, which is
    how every official file masks its latent (or block) queries.
    """
    i = torch.arange(rows, device=device)[:, None]
    j = torch.arange(cols, device=device)[None, :]
    return j > (cols - rows) + i


def attend(q, kv, mask=None):
    """softmax(q kv^T [masked]) kv, with K = V = kv. q (..., i, d), kv (..., j, d) -> (..., i, d).

    q is already scaled. Hidden scores are filled with -finfo(dtype).max, as the official code does
    (no row is ever fully hidden, so this equals using -inf).
    """
    scores = q @ kv.transpose(-1, -2)  # (..., i, j)
    if mask is not None:
        scores = scores.masked_fill(mask, -torch.finfo(scores.dtype).max)
    return scores.softmax(dim=-1) @ kv  # (..., i, d)


class AttentionBase(nn.Module):
    """Parameters and helpers common to all six attention layers.

    Registration order (norm, pos_emb, to_q, to_kv, then the output projections a subclass adds) follows
    the official constructors, so state_dict order and seeded initial values match them.
    """

    def __init__(self, *, dim, heads, layer_index, pos_emb=None):
        super().__init__()
        assert dim % heads == 0, f"dim {dim} must split into {heads} heads"
        self.heads = heads
        self.dim_head = dim // heads
        self.scale = self.dim_head**-0.5
        self.layer_index = layer_index
        self.norm = nn.LayerNorm(self.dim_head)  # per-head kv LayerNorm (unused by ECP and transformer)
        self.pos_emb = pos_emb if pos_emb is not None else RotaryFreqs(self.dim_head)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, dim, bias=False)  # one projection: K is V

    def split_heads(self, t):
        b, n, _ = t.shape
        return t.view(b, n, self.heads, self.dim_head).transpose(1, 2)  # (b, n, D) -> (b, h, n, d)

    def merge_heads(self, t):
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)  # (b, h, n, d) -> (b, n, D)

    def project(self, x):
        """q, kv (b, h, n, d) from x (b, n, D)."""
        return self.split_heads(self.to_q(x)), self.split_heads(self.to_kv(x))

    def rope_angles(self, n, device):
        return self.pos_emb.angles(n, device)


class PreNorm(nn.Module):
    """fn(LN_D(x)); the caller adds the residual. ``fn`` is registered before ``norm``, as official."""

    def __init__(self, dim, fn):
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    """Linear(D, 4D) -> exact GELU -> (dropout slot, Identity here) -> Linear(4D, D)."""

    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)
