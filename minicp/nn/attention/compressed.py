"""Compressed Double Attention: Double Attention whose history is squeezed to p slots after layer 0
(paper section 4.2, Figure 3, eq. 13 onwards; docs/official-code.md#compressed-double).

The idea. Double Attention pays H^2 for the history in every layer. Here layer 0 runs Double Attention
on the full stream (history H x H unmasked, latent L x n causal) and then compresses the H history
*output rows* to p slots with a learned linear map **along the sequence axis** (``projection_hist``,
Linear(H, p) with bias): slot r is a weighted sum of all H history rows,

    O_c[:, r, :] = sum_j Wp[r, j] O_h[:, j, :] + bp[r]          r = 0..p-1, j = 0..H-1

From layer 1 on the stream is p + L rows: the p slots play the history (p x p, unmasked) and the
latent rows see all p slots and, causally, the latent keys. At head level every layer is therefore
Double Attention, with a history of H rows in layer 0 and p rows later; the compression happens in the
sub-layer, between the heads and ``w_out``.

Block picture (# visible, \\ causal, . never computed):

    layer 0, stream n = H + L                    layers k >= 1, stream p + L

                 keys: history H | latent L                   keys: slots p | latent L
    queries history   [ #  ]     |    .          queries slots   [ # ]      |    .
            latent L  [ #        |   \\ ]                latent L [ #        |   \\ ]
        -> O_h (H rows) --projection_hist--> O_c (p rows); cat([O_c, O_lat]) -> w_out

Official conventions and quirks (docs/official-code.md#compressed-double and #quirks-and-departures):

* K = V = LN_d(to_kv(x)) (docs/official-code.md#k-equals-v, docs/official-code.md#extra-kv-layernorm); RoPE in layer 0 only, q_hist at 0..H-1, q_lat at H..n-1,
  kv at 0..n-1 (docs/official-code.md#rope-placement); the output projection is called ``w_out``.
* ``projection_hist`` (weight (p, H), bias (p,)) exists in **every** layer's state_dict but only layer 0
  uses it (docs/official-code.md#dead-code).
* The order is attend-then-compress: layer 0 still costs H^2 + L n; the paper's prose reads as
  compress-then-attend (docs/official-code.md#compressed-attend-then-compress).
* Layer 0's residual is ``x[:, 0:p+L]`` (docs/official-code.md#compressed-first-layer-residual): latent row t (token H + t) gets the residual of
  token p + t, off by H - p. ``ModelConfig(compressed_residual="paper")`` gives the expected
  cat([x[:, :p], x[:, H:]]) instead (slots keep x[:, :p], latents their own tokens).
* The official code drops out only the latent probabilities, not the history ones (docs/official-code.md#compressed-history-dropout); minicp
  has no dropout, so this is moot here.
* Main hard-codes p = n // 4, unlike the paper's configurations (docs/official-code.md#compressed-compression-size); minicp's default is the same.

Cost in score entries per head (docs/attention-steps.md#per-layer-formulas; the H p weights of the compression are not counted):

    layer 0:   computed L n + H^2           unmasked L H + L (L + 1) / 2 + H^2
    layer k:   computed L (p + L) + p^2     unmasked L p + L (L + 1) / 2 + p^2
"""

from minicp import backend as B
from minicp.nn import ops
from minicp.nn.attention import common
from minicp.nn.attention.double import history_and_latent, history_pattern
from minicp.nn.attention.perceiver_ar import check_latent, check_layer
from minicp.validate import positive_int

NAME = "compressed"


def _check(n, latent, compressed, layer):
    """(L, history rows of this layer's stream, p, layer): H = n - L in layer 0, p afterwards."""
    layer = check_layer(layer)
    p = positive_int("compressed", compressed)
    if layer == 0:
        L, H = check_latent(n, latent)
        if p > H:
            raise ValueError(f"compressed {p} must be at most history {H} (= seq_len {n} - latent {L})")
        return L, H, p, layer
    L = positive_int("latent", latent)
    if n != p + L:
        raise ValueError(
            f"seq_len {n} must equal compressed {p} + latent {L} in layer {layer} "
            f"(after layer 0 the stream is p compressed slots then L latent rows)"
        )
    return L, p, p, layer


def pattern(n, *, latent, compressed, layer=0):
    """Layer 0: Double Attention's blocks (history [0, H)^2 unmasked, latent [H, n) x [0, n) causal).
    Layers >= 1 (n = p + L): slots [0, p)^2 unmasked, latent [p, n) x [0, n) causal."""
    L, hist, p, layer = _check(n, latent, compressed, layer)
    return history_pattern(NAME, n, hist)


def attention(q, k, v, *, latent, compressed, layer=0, scale=None):
    """Head-level Compressed Double Attention. q, k, v (b, h, n, d) -> (b, h, n, d).

    Layer 0 (n = H + L): rows 0..H-1 are the history outputs O_h (not yet compressed; the sub-layer
    does that), rows H..n-1 the latent outputs. Layers >= 1 (n = p + L): rows 0..p-1 are the slots.
    ``scale`` multiplies q (default d^-0.5; the sub-layer passes 1.0).
    """
    common.check_qkv(q, k, v)
    b, h, n, d = q.shape
    L, hist, p, layer = _check(n, latent, compressed, layer)
    out = history_and_latent(common.scale_q(q, scale), k, v, hist)  # (b, h, n, e)
    assert out.shape == (b, h, n, v.shape[-1])
    return out


def compress_history(O_h, proj):
    """``projection_hist`` along the sequence axis: O_h (b, H, D) -> O_c (b, p, D).

    O_c = Wp O_h + bp[:, None], i.e. O_c[:, r, :] = sum_j Wp[r, j] O_h[:, j, :] + bp[r]; the same
    numbers as the official 'b n d -> b d n', Linear(H, p), 'b d n -> b n d'.
    """
    Wp, bp = proj["weight"], proj["bias"]  # (p, H), (p,)
    O_c = Wp @ O_h + bp[:, None]  # (p, H) @ (b, H, D) -> (b, p, D)
    assert O_c.shape == (O_h.shape[0], Wp.shape[0], O_h.shape[2])
    return O_c


# ----------------------------------------------------------------------------------------------------
# The full sub-layer with the official semantics
# ----------------------------------------------------------------------------------------------------


def pattern_kwargs(cfg, layer):
    """The head-level pattern arguments this layer of a model uses."""
    return dict(latent=cfg.latent, compressed=cfg.compressed, layer=layer)


def param_spec(cfg, layer):
    """Parameters of ``layers.i.0.fn`` (``w_out``, not ``to_out``). ``projection_hist`` is in every
    layer and used only in layer 0 (docs/official-code.md#dead-code)."""
    return {
        **common.projection_params(cfg, out="w_out"),
        "projection_hist": ("linear", cfg.compressed, cfg.history, True),
    }  # Linear(H, p): weight (p, H)


def attention_layer(p, x, cfg, layer):
    """Compressed Double Attention sub-layer: normalised stream x -> output (b, p + L, D).

    Layer 0: x (b, n, D); heads -> merge -> O_h = rows :H compressed to p slots, cat with the latent
    rows, w_out. Layers >= 1: x (b, p + L, D); heads -> merge -> w_out.
    """
    xp = B.xp
    b, n, D = x.shape
    H, P = cfg.history, cfg.compressed
    hist = H if layer == 0 else P
    if n < hist:
        raise ValueError(f"layer {layer} needs a stream of at least {hist} rows (the fixed history), got {n}")
    q, k, v = common.project(p, x, cfg, layer)  # (b, h, n, d) each
    o = ops.merge_heads(history_and_latent(q, k, v, hist))  # (b, n, D), q scaled
    if layer == 0:
        O_c = compress_history(o[:, :H], p["projection_hist"])  # (b, p, D)
        o = xp.concatenate([O_c, o[:, H:]], axis=1)  # (b, p + n - H, D)
    out = ops.linear(o, p["w_out"])  # (b, p + L, D) for n = seq_len
    assert out.shape == (b, (P + n - H) if layer == 0 else n, D)
    return out


def skip(x, cfg, layer):
    """The residual the sub-layer output is added to.

    Layer 0, official (docs/official-code.md#compressed-first-layer-residual): x[:, :p+L], so latent row t carries token p + t's residual.
    Layer 0, ``compressed_residual="paper"``: cat([x[:, :p], x[:, H:]]), each latent row its own token.
    Layers >= 1: x.
    """
    if layer != 0:
        return x
    H, P, L = cfg.history, cfg.compressed, cfg.latent
    if cfg.compressed_residual == "official":
        return x[:, : P + L]
    return B.xp.concatenate([x[:, :P], x[:, H:]], axis=1)


def unused_params(cfg, layer):
    """Names under ``layers.i.0.fn`` that this layer's forward pass never reads (their gradient is None in
    PyTorch, and AdamW leaves them alone): ``projection_hist`` after layer 0 (docs/official-code.md#dead-code),
    and the per-head LayerNorm where the config does not apply it."""
    unused = common.unused_kv_norm(cfg)
    return unused + (("projection_hist.weight", "projection_hist.bias") if layer > 0 else ())
