"""Pieces of the attention sub-layer that all architectures share (docs/official-code.md#shared-pieces).

``project`` turns the LayerNormed stream into per-head q, k, v exactly as the official layers do:

    q  = to_q(x)                     (b, n, D) -> (b, h, n, d)
    kv = to_kv(x)                    K = V: one D-wide projection (separate_kv: 2D wide, K | V)
    RoPE on q and kv at absolute positions 0..n-1, in the layers where the config applies it
    kv = LN_d(kv)                    per-head LayerNorm, where the config applies it (after RoPE)
    q  = q * d^-0.5                  the official code scales q, not the scores
"""

import numpy as onp

from minicp.nn import ops
from minicp.nn.rope import rope


def project(p, x, cfg, layer):
    """q, k, v of shape (b, h, n, d) from the normalised stream x (b, n, D) of layer ``layer``."""
    b, n, D = x.shape
    h, d = cfg.heads, cfg.head_dim
    q = ops.split_heads(ops.linear(x, p["to_q"]), h)  # (b, h, n, d)
    kv = ops.linear(x, p["to_kv"])  # (b, n, D) or (b, n, 2D)
    if cfg.separate_kv:
        k, v = ops.split_heads(kv[..., :D], h), ops.split_heads(kv[..., D:], h)
    else:
        k = v = ops.split_heads(kv, h)  # K is V: the same tensor
    if cfg.rope_in_layer(layer):
        pos = onp.arange(n)
        freqs = p.get("pos_emb", {}).get("freqs")  # an official buffer, kept by the loader
        q = rope(q, pos, cfg.rope_style, cfg.rope_base, freqs)
        if cfg.separate_kv:
            k = rope(k, pos, cfg.rope_style, cfg.rope_base, freqs)  # values are not rotated
        else:
            k = v = rope(k, pos, cfg.rope_style, cfg.rope_base, freqs)  # official: rotates kv, so V too
    if cfg.kv_layernorm:
        if cfg.separate_kv:
            k, v = ops.layer_norm(k, p["norm"], cfg.eps), ops.layer_norm(v, p["norm"], cfg.eps)
        else:
            k = v = ops.layer_norm(k, p["norm"], cfg.eps)
    q = q * d**-0.5  # python float: keeps float32
    assert q.shape == (b, h, n, d) and k.shape == v.shape == (b, h, n, d)
    return q, k, v


def scale_q(q, scale):
    """Head-level API: apply ``scale`` (default d^-0.5) to q, as the sub-layer does after RoPE."""
    if scale is not None and float(scale) == 1.0:
        return q  # the sub-layer already scaled q
    return q * (q.shape[-1] ** -0.5 if scale is None else float(scale))


def check_qkv(q, k, v, same_length=True):
    """Validate head-level inputs: (b, h, n, d) arrays of one float dtype."""
    for name, a in (("q", q), ("k", k), ("v", v)):
        if getattr(a, "ndim", None) != 4:
            raise ValueError(
                f"{name} must have shape (batch, heads, seq_len, head_dim), got {getattr(a, 'shape', type(a))}"
            )
        if a.dtype.kind != "f":
            raise ValueError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape != v.shape[:-1] + (k.shape[-1],) or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"k {k.shape} and v {v.shape} must agree on batch, heads and length")
    if q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {q.shape} and k {k.shape} must agree on batch, heads and head_dim")
    if same_length and q.shape[2] != k.shape[2]:
        raise ValueError(f"q has {q.shape[2]} positions but k has {k.shape[2]}; they must be equal")


def projection_params(cfg, out="to_out"):
    """The parameters every official attention layer has, in state_dict order.

    ``norm``: the per-head LayerNorm over d (used where ``kv_layernorm``; present everywhere);
    ``to_q``, ``to_kv``: Linear(D, D) without bias (``to_kv`` is 2D wide with ``separate_kv``);
    ``out`` (``to_out``, or ``w_out`` in PerceiverAR/Compressed): Linear(D, D) with bias.
    Entries are name -> ("linear", out, in, bias) or ("layernorm", size).
    """
    D = cfg.dim
    return {
        "norm": ("layernorm", cfg.head_dim),
        "to_q": ("linear", D, D, False),
        "to_kv": ("linear", 2 * D if cfg.separate_kv else D, D, False),
        out: ("linear", D, D, True),
    }


def unused_kv_norm(cfg):
    """Names under ``layers.i.0.fn`` of the per-head LayerNorm when the config does not apply it
    (``kv_layernorm=False``: ECP, the transformer, LongLoRA by default). The official modules own it anyway
    (ECP even computes it and drops the result), so PyTorch leaves its gradient at None."""
    return () if cfg.kv_layernorm else ("norm.weight", "norm.bias")
