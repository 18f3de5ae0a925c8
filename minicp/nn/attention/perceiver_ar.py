"""PerceiverAR: cross-attend once from the latent rows, then work on the latents only (paper section 3,
eqs. 4-7, Figure 2(a); the baseline of Table 1; docs/official-code.md#perceiverar).

The idea. Split the n input tokens into a history of H = n - L tokens and the last L tokens, the
*latents*. The first layer computes only the L latent query rows: each one sees every history key and,
causally, the latent keys up to itself (one L x n block). From then on the stream is L rows long and
every later layer is plain causal self-attention over the latents (an L x L block). The history is
read once, in layer 0, and never again, which is what makes PerceiverAR cheap for long inputs: after
layer 0 the cost no longer depends on n.

Block picture (# visible, \\ causal, . never computed):

    layer 0, stream of n = H + L rows          layers k >= 1, stream of L rows

                 keys: history H | latent L                  keys: latent L
    queries history      .       |    .         queries L        [ \\ ]
            latent L   [ #       |   \\ ]

Only the latent rows are computed, so the head-level output of layer 0 has L rows (positions H..n-1).

Official conventions (docs/official-code.md#perceiverar and docs/official-code.md#shared-pieces):

* K = V = LN_d(to_kv(x)): one D-wide projection (docs/official-code.md#k-equals-v) and a per-head LayerNorm applied to the
  rotated kv (docs/official-code.md#extra-kv-layernorm); ``common.project`` does both.
* RoPE in layer 0 only (docs/official-code.md#rope-placement); the latent queries keep their true positions H..n-1, the keys
  0..n-1. Layers k >= 1 have no position signal at all.
* The output projection is called ``w_out``; layer 0's residual is ``x[:, -L:]`` (the right positions),
  later layers add ``x``. Logits come out for the L latent positions H..n-1.
* The official model applies dropout to the attention probabilities; minicp has no dropout.

Cost in score entries per head (docs/attention-steps.md#per-layer-formulas):

    layer 0:   computed L n          unmasked L H + L (L + 1) / 2
    layer k:   computed L^2          unmasked L (L + 1) / 2

``latent_attention`` below, the L x n block with the history visible and the latent part causal, is
the piece the other Perceiver-family modules (double, s_split, compressed) reuse for their latent rows.
"""

import numpy as onp

from minicp.nn import ops
from minicp.nn.attention import common
from minicp.nn.attention.blocks import Pattern, causal_block
from minicp.validate import positive_int

NAME = "perceiver_ar"


# ----------------------------------------------------------------------------------------------------
# Argument checks shared by the Perceiver family
# ----------------------------------------------------------------------------------------------------


def check_layer(layer):
    """``layer`` is the 0-based layer index: 0 is the first layer, anything >= 1 a later one."""
    if isinstance(layer, bool) or not isinstance(layer, (int, onp.integer)) or layer < 0:
        raise ValueError(f"layer must be a non-negative integer (0 = first layer), got {layer!r}")
    return int(layer)


def check_latent(n, latent):
    """L latent rows out of n, 1 <= L <= n; L = n (no history, H = 0) is the official main's default
    (``--latent_length`` = ``--sequence_length``). Returns (L, H)."""
    L = positive_int("latent", latent)
    if L > n:
        raise ValueError(f"latent {L} must be at most seq_len {n} (history H = seq_len - latent must be >= 0)")
    return L, n - L


def _check(n, latent, layer):
    """(L, H, layer) for this pattern; H = 0 in layers >= 1, whose stream is the L latents."""
    layer = check_layer(layer)
    if layer == 0:
        return (*check_latent(n, latent), layer)
    L = positive_int("latent", latent)
    if n != L:
        raise ValueError(
            f"seq_len {n} must equal latent {L} in layer {layer} (after layer 0 the stream is the L latent rows)"
        )
    return L, 0, layer


# ----------------------------------------------------------------------------------------------------
# Pattern and head-level attention
# ----------------------------------------------------------------------------------------------------


def pattern(n, *, latent, layer=0):
    """Layer 0: one L x n block, rows H..n-1, causal on absolute positions (all H history keys visible).
    Layers >= 1 (n = L): one causal L x L block."""
    L, H, layer = _check(n, latent, layer)
    name = "latent: history + causal latent" if layer == 0 else "latent: causal"
    return Pattern(NAME, n, (causal_block(name, H, n, 0, n),))


def latent_attention(q_lat, k, v):
    """The latent path: L queries at the *last* L of the j key positions.

    Query row t (position j - L + t) sees every key before the latent part and the latent keys
    0..t, i.e. keys 0..j-L+t: one L x j score matrix, masked by a lower triangle shifted by j - L.
    q_lat (..., L, d), k (..., j, d), v (..., j, e) -> (..., L, e). q_lat must already be scaled.
    """
    L, j = q_lat.shape[-2], k.shape[-2]
    return ops.attend(q_lat, k, v, ops.causal_mask(L, j, diagonal=j - L))  # (..., L, e)


def attention(q, k, v, *, latent, layer=0, scale=None):
    """Head-level PerceiverAR attention. q, k, v (b, h, n, d) -> (b, h, L, d).

    Layer 0 computes only the latent rows H..n-1 (the history queries are ignored); layers >= 1 need
    n = L and are plain causal attention. ``scale`` multiplies q (default d^-0.5; the sub-layer passes
    1.0 because ``common.project`` has already scaled q).
    """
    common.check_qkv(q, k, v)
    b, h, n, d = q.shape
    e = v.shape[-1]
    L, H, layer = _check(n, latent, layer)
    q = common.scale_q(q, scale)
    out = latent_attention(q[:, :, H:], k, v)  # (b, h, L, e): layer 0 L x n, later L x L
    assert out.shape == (b, h, L, e)
    return out


# ----------------------------------------------------------------------------------------------------
# The full sub-layer with the official semantics
# ----------------------------------------------------------------------------------------------------


def pattern_kwargs(cfg, layer):
    """The head-level pattern arguments this layer of a model uses."""
    return dict(latent=cfg.latent, layer=layer)


def param_spec(cfg, layer):
    """Parameters of ``layers.i.0.fn`` (official name ``w_out``, not ``to_out``)."""
    return common.projection_params(cfg, out="w_out")


def attention_layer(p, x, cfg, layer):
    """PerceiverAR sub-layer: normalised stream x (b, t, D) -> output (b, t - H, D) in layer 0, (b, s, D)
    for a stream of s rows in later layers.

    As the official code, q is projected for all rows and layer 0 keeps the rows from the fixed history
    length H = n - L on: t = n gives the L latent rows; with L = n (H = 0) any t works (causal attention
    over the t rows); t = H + 1 gives one row, which the official residual then broadcasts (see
    ``minicp.model.check_tokens``).
    """
    b, t, D = x.shape
    rows = t - cfg.history if layer == 0 else t
    q, k, v = common.project(p, x, cfg, layer)  # (b, h, t, d) each
    o = attention(q, k, v, latent=rows, layer=layer, scale=1.0)  # (b, h, rows, d)
    out = ops.linear(ops.merge_heads(o), p["w_out"])  # (b, rows, D)
    assert out.shape == (b, rows, D)
    return out


def skip(x, cfg, layer):
    """The residual the sub-layer output is added to: layer 0 the latent rows x[:, -L:], later x."""
    return x[:, -cfg.latent :] if layer == 0 else x


def unused_params(cfg, layer):
    """Names under ``layers.i.0.fn`` that this layer's forward pass never reads (their gradient is None in
    PyTorch, and AdamW leaves them alone): the per-head LayerNorm where the config does not apply it."""
    return common.unused_kv_norm(cfg)
