"""s-Split Double Attention: Double Attention with the history cut into independent segments (paper
section 4.3, Figure 4; docs/official-code.md#s-split).

The idea. Double Attention's history costs H^2 score entries per layer. s-Split cuts the history into
N_h = H / c contiguous segments of c tokens and lets each history query see only the keys of its own
segment, with no mask inside it: N_h blocks of c x c, H c entries in all. The latent rows are exactly
Double Attention's: they see every history key and, causally, the latent keys. Every layer is
identical and the stream stays n rows long. A history token never sees outside its own segment, in
any layer (docs/receptive-fields.md); only the latent rows mix the segments.

Block picture for N_h = 3 (# visible, \\ causal, . never computed):

                 keys: history H = 3c      | latent L
    queries seg 0     [#]  .   .           |    .
            seg 1      .  [#]  .           |    .
            seg 2      .   .  [#]          |    .
            latent L  [#   #   #           |   \\ ]

Official conventions (docs/official-code.md#s-split and docs/official-code.md#shared-pieces):

* The official argument ``num_segments`` counts **history** segments, N_h = H / c, and its segment c is
  a *full* segment (the paper's s-Split "s" is c). minicp's ``split`` is c; H must be a multiple of it.
* K = V = LN_d(to_kv(x)) (docs/official-code.md#k-equals-v, docs/official-code.md#extra-kv-layernorm); RoPE in **layer 0 only**, at positions 0..n-1 (docs/official-code.md#rope-placement;
  unlike Double Attention, which rotates in every layer).
* One shared output projection ``to_out`` over cat([O_history, O_latent]); residual ``x + out``.
  ``x_cxt, x_lat`` and ``self.num_segments = num_segments,`` (a tuple) are dead code (docs/official-code.md#dead-code).
* History rows are bidirectional inside their segment (docs/official-code.md#bidirectional-history-rows: never scored, so harmless).
* Dropout (on both probability matrices in the official code) is not modelled.
* Table 8's s-Split row (77%) cannot be reproduced from this cost (docs/official-code.md#table-8-inconsistencies, docs/attention-steps.md#s-split-row).

Cost in score entries per head per layer (docs/attention-steps.md#per-layer-formulas):

    computed  L n + H c          unmasked  L H + L (L + 1) / 2 + H c
"""

from minicp import backend as B
from minicp.nn import ops
from minicp.nn.attention import common
from minicp.nn.attention.blocks import Pattern, block, causal_block
from minicp.nn.attention.perceiver_ar import check_latent, check_layer, latent_attention
from minicp.validate import positive_int

NAME = "s_split"


def _check(n, latent, split, layer):
    check_layer(layer)  # accepted for a uniform API; every layer is identical
    L, H = check_latent(n, latent)
    c = positive_int("split", split)
    if H % c:
        raise ValueError(f"history {H} (= seq_len {n} - latent {L}) is not divisible by split {c}")
    return L, H, c


def pattern(n, *, latent, split, layer=0):
    """History segments [sc, sc + c) x [sc, sc + c), no mask, s = 0..H/c-1; then the latent block
    [H, n) x [0, n), causal."""
    L, H, c = _check(n, latent, split, layer)
    blocks = [
        block(f"history segment {s}: unmasked", range(s * c, s * c + c), range(s * c, s * c + c)) for s in range(H // c)
    ]
    blocks.append(causal_block("latent: history + causal latent", H, n, 0, n))
    return Pattern(NAME, n, tuple(blocks))


def attention(q, k, v, *, latent, split, layer=0, scale=None):
    """Head-level s-Split attention. q, k, v (b, h, n, d) -> (b, h, n, d); every layer the same.

    The history segments are computed as one batch of N_h c x c score matrices. ``layer`` is accepted
    (and checked) for a uniform Perceiver-family API and changes nothing. ``scale`` multiplies q
    (default d^-0.5; the sub-layer passes 1.0).
    """
    common.check_qkv(q, k, v)
    b, h, n, d = q.shape
    L, H, c = _check(n, latent, split, layer)
    out = segments_and_latent(common.scale_q(q, scale), k, v, H, c)
    assert out.shape == (b, h, n, v.shape[-1])
    return out


def segments_and_latent(q, k, v, H, c):
    """History rows :H in segments of c (unmasked inside each), then the latent rows (all history keys,
    latent keys causally). q already scaled; H may be 0 (L = n) or the whole stream (t <= H)."""
    xp = B.xp
    b, h, n, d = q.shape
    e = v.shape[-1]
    if H == 0:
        return latent_attention(q, k, v)
    N = H // c

    # History: 'b h (s c) d -> b h s c d', each segment attends to itself, no mask
    Q_seg = xp.reshape(q[:, :, :H], (b, h, N, c, d))
    K_seg = xp.reshape(k[:, :, :H], (b, h, N, c, d))
    V_seg = xp.reshape(v[:, :, :H], (b, h, N, c, e))
    O_seg = ops.attend(Q_seg, K_seg, V_seg)  # (b, h, N, c, e)
    O_hist = xp.reshape(O_seg, (b, h, H, e))  # merge the segments back
    if H >= n:
        return O_hist

    # Latent: as Double Attention, all H history keys visible, latent keys causal (L x n)
    O_lat = latent_attention(q[:, :, H:], k, v)  # (b, h, L, e)
    out = xp.concatenate([O_hist, O_lat], axis=2)  # (b, h, n, e)
    assert out.shape == (b, h, n, e)
    return out


# ----------------------------------------------------------------------------------------------------
# The full sub-layer with the official semantics
# ----------------------------------------------------------------------------------------------------


def pattern_kwargs(cfg, layer):
    """The head-level pattern arguments this layer of a model uses."""
    return dict(latent=cfg.latent, split=cfg.split, layer=layer)


def param_spec(cfg, layer):
    """Parameters of ``layers.i.0.fn``."""
    return common.projection_params(cfg)


def attention_layer(p, x, cfg, layer):
    """s-Split sub-layer: normalised stream x (b, t, D) -> attention output (b, t, D).

    As the official code, H = n - L and the number of history segments N_h = H / c are fixed: for t > H
    the history is H rows in segments of c; for t <= H all t rows are history, in N_h segments of t / N_h
    (t must divide; ``minicp.model.check_tokens`` says so).
    """
    b, n, D = x.shape
    H = min(cfg.history, n)
    c = H // (cfg.history // cfg.split) if H else cfg.split  # segment length at this t
    q, k, v = common.project(p, x, cfg, layer)  # (b, h, n, d) each
    o = segments_and_latent(q, k, v, H, c)  # (b, h, n, d), q scaled
    out = ops.linear(ops.merge_heads(o), p["to_out"])  # (b, n, D)
    assert out.shape == (b, n, D)
    return out


def skip(x, cfg, layer):
    """The residual the sub-layer output is added to: the whole stream."""
    return x


def unused_params(cfg, layer):
    """Names under ``layers.i.0.fn`` that this layer's forward pass never reads (their gradient is None in
    PyTorch, and AdamW leaves them alone): the per-head LayerNorm where the config does not apply it."""
    return common.unused_kv_norm(cfg)
