"""Attention kernels as they are written for GPUs, correct and with planted bugs, for the GPU verdict corpus.

Every factory returns fn(q, k, v) on (b, h, n, d) torch tensors (differentiable), ECP with half segment m
(paper segment 2m) or causal. Correct kernels:

* ``ecp_sdpa(m, backend)``: ECP in two SDPA calls on one backend (flash, memory-efficient or math): half
  segment 0 causal, every later one against the pair (t-1, t) with the lower-right causal mask
  (``torch.nn.attention.bias.causal_lower_right``), which the flash backend takes;
* ``causal_sdpa(backend)``: ``is_causal=True`` on one backend;
* ``flex(arch, n, h, m)``: compiled FlexAttention with a ``BlockMask`` from ``kernel_pattern.mask_mod``;
* ``online(arch, m, tile, ...)``: a flash-style online softmax written in torch (eager): running maximum,
  sum and P @ V accumulator per query row over key tiles, the probabilities rounded to the input dtype
  before P @ V, state in float32; ``acc``, ``max``, ``sum`` put that part of the state in the input dtype
  between tiles (the precision bugs);
* ``dense(arch, pa)``: attention by dense products (a float32 kernel on TF32 tensor cores when the sweep
  allows TF32).

Planted bugs in ECP (``ecp_masked``, the memory-efficient backend with explicit block masks): the previous
half segment's first key lost (``>`` for ``>=``), the previous half segment missing, no causal mask in the
diagonal block, scale x1.05, heads swapped, one future key in the last block, one query row per half
segment missing one key (row-sparse); in causal attention (dense masks): one future key in the last rows,
one row per 128 seeing one future key.
"""

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import minicp.analysis.kernel_pattern as kp

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def _blocks(x, m):
    """(b, h, n, d) -> (b, h, N, m, d) half segments."""
    b, h, n, d = x.shape
    return x.reshape(b, h, n // m, m, d)


def _pairs(x):
    """(b, h, N, m, d) -> (b, h, N-1, 2m, d): half segments t-1 and t side by side."""
    return torch.cat([x[:, :, :-1], x[:, :, 1:]], dim=3)


def _fold(x):
    """(b, h, G, r, d) -> (b G, h, r, d): blocks in the batch dimension (what every backend takes)."""
    b, h, G, r, d = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * G, h, r, d)


def _unfold(x, b):
    bG, h, r, d = x.shape
    return x.reshape(b, bG // b, h, r, d).permute(0, 2, 1, 3, 4)


def ecp_sdpa(m, backend):
    """ECP by two SDPA calls on ``backend`` (flash, efficient, math)."""

    def fn(q, k, v):
        b, h, n, d = q.shape
        Q, K, V = (_blocks(x, m) for x in (q, k, v))
        with sdpa_kernel([BACKENDS[backend]]):
            first = F.scaled_dot_product_attention(Q[:, :, 0], K[:, :, 0], V[:, :, 0], is_causal=True)
            if n == m:
                return first
            mask = causal_lower_right(m, 2 * m)
            rest = F.scaled_dot_product_attention(
                _fold(Q[:, :, 1:]), _fold(_pairs(K)), _fold(_pairs(V)), attn_mask=mask
            )
        return torch.cat([first[:, :, None], _unfold(rest, b)], dim=2).reshape(b, h, n, d)

    return fn


def ecp_masked(m, bug=None):
    """ECP by two SDPA calls with explicit boolean masks (memory-efficient backend), with a planted ``bug``."""

    def fn(q, k, v):
        b, h, n, d = q.shape
        scale = d**-0.5 * (1.05 if bug == "scale" else 1.0)
        Q, K, V = (_blocks(x, m) for x in (q, k, v))
        dev = q.device
        own = torch.ones(m, m, dtype=torch.bool, device=dev).tril()
        pair = torch.ones(m, 2 * m, dtype=torch.bool, device=dev).tril(diagonal=m)
        if bug == "no_diag":
            own, pair = torch.ones_like(own), torch.ones_like(pair)
        elif bug == "off_by_one":
            pair[:, 0] = False  # '>' for '>=': the previous half segment's first key lost
        elif bug == "own_half":
            pair[:, :m] = False
        elif bug == "row_sparse":
            pair[0, 0] = False  # the first row of every half segment misses one key
        pairs = pair.expand(n // m - 1, m, 2 * m).clone()
        if bug == "future_key":
            pairs[-1] = torch.ones(m, 2 * m, dtype=torch.bool, device=dev).tril(diagonal=m + 1)
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            first = F.scaled_dot_product_attention(Q[:, :, 0], K[:, :, 0], V[:, :, 0], attn_mask=own, scale=scale)
            mask = pairs.repeat(b, 1, 1)[:, None]  # (b (N-1), 1, m, 2m)
            rest = F.scaled_dot_product_attention(
                _fold(Q[:, :, 1:]), _fold(_pairs(K)), _fold(_pairs(V)), attn_mask=mask, scale=scale
            )
        out = torch.cat([first[:, :, None], _unfold(rest, b)], dim=2).reshape(b, h, n, d)
        if bug == "heads":
            out = out[:, torch.arange(h, device=dev).roll(1)]
        return out

    return fn


def causal_sdpa(backend):
    def fn(q, k, v):
        with sdpa_kernel([BACKENDS[backend]]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return fn


def causal_masked(bug):
    """Causal attention with a dense mask holding a planted ``bug`` (memory-efficient backend)."""

    def fn(q, k, v):
        n = q.shape[-2]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
        if bug == "future_key":  # the last 128 rows see one future key
            rows = torch.arange(max(0, n - 129), n - 1, device=q.device)
            mask[rows, rows + 1] = True
        elif bug == "row_sparse":  # one row in every 128 sees one future key
            rows = torch.arange(64, n - 1, 128, device=q.device)
            mask[rows, rows + 1] = True
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    return fn


def flex(arch, n, h, pa, compiled=True):
    """Compiled FlexAttention with a BlockMask built from ``kernel_pattern.mask_mod``."""
    attend = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
    masks = {}

    def fn(q, k, v):
        key = (str(q.device), q.shape)
        if key not in masks:
            mod = kp.mask_mod(arch, n, h, **pa)
            masks[key] = create_block_mask(mod, B=None, H=h, Q_LEN=n, KV_LEN=n, device=q.device)
        return attend(q, k, v, block_mask=masks[key])

    return fn


def online(arch, pa, tile=128, acc=False, maximum=False, total=False):
    """Online softmax over key tiles (eager torch), per block of the pattern, blocks of one shape batched;
    ``acc``, ``maximum``, ``total``: that part of the state kept in the input dtype between tiles."""

    def fn(q, k, v):
        b, h, n, d = q.shape
        low = q.dtype
        out = q.new_zeros(b, h, n, d)
        groups = {}
        for blk in kp.blocks(arch, n, h, **pa):
            groups.setdefault((len(blk["rows"]), len(blk["cols"]), blk["diagonal"]), []).append(blk)
        for (R, C, diagonal), blks in groups.items():
            dev = q.device
            hd = torch.tensor([x["head"] for x in blks], device=dev)
            rows = torch.stack([torch.from_numpy(x["rows"]) for x in blks]).to(dev)
            cols = torch.stack([torch.from_numpy(x["cols"]) for x in blks]).to(dev)
            Q = q[:, hd[:, None], rows].float() * d**-0.5  # (b, G, R, d)
            Kb, Vb = k[:, hd[:, None], cols], v[:, hd[:, None], cols]
            m_run = torch.full(Q.shape[:-1] + (1,), -torch.inf, device=dev, dtype=low if maximum else torch.float32)
            l_run = torch.zeros_like(m_run, dtype=low if total else torch.float32)
            a_run = torch.zeros(Q.shape, device=dev, dtype=low if acc else torch.float32)
            for j0 in range(0, C, tile):
                s = Q @ Kb[:, :, j0 : j0 + tile].float().transpose(-1, -2)
                if diagonal is not None:
                    local = torch.arange(j0, min(C, j0 + tile), device=dev)
                    s = s.masked_fill(local[None, :] > torch.arange(R, device=dev)[:, None] + diagonal, -torch.inf)
                m_new = torch.maximum(m_run.float(), s.amax(-1, keepdim=True))
                safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
                p = torch.exp(s - safe)
                alpha = torch.exp(m_run.float() - safe)
                l_run = (l_run.float() * alpha + p.sum(-1, keepdim=True)).to(l_run.dtype)
                pv = p.to(low).float() @ Vb[:, :, j0 : j0 + tile].float()
                a_run = (a_run.float() * alpha + pv).to(a_run.dtype)
                m_run = m_new.to(m_run.dtype)
            out[:, hd[:, None], rows] = (a_run.float() / l_run.float()).to(low)
        return out[:, :, torch.from_numpy(kp.rows(arch, n, h, **pa)).to(q.device)]

    return fn


def dense(arch, pa):
    """Attention by dense products (small n: the scores are n x n); with TF32 allowed (the sweep sets
    ``torch.backends.cuda.matmul.allow_tf32`` around the check) a float32 kernel on TF32 tensor cores."""

    def fn(q, k, v):
        n, d = q.shape[-2], q.shape[-1]
        mask = torch.from_numpy(kp.dense_mask(arch, n, q.shape[1], **pa)).to(q.device)
        s = (q @ k.transpose(-1, -2)) * d**-0.5
        return torch.softmax(s.masked_fill(~mask, -torch.inf), dim=-1) @ v

    return fn
