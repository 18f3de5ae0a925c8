"""Double Attention: PerceiverAR's latent path plus a history that keeps attending to itself (paper
section 4.1, Figure 2(b); docs/official-code.md#double).

The idea. PerceiverAR reads the history once, in layer 0, and then drops it. Double Attention keeps
the whole stream of n = H + L rows in every layer and computes two attentions per head:

* history: the H history queries attend to the H history keys with **no mask** (history tokens see
  each other in both directions: they are never scored, so this cannot leak a target; docs/official-code.md#bidirectional-history-rows);
* latent: the L latent queries attend to all n keys, every history key visible and the latent keys
  causally (the same L x n block as PerceiverAR's first layer).

The history therefore gets refined layer after layer, and every layer's latent rows read the refined
history. Every layer is identical; the stream stays n rows long.

Block picture (# visible, \\ causal, . never computed):

                 keys: history H | latent L
    queries history   [ #  ]     |    .
            latent L  [ #        |   \\ ]

Official conventions (docs/official-code.md#double and docs/official-code.md#shared-pieces):

* K = V = LN_d(to_kv(x)), one D-wide projection (docs/official-code.md#k-equals-v) with the per-head LayerNorm (docs/official-code.md#extra-kv-layernorm).
* RoPE in **every** layer, at positions 0..n-1 (unlike the other architectures; docs/official-code.md#rope-placement). The config
  sets ``rope_all_layers=True`` for this architecture; ``common.project`` applies it.
* One shared output projection ``to_out`` over cat([O_history, O_latent]) along the sequence axis;
  residual ``x + out`` in every layer. ``x_cxt, x_lat`` in the official forward are dead code (docs/official-code.md#dead-code).
* Dropout (on both probability matrices in the official code) is not modelled: minicp has no dropout.

Cost in score entries per head per layer (docs/attention-steps.md#per-layer-formulas):

    computed  L n + H^2          unmasked  L H + L (L + 1) / 2 + H^2

``history_and_latent`` (below) is reused by Compressed Double Attention, whose head-level layers are
exactly this computation with a history of H (layer 0) or p (later layers) rows.
"""

from minicp import backend as B
from minicp.nn import ops
from minicp.nn.attention import common
from minicp.nn.attention.blocks import Pattern, block, causal_block
from minicp.nn.attention.perceiver_ar import check_latent, check_layer, latent_attention

NAME = "double"


def _check(n, latent, layer):
    check_layer(layer)  # accepted for a uniform API; every layer is identical
    return check_latent(n, latent)  # (L, H)


def history_pattern(arch, n, history):
    """The two blocks of a stream whose first ``history`` rows attend among themselves (unmasked) and
    whose remaining rows are latent (all history keys visible, the latent keys causal)."""
    blocks = (block("history: unmasked", range(history), range(history)),) if history else ()
    if history < n:
        blocks += (causal_block("latent: history + causal latent", history, n, 0, n),)
    return Pattern(arch, n, blocks)


def pattern(n, *, latent, layer=0):
    """History block [0, H) x [0, H) with no mask, then latent block [H, n) x [0, n), causal."""
    L, H = _check(n, latent, layer)
    return history_pattern(NAME, n, H)


def history_and_latent(q, k, v, history):
    """The two attentions of one Double-Attention head over a stream of n rows, q already scaled.

        O_hist = softmax(q[:H] k[:H]^T) v[:H]                 (H x H, no mask)
        O_lat  = softmax(q[H:] k^T, causal latent part) v     (L x n)
        out    = cat([O_hist, O_lat])                         rows in position order

    q, k, v (b, h, n, d) -> (b, h, n, e).
    """
    xp = B.xp
    H = history
    if H == 0:  # L = n: no history
        return latent_attention(q, k, v)
    O_hist = ops.attend(q[:, :, :H], k[:, :, :H], v[:, :, :H])  # (b, h, H, e)
    if H >= q.shape[2]:  # only history rows (t <= H)
        return O_hist
    O_lat = latent_attention(q[:, :, H:], k, v)  # (b, h, L, e)
    return xp.concatenate([O_hist, O_lat], axis=2)  # (b, h, n, e)


def attention(q, k, v, *, latent, layer=0, scale=None):
    """Head-level Double Attention. q, k, v (b, h, n, d) -> (b, h, n, d); every layer the same.

    ``layer`` is accepted (and checked) so that all Perceiver-family modules take the same arguments;
    it does not change anything here. ``scale`` multiplies q (default d^-0.5; the sub-layer passes 1.0).
    """
    common.check_qkv(q, k, v)
    b, h, n, d = q.shape
    L, H = _check(n, latent, layer)
    out = history_and_latent(common.scale_q(q, scale), k, v, H)
    assert out.shape == (b, h, n, v.shape[-1])
    return out


# ----------------------------------------------------------------------------------------------------
# The full sub-layer with the official semantics
# ----------------------------------------------------------------------------------------------------


def pattern_kwargs(cfg, layer):
    """The head-level pattern arguments this layer of a model uses."""
    return dict(latent=cfg.latent, layer=layer)


def param_spec(cfg, layer):
    """Parameters of ``layers.i.0.fn``: one ``to_out`` for history and latent rows."""
    return common.projection_params(cfg)


def attention_layer(p, x, cfg, layer):
    """Double Attention sub-layer: normalised stream x (b, t, D) -> attention output (b, t, D).

    As the official code, the history length H = n - L is fixed: for t < n the first min(t, H) rows
    are history (unmasked among themselves) and the rest latent; t <= H gives history rows only.
    """
    b, n, D = x.shape
    q, k, v = common.project(p, x, cfg, layer)  # (b, h, n, d) each
    o = history_and_latent(q, k, v, min(cfg.history, n))  # (b, h, n, d), q scaled
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
