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
#
# Each architecture section below has the same five parts, in this order: **the code** that computes it (the
# head-level `attention` function of its file in `minicp/nn/attention/`, printed with `inspect.getsource`),
# **the equation**, **the picture** of its pattern, **cost and context** in plain words, with the exact count of
# score entries at n = 24 from `minicp.count_attention_steps`, and **an exercise**: build the architecture's
# mask from its equation, or count its score entries by hand. Each exercise has a check cell that holds your
# answer against minicp; until you write one, the check cell runs the solution from
# [solutions/](solutions) instead (try first, then compare).
#
# **What runs.** The printed code is the readable reference file, and `minicp.attention(arch, q, k, v, ...)`
# calls exactly that function: this notebook runs what it shows. Whole models (`minicp.forward`, `loss`,
# `value_and_grad`) run the same files by default, the *reference engine*; the long loops (`train`,
# `perplexity`, `generate`) default to the *fast engine* in `minicp/fast/`, which computes the same functions
# in another order of summation and is tested against this code. One switch chooses between them:
# [docs/engines.md](../docs/engines.md).

# %%
# %matplotlib inline
import inspect
from pathlib import Path

import numpy as np
from IPython.display import Code, Markdown, display

import minicp
from minicp import count_attention_steps, viz
from minicp.course import yours_or_solution
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
# Two helpers for the sections: `show_code(arch)` prints the head-level attention function of that
# architecture's file, with the file and its line numbers; `cost(arch, **sizes)` counts the score entries one head computes at n = 24
# (`count="computed"`: every entry of every score matrix the code builds, masked ones included), in layer 0 and
# in the later layers (they differ for PerceiverAR and Compressed), averaged over the heads.

# %%
N = 24


def show_code(arch):
    fn = module(arch).attention
    lines, first = inspect.getsourcelines(fn)
    where = Path(inspect.getsourcefile(fn)).relative_to(Path(minicp.__file__).parent.parent)
    display(Markdown(f"`{where.as_posix()}`, lines {first}-{first + len(lines) - 1}:"))
    display(Code("".join(lines), language="python"))


def cost(arch, **sizes):
    """Score entries per head in layer 0 and in a later layer (mean over heads: LongLoRA's two head kinds differ)."""
    heads = 2
    first, later = count_attention_steps(arch, seq_len=N, layers=2, heads=heads, per_layer=True, **sizes)
    first, later = first // heads, later // heads
    full = N * N
    where = "in layer 0" if later != first else "in every layer"
    text = f"At n = {N}: **{first:,}** score entries computed per head {where} ({first / full:.0%} of full attention's n² = {full})"
    if later != first:
        text += f", **{later:,}** in every later layer ({later / full:.0%})"
    return Markdown(text + ".")


# %% [markdown]
# ## Transformer (the yardstick)
#
# **The code.** One n x n score matrix per head, masked to the causal triangle.

# %%
show_code("transformer")

# %% [markdown]
# **The equation.** $\mathrm{out}_i = \sum_{j \le i} \mathrm{softmax}_j\!\left(q_i \cdot k_j / \sqrt{d}\right) v_j$
# for every position i.
#
# **The picture.**

# %%
display(viz.pattern_figure("transformer", N))

# %% [markdown]
# **Cost and context.** Every query scores every key, so the cost is n² per head and layer (n(n+1)/2 of them
# unmasked): double the sequence, four times the work. In exchange every token sees its whole prefix after a
# single layer. The official repository has no full-attention model; minicp's `transformer` uses ECP's conventions
# (K = V, RoPE in layer 0 only) with a single output projection ([docs](../docs/official-code.md#full-attention-ecp-conventions)).

# %%
cost("transformer")

# %% [markdown]
# **Exercise (Transformer).** Write `my_causal_mask(n)`: an (n, n) boolean array, True where query i may attend
# to key j, from the equation above and nothing but NumPy (`np.arange` and broadcasting are enough). The check
# cell compares it with `minicp.attention_mask("transformer", n)`, the mask derived from the declared pattern.


# %%
def my_causal_mask(n):
    return None  # your code here: an (n, n) bool array


# %%
# check cell
fn, who = yours_or_solution(my_causal_mask, "causal_mask", 4)
for n_ in (1, 5, 24):
    mine, ref = np.asarray(fn(n_)), minicp.attention_mask("transformer", n_)
    assert mine.shape == ref.shape and mine.dtype == bool, f"n = {n_}: expected a bool array of shape {ref.shape}"
    assert np.array_equal(mine, ref), f"n = {n_}: rows {np.nonzero((mine != ref).any(1))[0].tolist()} differ"
print(f"{who}: equals minicp.attention_mask('transformer', n) for n = 1, 5, 24")

# %% [markdown]
# ## PerceiverAR (paper section 3)
#
# **The code.** Layer 0 computes only the L latent query rows; later layers run causal attention on the latents.

# %%
show_code("perceiver_ar")

# %% [markdown]
# **The equation.** Split the n tokens into a **history** of H tokens and the last L, the **latents**. Layer 0:
# $\mathrm{out}_t = \sum_{j \le H + t} \mathrm{softmax}_j(q_{H+t} \cdot k_j / \sqrt d)\, v_j$ for the latent rows
# t = 0 .. L − 1 only; from layer 1 on the stream *is* the L latents and each layer is causal attention over them.
#
# **The picture** (layer 0, then layer 1).

# %%
display(viz.pattern_figure("perceiver_ar", N, latent=8))
display(viz.pattern_figure("perceiver_ar", N, latent=8, layer=1))

# %% [markdown]
# **Cost and context.** L·n in layer 0, L² afterwards: the cost stops depending on n after the first layer. Every
# latent sees its whole prefix after one layer. The two drawbacks the paper targets: only the L latent positions
# are trained, and the history is absorbed into the latents after the first layer.

# %%
cost("perceiver_ar", latent=8)

# %% [markdown]
# **Exercise (PerceiverAR).** Count by hand: how many score entries does one head compute in layer 0, and how
# many in each later layer, for n tokens and L latents (masked entries included: every entry of the matrices the
# code builds)? Write `my_perceiver_cost(n, latent)` returning the pair; the check cell asks
# `count_attention_steps(..., per_layer=True)` for several sizes.


# %%
def my_perceiver_cost(n, latent):
    return None  # your code here: (entries in layer 0, entries in every later layer)


# %%
# check cell
fn, who = yours_or_solution(my_perceiver_cost, "perceiver_cost", 24, 8)
for n_, latent_ in [(24, 8), (16, 4), (10, 10), (4096, 2048)]:
    ref = count_attention_steps("perceiver_ar", seq_len=n_, latent=latent_, layers=2, per_layer=True)
    assert tuple(fn(n_, latent_)) == tuple(ref), (
        f"n = {n_}, L = {latent_}: {tuple(fn(n_, latent_))}, expected {tuple(ref)}"
    )
print(
    f"{who}: equals count_attention_steps for 4 sizes (n = 4096, L = 2048: {fn(4096, 2048)[0]:,} then {fn(4096, 2048)[1]:,})"
)

# %% [markdown]
# ## Double Attention (section 4.1)
#
# **The code.** Two attentions per layer: the latent rows as PerceiverAR's layer 0, the history rows over the
# history keys without a mask.

# %%
show_code("double")

# %% [markdown]
# **The equation.** Latent rows as above; history rows $i < H$:
# $\mathrm{out}_i = \sum_{j < H} \mathrm{softmax}_j(q_i \cdot k_j / \sqrt d)\, v_j$ (no mask: history tokens are never
# scored, so seeing each other both ways leaks nothing).
#
# **The picture.**

# %%
display(viz.pattern_figure("double", N, latent=8))

# %% [markdown]
# **Cost and context.** Every layer is identical and costs L·n + H² per head: the history is kept alive in every
# layer, but it now costs H² in every layer, which at L = n/2 is 75% of full attention.

# %%
cost("double", latent=8)

# %% [markdown]
# **Exercise (Double Attention).** Write `my_double_mask(n, latent)`, the (n, n) mask of one layer: history rows
# (i < H = n − L) see every history key, without a mask; latent rows see every key up to themselves. The check
# cell compares it with `minicp.attention_mask("double", n, latent=L)`.


# %%
def my_double_mask(n, latent):
    return None  # your code here: an (n, n) bool array


# %%
# check cell
fn, who = yours_or_solution(my_double_mask, "double_mask", 8, 4)
for n_, latent_ in [(24, 8), (16, 4), (10, 3), (6, 6)]:
    mine, ref = np.asarray(fn(n_, latent_)), minicp.attention_mask("double", n_, latent=latent_)
    assert mine.shape == ref.shape and mine.dtype == bool, f"n = {n_}: expected a bool array of shape {ref.shape}"
    assert np.array_equal(mine, ref), (
        f"n = {n_}, L = {latent_}: rows {np.nonzero((mine != ref).any(1))[0].tolist()} differ"
    )
print(f"{who}: equals minicp.attention_mask('double', n, latent=L) for 4 sizes")

# %% [markdown]
# ## Compressed Double Attention (section 4.2)
#
# **The code.** Layer 0 is Double Attention; its history output rows are then compressed along the sequence axis.

# %%
show_code("compressed")

# %% [markdown]
# **The equation.** After layer 0, a learned linear map along the sequence axis (`projection_hist`,
# Linear(H, p)) turns the H history rows into p slots, $\mathrm{slot}_r = \sum_{i<H} W_{ri}\, \mathrm{out}_i$;
# later layers run Double Attention on p slots + L latents. Two code facts ([docs/official-code.md#compressed-first-layer-residual](../docs/official-code.md#compressed-first-layer-residual), [docs/official-code.md#compressed-attend-then-compress](../docs/official-code.md#compressed-attend-then-compress)): the official code
# attends first and compresses the attention *output*, and its layer-0 residual adds token p + t to latent row t
# (`compressed_residual="official"`, minicp's default; `"paper"` gives each latent its own token).
#
# **The picture** (layer 0, then layer 1).

# %%
display(viz.pattern_figure("compressed", N, latent=8, compressed=4))
display(viz.pattern_figure("compressed", N, latent=8, compressed=4, layer=1))

# %% [markdown]
# **Cost and context.** The H² is paid once: L·n + H² in layer 0, then L·(p + L) + p² per layer. The history
# reaches later layers only through p learned mixtures of it.

# %%
cost("compressed", latent=8, compressed=4)

# %% [markdown]
# **Exercise (Compressed).** Count by hand the score entries one head computes in layer 0 and in every later
# layer, for n tokens, L latents and p compressed slots. Write `my_compressed_cost(n, latent, compressed)`
# returning the pair; the check cell asks `count_attention_steps(..., per_layer=True)`.


# %%
def my_compressed_cost(n, latent, compressed):
    return None  # your code here: (entries in layer 0, entries in every later layer)


# %%
# check cell
fn, who = yours_or_solution(my_compressed_cost, "compressed_cost", 24, 8, 4)
for n_, latent_, p_ in [(24, 8, 4), (32, 12, 5), (16, 8, 8), (4096, 2048, 256)]:
    ref = count_attention_steps("compressed", seq_len=n_, latent=latent_, compressed=p_, layers=2, per_layer=True)
    got = tuple(fn(n_, latent_, p_))
    assert got == tuple(ref), f"n = {n_}, L = {latent_}, p = {p_}: {got}, expected {tuple(ref)}"
print(f"{who}: equals count_attention_steps for 4 sizes")

# %% [markdown]
# ## s-Split Double Attention (section 4.3)
#
# **The code.** The history is cut into segments of c tokens, each attending only to itself.

# %%
show_code("s_split")

# %% [markdown]
# **The equation.** History row i in segment σ(i) = ⌊i / c⌋:
# $\mathrm{out}_i = \sum_{j:\ \sigma(j) = \sigma(i)} \mathrm{softmax}_j(q_i \cdot k_j / \sqrt d)\, v_j$; latent rows as in
# Double Attention.
#
# **The picture.**

# %%
display(viz.pattern_figure("s_split", N, latent=8, split=4))

# %% [markdown]
# **Cost and context.** L·n + H·c per head and layer: the history costs c per token instead of H. The price: a
# history token never sees outside its own segment, in any layer; only the latents mix segments.

# %%
cost("s_split", latent=8, split=4)

# %% [markdown]
# **Exercise (s-Split).** Write `my_s_split_mask(n, latent, split)`, the (n, n) mask: history row i sees the
# history keys of its own segment of c = `split` tokens (σ(j) = σ(i)), latent rows as in Double Attention. The
# check cell compares it with `minicp.attention_mask("s_split", n, latent=L, split=c)` (c divides H).


# %%
def my_s_split_mask(n, latent, split):
    return None  # your code here: an (n, n) bool array


# %%
# check cell
fn, who = yours_or_solution(my_s_split_mask, "s_split_mask", 8, 4, 2)
for n_, latent_, c_ in [(24, 8, 4), (32, 12, 5), (16, 8, 8), (12, 3, 3)]:
    mine, ref = np.asarray(fn(n_, latent_, c_)), minicp.attention_mask("s_split", n_, latent=latent_, split=c_)
    assert mine.shape == ref.shape and mine.dtype == bool, f"n = {n_}: expected a bool array of shape {ref.shape}"
    bad = np.nonzero((mine != ref).any(1))[0].tolist()
    assert not bad, f"n = {n_}, L = {latent_}, c = {c_}: rows {bad} differ"
print(f"{who}: equals minicp.attention_mask('s_split', n, latent=L, split=c) for 4 sizes")

# %% [markdown]
# ## ECP: Efficient Context propagating Perceiver (section 5)
#
# **The code.** Reshape the sequence into half segments of m tokens; half segment 0 is causal attention on itself
# (ATTN), every later one attends to the pair (previous, current) (PAR, an m x 2m block). No n x n matrix appears.

# %%
show_code("ecp")

# %% [markdown]
# **The equation.** With half segments of m tokens (the paper's segment is s = 2m; the official code calls m its
# segment), row i in half segment t = ⌊i / m⌋ attends to
# $\mathrm{out}_i = \sum_{j = m\max(0,\,t-1)}^{i} \mathrm{softmax}_j(q_i \cdot k_j / \sqrt d)\, v_j$.
#
# **The picture.**

# %%
display(viz.pattern_figure("ecp", N, half_segment=4))

# %% [markdown]
# **Cost and context, in plain words.** Why ECP is cheap: **each query sees at most 2m keys** (its own half
# segment and the previous one), however long the sequence is. So one layer costs about n · 2m score entries per
# head, exactly m(2n − m): the cost grows like **n · m, not n²**. Double n and the work doubles; with full attention
# it would quadruple. Why it still sees far: one layer reaches one half segment back, but the previous half
# segment already reached one further back in the layer below, so after k layers a token sees k half segments back
# (notebook 02), and every position is trained (no history/latent split).

# %%
display(cost("ecp", half_segment=4))
print("m(2n - m) with m = 4:", 4 * (2 * N - 4))

# %% [markdown]
# **Exercise (ECP).** Write `my_ecp_mask(n, m)`: the (n, n) mask of ECP with half segment m (n a multiple of
# m), from the equation above and nothing but NumPy. The check cell compares it with
# `minicp.attention_mask("ecp", n, half_segment=m)` for several sizes.


# %%
def my_ecp_mask(n, m):
    return None  # your code here: an (n, n) bool array


# %%
# check cell
fn, who = yours_or_solution(my_ecp_mask, "ecp_mask", 8, 2)
for n_, m_ in [(8, 2), (12, 4), (16, 4), (24, 8), (10, 5)]:
    mine, ref = np.asarray(fn(n_, m_)), minicp.attention_mask("ecp", n_, half_segment=m_)
    assert mine.shape == ref.shape and mine.dtype == bool, f"n = {n_}, m = {m_}: expected a bool array {ref.shape}"
    assert np.array_equal(mine, ref), f"n = {n_}, m = {m_}: rows {np.nonzero((mine != ref).any(1))[0].tolist()} differ"
print(f"{who}: equals minicp.attention_mask('ecp', n, half_segment=m) for 5 sizes")

# %% [markdown]
# ## LongLoRA S2-Attn (the comparison point)
#
# **The code.** Groups of g tokens attend causally inside themselves; half of the heads use groups shifted by g/2.

# %%
show_code("longlora")

# %% [markdown]
# **The equation.** Unshifted heads: row i attends to $j \in [g\lfloor i/g \rfloor, i]$; shifted heads do the same
# with the groups moved by u = g/2. LongLoRA's code has two versions of the shift: `varlen` (variable-length groups,
# no wrap; minicp's default) and `roll` (roll the sequence, group, roll back), whose last group wraps around:
# **tokens 0..g/2−1 attend to the last g/2 tokens of the sequence**, the future (red).
#
# **The picture** (varlen, then roll).

# %%
display(viz.pattern_figure("longlora", N, group=8, shift="varlen"))
display(viz.pattern_figure("longlora", N, group=8, shift="roll"))

# %% [markdown]
# **Cost and context.** Like ECP, linear in n: about n · g entries per head and layer. Every shifted group
# straddles a border and `to_out` mixes the heads, so the context also grows by g/2 per layer. ECP with half
# segment m has exactly the cost and the receptive field of S2 varlen with g = 2m.

# %%
print("LongLoRA S2 varlen, g = 8:")
display(cost("longlora", group=8))
print("ECP, m = 4:")
display(cost("ecp", half_segment=4))

# %% [markdown]
# **Exercise (LongLoRA).** Write `my_roll_mask(n, g)`, the mask of a **shifted** head with `shift="roll"`: roll
# the sequence by u = g/2 so that token i sits at place (i − u) mod n, cut the places into groups of g, attend
# causally (by place) inside each group, and roll back. The wrap-around group is where the leak comes from. The
# check cell compares it with the shifted head of `minicp.attention_mask("longlora", n, heads=2, group=g,
# shift="roll")` (head 1) and prints the rows that see a future token.


# %%
def my_roll_mask(n, g):
    return None  # your code here: an (n, n) bool array


# %%
# check cell
fn, who = yours_or_solution(my_roll_mask, "roll_mask", 8, 4)
for n_, g_ in [(24, 8), (16, 4), (32, 8), (12, 12)]:
    mine = np.asarray(fn(n_, g_))
    ref = minicp.attention_mask("longlora", n_, heads=2, group=g_, shift="roll")[1]
    assert mine.shape == ref.shape and mine.dtype == bool, f"n = {n_}: expected a bool array of shape {ref.shape}"
    assert np.array_equal(mine, ref), f"n = {n_}, g = {g_}: rows {np.nonzero((mine != ref).any(1))[0].tolist()} differ"
future = np.nonzero(np.triu(fn(N, 8), 1).any(1))[0].tolist()
print(f"{who}: equals the shifted head of attention_mask('longlora', ..., shift='roll') for 4 sizes")
print(f"n = {N}, g = 8: rows that see a future token: {future}")

# %% [markdown]
# ## The pictures are the computation
#
# The explicit blockwise implementations never build an n x n matrix. Here each one is checked against the
# dumbest correct thing: dense softmax attention with the mask taken from the declared pattern
# (`minicp.attention_mask`), in float64, for random q, k, v. They agree to float64 rounding (below 1e-14;
# the exact digits depend on the BLAS, so the bound is printed).

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
    blockwise = minicp.attention(arch, q, k, v, **kw)
    mask = minicp.attention_mask(arch, n, heads=heads, **kw)
    dense = dense_attention(q, k, v, mask)
    err = np.abs(blockwise - dense).max()  # float64 rounding, which depends on the BLAS: stated as a bound
    print(
        f"{arch:<13} output {str(blockwise.shape):<16} max |blockwise - dense| "
        + ("< 1e-14" if err < 1e-14 else f"= {err:.1e}")
    )

# %% [markdown]
# **Exercise (the dumbest correct thing).** Write `my_masked_attention(q, k, v, mask)` yourself: scores
# q·kᵀ/√d, −∞ where the mask is False, softmax over the keys, times v (q, k, v of shape (b, h, n, d), the mask
# (h, n, n)). The check cell holds it against the blockwise code of every architecture, `minicp.attention`, on
# the rows each one computes (PerceiverAR's layer 0 computes only its L latent rows).


# %%
def my_masked_attention(q, k, v, mask):
    return None  # your code here: a (b, h, n, d) array


# %%
# check cell
fn, who = yours_or_solution(
    my_masked_attention, "masked_attention", q, k, v, minicp.attention_mask("ecp", n, heads=heads, half_segment=4)
)
for arch, kw in sizes.items():
    out = minicp.attention(arch, q, k, v, **kw)
    mine = np.asarray(fn(q, k, v, minicp.attention_mask(arch, n, heads=heads, **kw)))[..., n - out.shape[-2] :, :]
    assert mine.shape == out.shape, f"{arch}: shape {mine.shape}, expected {out.shape} on the computed rows"
    assert np.allclose(mine, out, rtol=1e-10, atol=1e-12), f"{arch}: largest difference {np.abs(mine - out).max():.1e}"
print(f"{who}: equals minicp.attention for all {len(sizes)} architectures (float64, to 1e-10)")
