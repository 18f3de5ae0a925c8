"""ECP: Efficient Context propagating Perceiver (paper section 5, Figures 1 and 6; docs/official-code.md#ecp).

The idea. Cut the sequence into half segments of m tokens (the paper's segment is s = 2m; the
official code calls m its "segment" and has N_s = n / m of them). Then, in every layer:

* half segment 0 runs ordinary causal attention on itself ("ATTN", an m x m block);
* every later half segment t runs PerceiverAR-style attention over the pair (t-1, t): its m queries
  see all m keys of half segment t-1 and, causally, the keys of t itself ("PAR", an m x 2m block).

One layer therefore sees only one half segment back, but the previous half segment already saw one
further back in the layer below, so after k layers a token sees k half segments back (Figure 6). Cost
per head per layer: m^2 + (N_s - 1) 2m^2 = m (2n - m) score entries, linear in n; nothing n x n is ever
built here.

Block picture for N_s = 4 (each cell is m x m; # visible, \\ causal, . never computed):

            keys:  0   1   2   3
    queries 0     [\\]
            1     [#] [\\]
            2         [#] [\\]
            3             [#] [\\]

Official conventions (docs/official-code.md#ecp): K = V = raw to_kv output (the per-head LayerNorm is computed and
never used), RoPE in layer 0 only at global positions, and the first half segment has its own output
projection ``to_out_0``; rows m..n-1 go through ``to_out``.

Option ``partial`` (``ModelConfig.partial_segments``): n need not be a multiple of m; the last half
segment then has r < m rows and sees the previous full half segment plus itself causally. The
official code requires n % m == 0.
"""

from minicp import backend as B
from minicp.nn import ops
from minicp.nn.attention import common
from minicp.nn.attention.blocks import Pattern, causal_block
from minicp.validate import positive_int

NAME = "ecp"


def _check(n, half_segment, partial):
    m = positive_int("half_segment", half_segment)
    if n % m and not partial:
        raise ValueError(
            f"seq_len {n} is not divisible by half_segment {m} (pass partial=True for a partial last block)"
        )
    return m


def pattern(n, *, half_segment, partial=False):
    """The declared pattern: ATTN block [0, m) x [0, m), then PAR blocks [tm, tm+m) x [(t-1)m, tm+m)."""
    m = _check(n, half_segment, partial)
    blocks = [causal_block("ATTN 0", 0, min(m, n), 0, min(m, n))]
    for t in range(1, -(-n // m)):
        start, stop = t * m, min(n, (t + 1) * m)
        blocks.append(causal_block(f"PAR {t}", start, stop, start - m, stop))
    return Pattern(NAME, n, tuple(blocks))


def attention(q, k, v, *, half_segment, partial=False, scale=None):
    """Head-level ECP attention. q, k, v (b, h, n, d) -> (b, h, n, d); never builds an n x n matrix.

    ``scale`` multiplies q (default d^-0.5; the sub-layer passes 1.0 because q is already scaled).
    """
    common.check_qkv(q, k, v)
    xp = B.xp
    b, h, n, d = q.shape
    e = v.shape[-1]
    m = _check(n, half_segment, partial)
    q = common.scale_q(q, scale)
    full = n // m  # number of complete half segments
    if full == 0:  # shorter than one half segment: plain causal
        return ops.attend(q, k, v, ops.causal_mask(n, n))

    # Complete half segments as blocks: (b, h, N, m, d), N = full
    Q = xp.reshape(q[:, :, : full * m], (b, h, full, m, d))
    K = xp.reshape(k[:, :, : full * m], (b, h, full, m, d))
    V = xp.reshape(v[:, :, : full * m], (b, h, full, m, e))

    # ATTN: half segment 0 attends to itself, causally (m x m)
    O_first = ops.attend(Q[:, :, 0], K[:, :, 0], V[:, :, 0], ops.causal_mask(m, m))  # (b, h, m, e)
    outputs = [O_first[:, :, None]]

    # PAR: half segment t >= 1 attends to cat(KV_{t-1}, KV_t) (m x 2m); query r sees keys 0..m+r
    if full > 1:
        K_pair = xp.concatenate([K[:, :, :-1], K[:, :, 1:]], axis=3)  # (b, h, N-1, 2m, d)
        V_pair = xp.concatenate([V[:, :, :-1], V[:, :, 1:]], axis=3)  # (b, h, N-1, 2m, e)
        O_pairs = ops.attend(Q[:, :, 1:], K_pair, V_pair, ops.causal_mask(m, 2 * m, diagonal=m))
        assert O_pairs.shape == (b, h, full - 1, m, e)
        outputs.append(O_pairs)
    out = xp.reshape(xp.concatenate(outputs, axis=2), (b, h, full * m, e))  # (b, h, N m, e)

    # Partial last half segment (option): r rows see the last full half segment and themselves
    r = n - full * m
    if r:
        lo = (full - 1) * m
        O_last = ops.attend(q[:, :, full * m :], k[:, :, lo:], v[:, :, lo:], ops.causal_mask(r, m + r, diagonal=m))
        out = xp.concatenate([out, O_last], axis=2)
    assert out.shape == (b, h, n, e)
    return out


# ----------------------------------------------------------------------------------------------------
# The full sub-layer with the official semantics
# ----------------------------------------------------------------------------------------------------


def pattern_kwargs(cfg, layer):
    """The head-level pattern arguments this layer of a model uses."""
    return dict(half_segment=cfg.half_segment, partial=cfg.partial_segments)


def param_spec(cfg, layer):
    """Parameters of ``layers.i.0.fn``: the shared ones plus ``to_out_0``, the first half segment's own
    output projection. ``norm`` is in the official state_dict but unused (docs/official-code.md#extra-kv-layernorm)."""
    return {**common.projection_params(cfg), "to_out_0": ("linear", cfg.dim, cfg.dim, True)}


def attention_layer(p, x, cfg, layer):
    """ECP attention sub-layer: normalised stream x (b, n, D) -> attention output (b, n, D)."""
    xp = B.xp
    b, n, D = x.shape
    m = cfg.half_segment
    q, k, v = common.project(p, x, cfg, layer)  # (b, h, n, d) each
    o = ops.merge_heads(attention(q, k, v, half_segment=m, partial=cfg.partial_segments, scale=1.0))  # (b, n, D)
    first = min(m, n)
    out = xp.concatenate(
        [
            ops.linear(o[:, :first], p["to_out_0"]),  # rows 0..m-1: to_out_0
            ops.linear(o[:, first:], p["to_out"]),
        ],
        axis=1,
    )  # rows m..n-1: to_out
    assert out.shape == (b, n, D)
    return out


def skip(x, cfg, layer):
    """The residual the sub-layer output is added to: the whole stream."""
    return x


def unused_params(cfg, layer):
    """Names under ``layers.i.0.fn`` that this layer's forward pass never reads (their gradient is None in
    PyTorch, and AdamW leaves them alone): the per-head LayerNorm where the config does not apply it."""
    return common.unused_kv_norm(cfg)
