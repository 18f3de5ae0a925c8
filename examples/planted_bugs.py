"""Three classic ECP kernel bugs, and the messages ``minicp.testing`` catches them with.

A kernel author's ECP in plain NumPy: dense scores, a mask predicate written by hand (the way one
writes a FlexAttention ``mask_mod`` or the masking branch of a Triton kernel), softmax, values.
With half segment m (paper segment s = 2m) the correct predicate is

    kv_idx <= q_idx  and  kv_idx >= max(0, (q_idx // m - 1) * m)

i.e. causal, reaching back to the start of the previous half segment. We plant:

1. an off-by-one in the mask: ``kv_idx > (q_idx // m - 1) * m`` (``>`` for ``>=``): every query from
   the second half segment on loses the first key of the previous half segment;
2. forgetting the previous half segment: ``kv_idx >= (q_idx // m) * m``, plain block-diagonal
   causal attention (the pattern of one layer of ECP without its "context propagation");
3. the wrong RoPE convention in a fused RoPE + attention sub-layer: LLaMA's "halves" pairs
   (x_i, x_{i+d/2}) instead of the official ECP code's interleaved pairs (x_2i, x_2i+1). Head-level
   attention has no RoPE, so this one is checked at the sub-layer level against
   ``minicp.nn.attention.ecp.attention_layer`` and on the rotated q itself.

Run:  python examples/planted_bugs.py      (NumPy only; about a second)
"""

import sys

import numpy as np

import minicp
import minicp.testing as mt
from minicp.nn import ops
from minicp.nn.attention import ecp as ecp_module
from minicp.nn.rope import rope as minicp_rope

CASE = dict(seq_len=512, heads=4, head_dim=32, half_segment=64)  # paper segment s = 128


# ----------------------------------------------------------------------------------------------------
# The kernel author's code: attention with a hand-written mask predicate
# ----------------------------------------------------------------------------------------------------


def masked_attention(q, k, v, allowed):
    """softmax(q k^T / sqrt(d), masked by allowed(q_idx, kv_idx)) v; q, k, v (b, h, n, d) NumPy arrays."""
    n, d = q.shape[2], q.shape[3]
    idx = np.arange(n)
    mask = allowed(idx[:, None], idx[None, :])  # (n, n), True = attend
    s = (q * d**-0.5) @ np.swapaxes(k, -1, -2)
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def ecp_predicate(m):
    return lambda q_idx, kv_idx: (kv_idx <= q_idx) & (kv_idx >= np.maximum(0, (q_idx // m - 1) * m))


def off_by_one_predicate(m):  # BUG 1: > instead of >=
    return lambda q_idx, kv_idx: (kv_idx <= q_idx) & (kv_idx > (q_idx // m - 1) * m)


def no_previous_half_segment_predicate(m):  # BUG 2: only the own half segment
    return lambda q_idx, kv_idx: (kv_idx <= q_idx) & (kv_idx >= (q_idx // m) * m)


def check_head_level(predicate, case=CASE):
    """assert_matches_reference for masked_attention with the given predicate factory."""
    m = case["half_segment"]
    fn = lambda q, k, v: masked_attention(q, k, v, predicate(m))
    return mt.assert_matches_reference(fn, "ecp", dtype="float32", **case)


# ----------------------------------------------------------------------------------------------------
# Fused RoPE + ECP sub-layer (for bug 3)
# ----------------------------------------------------------------------------------------------------


def rope_interleaved(x, base=10000.0):
    """The official ECP code's RoPE: rotate pairs (x_2i, x_2i+1) by position * base^(-2i/d)."""
    n, d = x.shape[-2], x.shape[-1]
    theta = (1.0 / np.float32(base) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))).astype(x.dtype)
    ang = np.arange(n, dtype=x.dtype)[:, None] * theta  # (n, d/2)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * np.cos(ang) - odd * np.sin(ang)
    out[..., 1::2] = odd * np.cos(ang) + even * np.sin(ang)
    return out


def rope_halves(x, base=10000.0):  # BUG 3: LLaMA's convention
    """HF LLaMA's RoPE: rotate pairs (x_i, x_{i+d/2}); right for LongLoRA, wrong for ECP."""
    n, d = x.shape[-2], x.shape[-1]
    theta = (1.0 / np.float32(base) ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))).astype(x.dtype)
    ang = np.arange(n, dtype=x.dtype)[:, None] * theta
    first, second = x[..., : d // 2], x[..., d // 2 :]
    return np.concatenate(
        [first * np.cos(ang) - second * np.sin(ang), second * np.cos(ang) + first * np.sin(ang)], axis=-1
    )


def ecp_sublayer(p, x, cfg, rope):
    """The ECP attention sub-layer of layer 0 in NumPy: x (b, n, D) -> (b, n, D), K = V, RoPE, to_out_0."""
    b, n, D = x.shape
    h, d, m = cfg.heads, cfg.head_dim, cfg.half_segment
    heads = lambda t: t.reshape(b, n, h, d).transpose(0, 2, 1, 3)  # (b, h, n, d)
    q = heads(x @ p["to_q"]["weight"].T)
    kv = heads(x @ p["to_kv"]["weight"].T)
    q, kv = rope(q), rope(kv)  # layer 0: RoPE on q and kv
    o = masked_attention(q, kv, kv, ecp_predicate(m))  # K = V
    o = o.transpose(0, 2, 1, 3).reshape(b, n, D)
    first = o[:, :m] @ p["to_out_0"]["weight"].T + p["to_out_0"]["bias"]
    rest = o[:, m:] @ p["to_out"]["weight"].T + p["to_out"]["bias"]
    return np.concatenate([first, rest], axis=1), q


def check_sublayer(rope, dtype="float32"):
    """Compare the rotated q and the sub-layer output with minicp (layer 0 of a small ECP model)."""
    cfg = minicp.ModelConfig(
        arch="ecp",
        vocab=64,
        dim=CASE["heads"] * CASE["head_dim"],
        heads=CASE["heads"],
        layers=1,
        seq_len=256,
        half_segment=32,
    )
    params = minicp.init_params(cfg, seed=0, dtype="float64")
    p = params["layers"][0][0]["fn"]
    x = np.random.default_rng(1).standard_normal((2, cfg.seq_len, cfg.dim))
    p32 = {key: {w: val.astype(dtype) for w, val in sub.items()} for key, sub in p.items()}
    out, q_rot = ecp_sublayer(p32, x.astype(dtype), cfg, rope)
    # the reference: minicp's RoPE on q, and the official sub-layer (which scales q after RoPE)
    q_ref = minicp_rope(ops.split_heads(ops.linear(x, p["to_q"]), cfg.heads), np.arange(cfg.seq_len), "interleaved")
    mt.assert_close(q_rot, q_ref, name="rope(q) (layer 0, positions 0..n-1)", dtype=dtype)
    return mt.assert_close(out, ecp_module.attention_layer(p, x, cfg, 0), name="ECP sub-layer output", dtype=dtype)


# ----------------------------------------------------------------------------------------------------

BUGS = {
    "off-by-one in the mask (kv > start instead of >=)": lambda: check_head_level(off_by_one_predicate),
    "forgot the previous half segment": lambda: check_head_level(no_previous_half_segment_predicate),
    "RoPE in LLaMA's halves convention instead of interleaved": lambda: check_sublayer(rope_halves),
}


def catch(check):
    """Run a check; return the MismatchError's message, or None when it passes."""
    try:
        check()
    except mt.MismatchError as e:
        return str(e)
    return None


def main():
    print("correct kernel, head level:", "OK" if catch(lambda: check_head_level(ecp_predicate)) is None else "FAILED")
    print("correct kernel, sub-layer: ", "OK" if catch(lambda: check_sublayer(rope_interleaved)) is None else "FAILED")
    missed = 0
    for title, check in BUGS.items():
        message = catch(check)
        print(f"\n=== planted bug: {title}")
        if message is None:
            missed += 1
            print("NOT CAUGHT")
        else:
            print(message)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
