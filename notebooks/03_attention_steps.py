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
# # 03 · Attention steps: Tables 7 and 8, scaling, and where the paper's numbers differ
#
# The paper counts cost in **attention steps**: "each attention step indicates calculation of one attention entry".
# minicp counts two things, exactly, in closed form (`minicp.analysis.steps`):
#
# * **computed**: every entry of every score matrix the code materialises, masked ones included;
# * **unmasked**: only the entries that survive the mask.
#
# Table 7 of the paper lost its formulas in extraction; the ones below are the official code's. Table 8 applies
# them at n = 4096, l = 48, h = 24, s = 256, p = 256. Three of its six rows are reproduced exactly; this notebook
# shows which three, and what the other three must have computed instead.

# %%
# %matplotlib inline
import math

import numpy as np
from IPython.display import display

from minicp import ModelConfig, init_params, viz
from minicp.analysis.steps import count_attention_steps, evaluate_formula, format_table7, format_table8, table7, table8
from minicp.nn import ops
from minicp.nn.model import forward

# %% [markdown]
# ## Table 7: the formulas
#
# Per whole model (all heads and layers). n sequence length, l layers, h heads, L latent, H = n − L history,
# p compressed length, c s-Split segment, m = s/2 ECP half segment, g LongLoRA group, u = g/2.

# %%
print(format_table7())

# %% [markdown]
# The formulas are not just typed in: evaluate each at a configuration and compare with `count_attention_steps`.

# %%
sizes = dict(n=1024, l=8, h=8, L=512, H=512, p=128, c=256, m=64, g=128, u=64)
kw = {
    "transformer": {},
    "perceiver_ar": dict(latent=512),
    "double": dict(latent=512),
    "compressed": dict(latent=512, compressed=128),
    "s_split": dict(latent=512, split=256),
    "ecp": dict(half_segment=64),
    "longlora roll": dict(group=128, shift="roll"),
    "longlora varlen": dict(group=128, shift="varlen"),
}
for arch, computed, unmasked in table7():
    base = arch.split()[0]
    counts = [
        count_attention_steps(base, seq_len=1024, layers=8, heads=8, count=c, **kw[arch])
        for c in ("computed", "unmasked")
    ]
    same = [evaluate_formula(f, **sizes) == v for f, v in zip((computed, unmasked), counts)]
    print(f"{arch:<16} computed {counts[0]:>12,} {same[0]}   unmasked {counts[1]:>12,} {same[1]}")

# %% [markdown]
# ## The counts are what the code really builds
#
# Run a forward pass of a small model of every architecture and record the shape of every score matrix
# `ops.attend` materialises (`ops.record_scores`). Their total size, per sequence, is the "computed" count.

# %%
small = dict(vocab=11, dim=8, heads=2, layers=3)
configs = [
    ModelConfig(arch="transformer", seq_len=32, **small),
    ModelConfig(arch="perceiver_ar", seq_len=32, latent=12, **small),
    ModelConfig(arch="double", seq_len=32, latent=12, **small),
    ModelConfig(arch="compressed", seq_len=32, latent=12, compressed=5, **small),
    ModelConfig(arch="s_split", seq_len=32, latent=12, split=5, **small),
    ModelConfig(arch="ecp", seq_len=32, half_segment=4, **small),
    ModelConfig(arch="longlora", seq_len=32, group=8, **small),
    ModelConfig(arch="longlora", seq_len=32, group=8, shift="roll", **small),
]
tokens = np.random.default_rng(0).integers(0, 11, (1, 32))
for cfg in configs:
    with ops.record_scores() as shapes:
        forward(init_params(cfg), tokens, cfg)
    built = sum(math.prod(s) for s in shapes)
    name = cfg.arch + (f" {cfg.shift}" if cfg.arch == "longlora" else "")
    print(f"{name:<16} built {built:>6}   closed form {count_attention_steps(cfg):>6}")

# %% [markdown]
# ## Table 8, reconciled

# %%
print(format_table8())

# %%
display(viz.table8_figure())

# %% [markdown]
# ## Scaling with the sequence length
#
# Table 8's l, h, s and p, with L = n/2 for the PerceiverAR family. Full attention and the Perceiver family grow
# as n² (PerceiverAR's and Double's share of full attention is constant: 25% and 75% at L = n/2); Compressed and
# s-Split approach PerceiverAR's and half of full respectively; ECP and S2 are linear in n, so their share keeps
# falling. ECP with s = 256 and S2 varlen with g = 256 are the same curve.

# %%
display(viz.steps_scaling_figure())

# %% [markdown]
# ## Where and why the paper's numbers differ
#
# * **PerceiverAR, Double, Transformer: exact.** The paper truncates to millions and percent (4932.50M → 4932M,
#   25.52% → 25%). The Transformer row counts the whole n x n matrix (computed), not the causal half.
# * **Compressed Double Attention: 9682M printed, 5698M in the code (−41%).** The printed number is reproduced
#   exactly by l·h·(L·n + (p/2)²), i.e. the latent attention over all n keys in *every* layer plus a p x p history
#   attention with **p = 128** (Configuration A's compression size), not the code's structure (full H x H and L x n
#   in layer 0 only, then L·(p+L) + p²).
# * **s-Split: 14858M printed, 10268M in the code (−31%).** No natural formula gives it: a count *above* Double
#   Attention needs the H² term kept, which s-Split exists to remove. The printed 77% also disagrees with
#   14858/19327 = 76.88% under the table's own truncation rule. Best treated as an error in the paper.
# * **ECP: 2452M printed, 1189M in the code (−51.5%).** The code's PAR block is m x 2m with m = s/2 = 128 (the
#   paper's own "s/2 x s" blocks). Reading m = s = 256 gives 2340M (−4.6%); l·h·(2ns + s²/2) gives 2453.7M (+0.07%); the only
#   exact fit is contrived. The printed 12% is roughly *twice* what the paper's own block sizes cost.

# %%
for row in table8():
    if row["verdict"] != "not reproduced":
        continue
    print(f"{row['label']}: paper {row['paper_millions']:,}M, code {row['computed'] / 1e6:,.1f}M")
    for alt in row["alternatives"]:
        diff = 100 * (alt["value"] / (row["paper_millions"] * 1e6) - 1)
        print(f"    {alt['name']:<30} {alt['formula']:<44} {alt['value'] / 1e6:>9,.1f}M  ({diff:+.2f}% vs paper)")

# %% [markdown]
# ## ECP versus LongLoRA
#
# The paper says ECP is "slightly more efficient" than LongLoRA. In computed entries ECP with half segment m is
# **exactly** S2-Attn varlen with g = 2m, and S2 roll costs m² more per head and layer; in unmasked entries ECP's
# m x 2m blocks keep about 1.5·n·m entries per head against S2's n·m. So the claim holds only against the roll
# implementation's computed count ([docs/official-code.md#ecp-versus-longlora-cost](../docs/official-code.md#ecp-versus-longlora-cost)); their receptive fields are identical (notebook 02).

# %%
n, l, h, m = 4096, 48, 24, 128
for count in ("computed", "unmasked"):
    ecp = count_attention_steps("ecp", seq_len=n, layers=l, heads=h, half_segment=m, count=count)
    varlen = count_attention_steps("longlora", seq_len=n, layers=l, heads=h, group=2 * m, count=count)
    roll = count_attention_steps("longlora", seq_len=n, layers=l, heads=h, group=2 * m, shift="roll", count=count)
    print(
        f"{count:<9} ECP m={m}: {ecp:>13,}   S2 varlen g={2 * m}: {varlen:>13,}   S2 roll: {roll:>13,}"
        f"   ECP/roll = {ecp / roll:.3f}"
    )
