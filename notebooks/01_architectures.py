# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The architectures and their attention patterns
#
# The ECP paper (arXiv 2412.06106) starts from PerceiverAR and explores four ways of keeping more of the
# context alive: Double Attention, Compressed Double Attention, s-Split Double Attention and, finally, ECP.
# LongLoRA's S2-Attn is its comparison point, and the full causal Transformer is the yardstick.
#
# In minicp every architecture **declares** its attention pattern as data: a list of blocks, each one a score
# matrix the explicit implementation really builds (its query rows, its key columns, and the mask inside it).
# Every picture below is drawn from that declaration, and the same declaration gives the dense reference mask,
# the exact attention-step counts (notebook 03) and the receptive fields (notebook 02).
#
# Colours used throughout: **blue** = a score entry that survives the mask, **grey** = computed but masked,
# **white** = never computed. Outlines are the score matrices. For LongLoRA, blue = unshifted heads,
# orange = shifted heads, purple = both, red = a future token (a leak).

# %%
# %matplotlib inline
import numpy as np
from IPython.display import display

import minicp
from minicp import viz
from minicp.nn.attention import module
from minicp.nn.reference import dense_attention

# %% [markdown]
# ## All of them at once
#
# One layer each, n = 32 tokens. PerceiverAR and Compressed change shape after layer 0, so they get a
# second panel for their later layers.

# %%
display(viz.patterns_figure(n=32, latent=12, compressed=6, split=5, half_segment=4, group=8))

# %% [markdown]
# ## What a declaration looks like
#
# ECP with n = 16 and half segment m = 4: one causal 4 x 4 block ("ATTN") for the first half segment, then a
# 4 x 8 block ("PAR") for every later half segment over itself and the previous one. `diagonal` is the
# `np.tril` offset of the mask inside the block (`None` = no mask).

# %%
ecp = module("ecp").pattern(16, half_segment=4)
for blk in ecp.blocks:
    print(
        f"{blk.name:<7} rows {blk.rows.min():>2}..{blk.rows.max():<2}  cols {blk.cols.min():>2}..{blk.cols.max():<2}"
        f"  diagonal {blk.diagonal}  computed {blk.computed():>2}  unmasked {blk.unmasked():>2}"
    )
print("per head and layer: computed", ecp.computed(), "= m(2n - m) =", 4 * (2 * 16 - 4), "| unmasked", ecp.unmasked())

# %% [markdown]
# ## Transformer (the yardstick)
#
# Every query sees every earlier key: one n x n score matrix per head, n² entries computed, n(n+1)/2 of them
# unmasked. The official repository has no full-attention model; minicp's `transformer` uses ECP's conventions
# (K = V, RoPE in layer 0 only) with a single output projection ([docs](../docs/official-code.md#full-attention-ecp-conventions)).

# %%
display(viz.pattern_figure("transformer", 24))

# %% [markdown]
# ## PerceiverAR (paper section 3)
#
# Split the input into a **history** of H tokens and the last L tokens, the **latents**. Layer 0 computes only the
# L latent query rows; each one sees every history key and, causally, the latent keys up to itself. From layer 1
# on the stream *is* the L latents and every layer is plain causal attention over them, so the cost stops
# depending on n: L·n in layer 0, L² afterwards. The two drawbacks the paper targets: only the latent positions
# are trained, and the history is absorbed into the latents after the first layer.

# %%
display(viz.pattern_figure("perceiver_ar", 24, latent=8))
display(viz.pattern_figure("perceiver_ar", 24, latent=8, layer=1))

# %% [markdown]
# ## Double Attention (section 4.1)
#
# Keep the history in every layer. Each layer computes two attentions: the latent rows exactly as PerceiverAR's
# layer 0 (all history keys, causal latent keys), and the history rows over the history keys **without a mask**
# (history tokens are never scored, so seeing each other both ways leaks nothing). Every layer is identical and
# costs L·n + H² entries per head: the history now costs H² in every layer.

# %%
display(viz.pattern_figure("double", 24, latent=8))

# %% [markdown]
# ## Compressed Double Attention (section 4.2)
#
# Pay the H² only once. Layer 0 is Double Attention; then a learned linear map **along the sequence axis**
# (`projection_hist`, Linear(H, p)) turns the H history output rows into p slots, each a weighted sum of all of
# them. Later layers run Double Attention on p slots + L latents: L·(p + L) + p² per head.
# Two code facts ([docs/official-code.md#compressed-first-layer-residual](../docs/official-code.md#compressed-first-layer-residual), [docs/official-code.md#compressed-attend-then-compress](../docs/official-code.md#compressed-attend-then-compress)): the official code attends first and compresses the attention *output*, and its
# layer-0 residual adds token p + t to latent row t (`compressed_residual="official"`, minicp's default;
# `"paper"` gives each latent its own token).

# %%
display(viz.pattern_figure("compressed", 24, latent=8, compressed=4))
display(viz.pattern_figure("compressed", 24, latent=8, compressed=4, layer=1))

# %% [markdown]
# ## s-Split Double Attention (section 4.3)
#
# Make the history cheap instead: cut it into segments of c tokens and let each history query see only its own
# segment (no mask inside). The latent rows are Double Attention's. Cost L·n + H·c per head and layer. The price:
# a history token never sees outside its own segment, in any layer; only the latents mix segments.

# %%
display(viz.pattern_figure("s_split", 24, latent=8, split=4))

# %% [markdown]
# ## ECP: Efficient Context propagating Perceiver (section 5)
#
# Cut the sequence into **half segments** of m tokens (the paper's segment is s = 2m; the official code calls m its
# segment). Half segment 0 runs causal attention on itself (ATTN); every later half segment runs PerceiverAR on
# the *pair* (previous, current): its m queries see all m keys of the previous half segment and, causally, its
# own (PAR, an m x 2m block). Every position is trained, and the cost is m(2n − m) per head and layer: linear in n.
# One layer reaches one half segment back, but the previous half segment already reached one further back in the
# layer below, so after k layers a token sees k half segments back (notebook 02).

# %%
display(viz.pattern_figure("ecp", 24, half_segment=4))

# %% [markdown]
# ## LongLoRA S2-Attn (the comparison point)
#
# Groups of g tokens attend causally inside themselves; half of the heads use groups shifted by g/2, so every
# shifted group straddles a border and `to_out` mixes the heads. LongLoRA's code has two versions of the shift:
# `varlen` (variable-length groups, no wrap; minicp's default) and `roll` (roll the sequence, group, roll back),
# whose last group wraps around: **tokens 0..g/2−1 attend to the last g/2 tokens of the sequence**, the future
# (red). ECP with half segment m has exactly the cost and the receptive field of S2 varlen with g = 2m.

# %%
display(viz.pattern_figure("longlora", 24, group=8, shift="varlen"))
display(viz.pattern_figure("longlora", 24, group=8, shift="roll"))

# %% [markdown]
# ## The pictures are the computation
#
# The explicit blockwise implementations never build an n x n matrix. Here each one is checked against the
# dumbest correct thing: dense softmax attention with the mask taken from the declared pattern
# (`minicp.attention_mask`), in float64, for random q, k, v.

# %%
rng = np.random.default_rng(0)
n, heads, d = 24, 2, 8
sizes = {
    "transformer": {},
    "perceiver_ar": dict(latent=8),
    "double": dict(latent=8),
    "compressed": dict(latent=8, compressed=4),
    "s_split": dict(latent=8, split=4),
    "ecp": dict(half_segment=4),
    "longlora": dict(group=8, shift="roll"),
}
q, k, v = (rng.standard_normal((1, heads, n, d)) for _ in range(3))
for arch, kw in sizes.items():
    fast = minicp.attention(arch, q, k, v, **kw)
    mask = minicp.attention_mask(arch, n, heads=heads, **kw)
    dense = dense_attention(q, k, v, mask)
    print(f"{arch:<13} output {str(fast.shape):<16} max |blockwise - dense| = {np.abs(fast - dense).max():.1e}")
