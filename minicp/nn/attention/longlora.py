"""LongLoRA's S2-Attn, shifted sparse attention (Chen et al. 2023; docs/official-code.md#longlora-s2-attn): the paper's comparison point.

The idea. Cut the sequence into groups of g tokens (LongLoRA: g = n / 4) and let every token attend,
causally, only inside its own group. Alone that would wall the groups off from each other, so half of
the heads use groups shifted by u = g / 2:

* heads 0 .. h//2 - 1 ("unshifted"): groups [j g, (j+1) g), causal inside each;
* heads h//2 .. h - 1 ("shifted"; an odd h shifts the extra head, as LongLoRA's ``num_heads//2:``):
  groups moved by u, so every shifted group straddles the border
  between two unshifted ones. ``to_out`` mixes the heads, so information crosses a border per layer.

LongLoRA's code has two implementations of the shifted heads, and they differ at the wrap-around:

* ``shift="roll"`` (``forward_noflashattn``, the fidelity option): roll q, k, v by -u along the
  sequence, attend in groups of g, roll the output back by +u. The last rolled group holds tokens
  [n-u, n) followed by [0, u), causal in that rolled order, so **tokens 0 .. u-1 attend to the last u
  tokens of the sequence**: the future leaks into the first u positions (acknowledged in LongLoRA
  issues #15 and #90).
* ``shift="varlen"`` (``forward_flashattn``, minicp's default): variable-length groups
  [0, u), [u, u+g), [u+g, u+2g), ..., [n-u, n), each causal. No wrap, no leak; the maintainers point to
  this one as the fix (#90).

Block picture for n = 2g (each cell is u x u; \\ causal, # visible, . never computed):

                 unshifted heads     shifted, varlen     shifted, roll
        keys:    0  1  2  3          0  1  2  3          0  1  2  3
    queries 0    \\  .  .  .          \\  .  .  .          \\  .  .  #    <- roll: tokens 0..u-1 see
            1    #  \\  .  .          .  \\  .  .          .  \\  .  .       the last u tokens
            2    .  .  \\  .          .  #  \\  .          .  #  \\  .
            3    .  .  #  \\          .  .  .  \\          .  .  .  \\

Cost per head per layer (docs/attention-steps.md#per-layer-formulas), score entries computed [unmasked]:

    unshifted head, or any head with roll:  n g                 [n (g+1) / 2]
    shifted head, varlen:                   n g - g^2 / 2       [(n/g - 1) g (g+1) / 2 + u (u+1)]

so a whole layer costs h (n g - g^2/4) with varlen and h n g with roll: linear in n, never n x n.

Identity with ECP. With g = 2m (u = m) the varlen S2-Attn and ECP with half segment m have the same
computed count per layer, h m (2n - m), and the same receptive field, [m max(0, floor(i/m) - k), i]
after k layers (docs/attention-steps.md#ecp-and-longlora; docs/official-code.md#ecp-versus-longlora-cost): ECP's m x 2m PAR block covers in one head what S2
covers with two heads of g x g groups offset by m. (Unmasked counts differ: ECP ~ 1.5 n m, S2 ~ n m.)
The roll variant computes h m^2 more entries per layer (ECP = S2-roll minus m^2 per head) and
its first rows see the future.

Conventions (docs/official-code.md#longlora-s2-attn, ModelConfig's "longlora" defaults): LLaMA's separate K and V (``to_kv`` is
2D wide: rows 0..D-1 = k_proj.weight, rows D..2D-1 = v_proj.weight), RoPE in the halves style in
every layer at the tokens' true positions 0..n-1, applied **before** any shifting. LLaMA's o_proj has no
bias; minicp keeps its block's biased ``to_out`` (set its bias to 0 to load LLaMA weights).
"""

import numpy as onp

from minicp import backend as B
from minicp.nn import ops
from minicp.nn.attention import common
from minicp.nn.attention.blocks import Pattern, block, causal_block
from minicp.validate import positive_int

NAME = "longlora"
SHIFTS = ("varlen", "roll")


def _check(n, heads, group, shift):
    """Validate the S2 arguments; returns (g, u)."""
    g = positive_int("group", group)
    if g % 2:
        raise ValueError(f"group {g} must be even (shifted heads move by group / 2)")
    if n % g:
        raise ValueError(f"seq_len {n} is not divisible by group {g}")
    if shift not in SHIFTS:
        raise ValueError(f"shift {shift!r} is not one of {SHIFTS}")
    return g, g // 2


# ----------------------------------------------------------------------------------------------------
# Declared patterns (per head)
# ----------------------------------------------------------------------------------------------------


def unshifted_pattern(n, *, group):
    """Groups [j g, (j+1) g), causal inside each (the first h/2 heads)."""
    g, _ = _check(n, 2, group, "varlen")
    return Pattern(
        NAME, n, tuple(causal_block(f"group {j}", j * g, (j + 1) * g, j * g, (j + 1) * g) for j in range(n // g))
    )


def shifted_pattern(n, *, group, shift="varlen"):
    """The shifted heads' groups (the last h/2 heads).

    varlen: [0, u), [u, u+g), ..., [n-g-u, n-u), [n-u, n), each causal on positions.
    roll: the rolled groups in computation order; groups 0 .. n/g-2 are [u + j g, u + (j+1) g), the
    last one (the wrap) has rows = cols = positions n-u .. n-1, 0 .. u-1, causal in that order.
    """
    g, u = _check(n, 2, group, shift)
    middle = [
        causal_block(f"group {j}", u + j * g, u + (j + 1) * g, u + j * g, u + (j + 1) * g) for j in range(n // g - 1)
    ]
    if shift == "varlen":
        blocks = [causal_block("head", 0, u, 0, u), *middle, causal_block("tail", n - u, n, n - u, n)]
    else:
        wrap = onp.concatenate([onp.arange(n - u, n), onp.arange(u)])  # rolled order of the last group
        blocks = [*middle, block("wrap", wrap, wrap, diagonal=0)]
    return Pattern(NAME, n, tuple(blocks))


def head_patterns(n, heads, *, group, shift="varlen"):
    """One Pattern per head: heads//2 unshifted, then heads - heads//2 shifted (``shift`` = "varlen" or
    "roll"). As LongLoRA (``qkv[..., num_heads//2:]`` is shifted), an odd head count shifts one more head."""
    heads = positive_int("heads", heads)
    _check(n, heads, group, shift)
    plain, shifted = unshifted_pattern(n, group=group), shifted_pattern(n, group=group, shift=shift)
    return [plain] * (heads // 2) + [shifted] * (heads - heads // 2)


# ----------------------------------------------------------------------------------------------------
# The explicit computation
# ----------------------------------------------------------------------------------------------------


def _grouped_causal(q, k, v, g):
    """Causal attention inside consecutive groups of g rows: (b, h, n', d) -> (b, h, n', e), n' % g == 0."""
    xp = B.xp
    b, h, n, d = q.shape
    e = v.shape[-1]
    G = n // g
    Q = xp.reshape(q, (b, h, G, g, d))  # (b, h, G, g, d)
    K = xp.reshape(k, (b, h, G, g, d))
    V = xp.reshape(v, (b, h, G, g, e))
    O = ops.attend(Q, K, V, ops.causal_mask(g, g))  # (b, h, G, g, e): G score matrices of g x g
    return xp.reshape(O, (b, h, n, e))


def attention(q, k, v, *, group, shift="varlen", scale=None):
    """Head-level S2-Attn. q, k, v (b, h, n, d) -> (b, h, n, d); never builds an n x n matrix.

    Heads 0 .. h//2-1 attend in groups of ``group``; heads h//2 .. h-1 (LongLoRA: ``num_heads//2`` onwards, so
    an odd h shifts one more head than it leaves) in groups shifted by group/2,
    with ``shift`` "varlen" (no wrap) or "roll" (LongLoRA's wrap-around, future leak in rows 0..u-1).
    ``scale`` multiplies q (default d^-0.5; the sub-layer passes 1.0 because q is already scaled).
    """
    common.check_qkv(q, k, v)
    xp = B.xp
    b, h, n, d = q.shape
    e = v.shape[-1]
    g, u = _check(n, h, group, shift)
    q = common.scale_q(q, scale)
    half = h // 2

    # Unshifted heads: n/g groups of g, causal
    O_plain = _grouped_causal(q[:, :half], k[:, :half], v[:, :half], g) if half else None  # (b, h//2, n, e)

    qs, ks, vs = q[:, half:], k[:, half:], v[:, half:]  # (b, h/2, n, .)
    if shift == "roll":
        # rolled index r holds token (r + u) mod n; the last rolled group is tokens n-u.., 0..u-1
        rolled = _grouped_causal(xp.roll(qs, -u, axis=2), xp.roll(ks, -u, axis=2), xp.roll(vs, -u, axis=2), g)
        O_shift = xp.roll(rolled, u, axis=2)  # back to token order
    else:
        # the two u-token edge groups [0, u) and [n-u, n), batched as a pair of u x u blocks
        edge = lambda x: xp.stack([x[:, :, :u], x[:, :, n - u :]], axis=2)  # (b, h/2, 2, u, .)
        O_edge = ops.attend(edge(qs), edge(ks), edge(vs), ops.causal_mask(u, u))  # (b, h/2, 2, u, e)
        parts = [O_edge[:, :, 0]]
        if n > g:  # n/g - 1 full groups
            parts.append(_grouped_causal(qs[:, :, u : n - u], ks[:, :, u : n - u], vs[:, :, u : n - u], g))
        parts.append(O_edge[:, :, 1])
        O_shift = xp.concatenate(parts, axis=2)  # (b, h/2, n, e)

    out = O_shift if O_plain is None else xp.concatenate([O_plain, O_shift], axis=1)
    assert out.shape == (b, h, n, e)
    return out


# ----------------------------------------------------------------------------------------------------
# The full sub-layer
# ----------------------------------------------------------------------------------------------------


def pattern_kwargs(cfg, layer):
    """The head-level pattern arguments this layer of a model uses."""
    return dict(group=cfg.group, shift=cfg.shift)


def param_spec(cfg, layer):
    """Parameters of ``layers.i.0.fn``. ``to_kv`` holds [k_proj; v_proj] (separate_kv, the default);
    LLaMA's o_proj has no bias, minicp's ``to_out`` keeps one (zero it to load LLaMA weights)."""
    return common.projection_params(cfg)


def attention_layer(p, x, cfg, layer):
    """S2-Attn sub-layer: normalised stream x (b, n, D) -> attention output (b, n, D)."""
    q, k, v = common.project(p, x, cfg, layer)  # (b, h, n, d) each, q scaled
    o = attention(q, k, v, group=cfg.group, shift=cfg.shift, scale=1.0)  # (b, h, n, d)
    return ops.linear(ops.merge_heads(o), p["to_out"])  # (b, n, D)


def skip(x, cfg, layer):
    """The residual the sub-layer output is added to: the whole stream."""
    return x


def unused_params(cfg, layer):
    """Names under ``layers.i.0.fn`` that this layer's forward pass never reads (their gradient is None in
    PyTorch, and AdamW leaves them alone): the per-head LayerNorm where the config does not apply it."""
    return common.unused_kv_norm(cfg)
