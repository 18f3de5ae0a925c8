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
# # 02 · Receptive fields: how far back can a token see?
#
# After k layers, which input tokens can influence output row i? Attention is the only operation that mixes
# positions (LayerNorm, the feed-forward and the residual add act row by row; `to_out` mixes the heads of a row),
# plus Compressed's sequence projection. So one layer is a dependency relation, "row i reads the keys its pattern
# lets it see, plus its own residual row", and k layers compose it.
#
# `minicp.receptive_field` derives this from the **declared patterns** alone, as sorted lists of disjoint
# intervals per row, vectorised over rows (n = 4096 with 48 layers takes milliseconds).
# `minicp.analysis.receptive.empirical_receptive_field` measures it on a real model instead: the Jacobian of every output
# row with respect to every embedded input token, in float64. This notebook shows both agree, and shows the
# paper's Figures 1(b-d) and 6 as animations.
#
# Every section ends with an exercise: a function you write from the closed forms, and a check cell that holds
# it against `receptive_field` (or against a measurement). Until you write it, the check cell runs the solution
# from [solutions/](solutions) instead.

# %%
# %matplotlib inline
import time

import matplotlib
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, display

from minicp import ModelConfig, init_params, viz
from minicp.analysis.receptive import (
    empirical_receptive_field,
    influence,
    receptive_field,
    receptive_field_by_layer,
)
from minicp.course import machine, yours_or_solution

# %% [markdown]
# ## The API
#
# ECP with n = 64 and half segment m = 8 (paper segment s = 16), after 2 layers. [docs/receptive-fields.md](../docs/receptive-fields.md) gives the closed
# form: row i sees [m·max(0, ⌊i/m⌋ − k), i]. Intervals are closed, as in [the receptive-field notes](../docs/receptive-fields.md).

# %%
rf = receptive_field("ecp", seq_len=64, half_segment=8, layers=2)
for row in (5, 12, 37, 63):
    print(rf.describe(row))
i, m, k = np.arange(64), 8, 2
print(
    "matches m·max(0, i//m - k) .. i for every row:",
    np.array_equal(rf.lo, m * np.maximum(0, i // m - k)) and np.array_equal(rf.hi, i),
)

# %% [markdown]
# **Exercise.** Write `my_field(i, k, m)`: the first and the last input token that ECP's row i sees after k
# layers (half segment m), as a pair `(lo, hi)`, from the closed form. The check cell asks `receptive_field` for
# every row of three configurations.


# %%
def my_field(i, k, m):
    return None  # your code here: (lo, hi)


# %%
# check cell
fn, who = yours_or_solution(my_field, "field", 12, 2, 8)
for n_, m_, k_ in [(64, 8, 2), (32, 4, 1), (48, 16, 3)]:
    rf_ = receptive_field("ecp", seq_len=n_, half_segment=m_, layers=k_)
    bad = [row for row in range(n_) if tuple(fn(row, k_, m_)) != (rf_.lo[row], rf_.hi[row])]
    assert not bad, (
        f"n = {n_}, m = {m_}, k = {k_}: row {bad[0]} gives {tuple(fn(bad[0], k_, m_))}, {rf_.describe(bad[0])}"
    )
print(f"{who}: equals receptive_field for every row of 3 configurations")

# %% [markdown]
# ## Figure 1(b-d): ECP's sparse pattern, then the growing receptive field
#
# Frame 1 is the layer-1 pattern (ATTN + PAR blocks): a token sees its own half segment up to itself and the
# previous half segment. Each further layer adds one half segment, coloured by the layer that brought it in.
# After N_s − 1 = 7 layers every token sees its whole prefix, which is what "implicitly full attention" means.

# %%
anim = viz.ecp_receptive_animation(n=64, half_segment=8)
HTML(anim.to_jshtml())

# %% [markdown]
# ## Figure 6: half segments across layers
#
# The output half segment 5 of layer 5 (red) and, going down, the half segments of each lower layer it draws on
# (yellow): the PAR block of half segment t reads t − 1 and t one layer below, so d layers down the context is
# half segments 5 − d .. 5. The paper's example ("in layer 2 ... but not ...; layer 3 will have the information
# from all previous segments") is the same picture with fewer half segments.

# %%
anim = viz.ecp_half_segments_animation(num_half_segments=6, layers=5)
HTML(anim.to_jshtml())

# %% [markdown]
# **Exercise.** How many layers does ECP's last token (i = n − 1) need before it sees token 0? Write
# `my_layers_to_full(n, m)` from the closed form; the check cell asks `receptive_field` for four sizes, one of
# them Table 8's (n = 4096, m = 128).


# %%
def my_layers_to_full(n, m):
    return None  # your code here: a number of layers


# %%
# check cell
fn, who = yours_or_solution(my_layers_to_full, "layers_to_full", 64, 8)
for n_, m_ in [(64, 8), (20, 4), (48, 16), (4096, 128)]:
    measured = next(
        k for k in range(1, n_ + 1) if receptive_field("ecp", seq_len=n_, half_segment=m_, layers=k).lo[-1] == 0
    )
    assert fn(n_, m_) == measured, (
        f"n = {n_}, m = {m_}: {fn(n_, m_)} layers, but the last token first sees token 0 after {measured}"
    )
print(f"{who}: n = 64, m = 8 needs {fn(64, 8)} layers; n = 4096, m = 128 needs {fn(4096, 128)}; receptive_field agrees")

# %% [markdown]
# ## Explore it yourself
#
# Sliders for the number of layers and the half segment m, and a menu for the architecture (LongLoRA uses the
# group g = 2m, which gives it ECP's cost; Double and s-Split use L = n/2 and s-Split c = m; each title names the
# sizes in play). Each cell is coloured by the layer at which that input token first reaches that output row. With ipywidgets installed
# (`pip install 'minicp[notebooks]'`) and a live kernel the picture follows the sliders; otherwise, and on GitHub,
# you see the static grid below it (ECP, m = 4, after 1 to 4 layers).

# %%
N_EXPLORE = 32
LAYER_COLOURS = ["#ffffff", "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000", "#f0e442"]


def explore_config(arch, layers, half_segment, n=N_EXPLORE):
    sizes = {
        "ecp": dict(arch="ecp", half_segment=half_segment),
        "longlora varlen": dict(arch="longlora", group=2 * half_segment),
        "longlora roll": dict(arch="longlora", group=2 * half_segment, shift="roll"),
        "transformer": dict(arch="transformer"),
        "double": dict(arch="double", latent=n // 2),
        "s_split": dict(arch="s_split", latent=n // 2, split=half_segment),
    }[arch]
    return ModelConfig(vocab=8, dim=8, heads=2, layers=layers, seq_len=n, **sizes)


def first_layer(cfg):
    """(rows, n) int: the layer at which input j first reaches output row i (0 = never)."""
    fields = receptive_field_by_layer(cfg)[1:]  # fields[k - 1] = after k layers
    first = np.zeros(fields[-1].mask().shape, dtype=int)
    for k, f in reversed(list(enumerate(fields, start=1))):
        mask = f.mask()
        first[: mask.shape[0]][mask[: first.shape[0]]] = k
    return first


def sizes_in_title(arch, half_segment, n=N_EXPLORE):
    """The sizes an architecture of the explorer uses, as its title shows them."""
    if arch.startswith("longlora"):
        return f"g = {2 * half_segment}"
    return {
        "ecp": f"m = {half_segment}",
        "double": f"L = {n // 2}",
        "s_split": f"L = {n // 2}, c = {half_segment}",
    }.get(arch, f"n = {n}")


def draw_field(ax, arch, layers, half_segment):
    cfg = explore_config(arch, layers, half_segment)
    first = first_layer(cfg)
    cmap = matplotlib.colors.ListedColormap(LAYER_COLOURS[: layers + 1])
    ax.imshow(first, cmap=cmap, vmin=-0.5, vmax=layers + 0.5, interpolation="nearest")
    last = receptive_field(cfg).describe(cfg.stream_len(layers) - 1)
    ax.set_title(f"{arch}, {sizes_in_title(arch, half_segment)}, {layers} layer(s)", fontsize=11)
    ax.set_xlabel("input token j")
    ax.set_ylabel("output row i")
    return last


def explore(arch="ecp", layers=2, half_segment=4):
    if N_EXPLORE % half_segment:
        print(f"half segment {half_segment} does not divide n = {N_EXPLORE}; pick 2, 4, 8 or 16")
        return
    fig, ax = plt.subplots(figsize=(6.6, 5))
    last = draw_field(ax, arch, layers, half_segment)
    handles = [matplotlib.patches.Patch(color=LAYER_COLOURS[k], label=f"after layer {k}") for k in range(1, layers + 1)]
    # beside the plot, never over it: the roll leak sits in the top right corner
    ax.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    plt.show()
    print(last)


try:
    import ipywidgets as widgets

    whole_label = {"description_width": "initial"}  # the labels are shown whole, never cut
    widgets.interact(
        explore,
        arch=widgets.Dropdown(
            options=["ecp", "longlora varlen", "longlora roll", "transformer", "double", "s_split"],
            description="architecture",
            style=whole_label,
        ),
        layers=widgets.IntSlider(value=2, min=1, max=8, description="layers", style=whole_label),
        half_segment=widgets.Dropdown(
            options=[2, 4, 8, 16], value=4, description="half segment m (g = 2m)", style=whole_label
        ),
    )
except ImportError:
    print("ipywidgets is not installed: the static grid below shows the same pictures")

# %%
# the static fallback: ECP, m = 4, after 1, 2, 3 and 4 layers
fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
for ax, k in zip(axes, (1, 2, 3, 4)):
    draw_field(ax, "ecp", k, 4)
handles = [matplotlib.patches.Patch(color=LAYER_COLOURS[k], label=f"layer {k}") for k in range(1, 5)]
fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=10)
fig.tight_layout(rect=(0, 0.12, 1, 1))
plt.show()

# %% [markdown]
# ## Every architecture
#
# After 1, 2 and 3 layers. PerceiverAR, Double, Compressed and s-Split latents see their whole prefix after one
# layer (their latent rows read every history key); the history rows of Double and s-Split are bidirectional
# (never scored, [docs/official-code.md#bidirectional-history-rows](../docs/official-code.md#bidirectional-history-rows)) and an s-Split history row never leaves its segment. ECP and S2 grow by one half segment
# (u = g/2 for S2) per layer, and S2 *roll* lets rows 0 .. k·u − 1 see the end of the sequence: a causality leak.

# %%
display(viz.receptive_fields_figure(n=32, layers=3))

# %% [markdown]
# **Exercise.** s-Split with n tokens, L latents and segments of c = `split` history tokens. Write
# `my_s_split_field(i, n, latent, split)`: the first and last input token row i sees, `(lo, hi)`. Does the answer
# depend on the number of layers? The check cell asks `receptive_field` after 1, 2 and 3 layers.


# %%
def my_s_split_field(i, n, latent, split):
    return None  # your code here: (lo, hi)


# %%
# check cell
fn, who = yours_or_solution(my_s_split_field, "s_split_field", 3, 32, 16, 8)
for n_, latent_, c_ in [(32, 16, 8), (24, 8, 4), (18, 6, 4)]:
    for k_ in (1, 2, 3):
        rf_ = receptive_field("s_split", seq_len=n_, latent=latent_, split=c_, layers=k_)
        bad = [row for row in range(n_) if tuple(fn(row, n_, latent_, c_)) != (rf_.lo[row], rf_.hi[row])]
        assert not bad, (
            f"n = {n_}, L = {latent_}, c = {c_}, k = {k_}: row {bad[0]}: {tuple(fn(bad[0], n_, latent_, c_))}, {rf_.describe(bad[0])}"
        )
print(f"{who}: equals receptive_field for every row of 3 configurations after 1, 2 and 3 layers")

# %% [markdown]
# ## Confirmation by the Jacobian
#
# For a small model of each architecture (random weights, float64) we differentiate every output row of the
# stream after k layers with respect to every embedded input token x = token_emb[tokens]. Masked scores get
# probability exactly 0, so "cannot influence" is an exact zero in the Jacobian, and "can influence" is a non-zero
# entry. The analytic answer must equal the set of non-zero entries, row by row.

# %%
small = dict(vocab=11, dim=8, heads=2, layers=3)
configs = {
    "transformer": ModelConfig(arch="transformer", seq_len=16, **small),
    "perceiver_ar": ModelConfig(arch="perceiver_ar", seq_len=16, latent=6, **small),
    "double": ModelConfig(arch="double", seq_len=16, latent=6, **small),
    "compressed (official residual)": ModelConfig(arch="compressed", seq_len=18, latent=6, compressed=4, **small),
    "compressed (paper residual)": ModelConfig(
        arch="compressed", seq_len=18, latent=6, compressed=4, compressed_residual="paper", **small
    ),
    "s_split": ModelConfig(arch="s_split", seq_len=18, latent=6, split=4, **small),
    "ecp": ModelConfig(arch="ecp", seq_len=20, half_segment=4, **small),
    "ecp (partial last half segment)": ModelConfig(
        arch="ecp", seq_len=18, half_segment=4, partial_segments=True, **small
    ),
    "longlora varlen": ModelConfig(arch="longlora", seq_len=16, group=4, **small),
    "longlora roll": ModelConfig(arch="longlora", seq_len=16, group=4, shift="roll", **small),
}
start = time.perf_counter()
print(f"{'configuration':<34}{'k':>2}  {'rows':>4}  analytic == Jacobian")
for name, cfg in configs.items():
    params = init_params(cfg, seed=0, dtype="float64")
    for k in (1, 2, 3):
        same = receptive_field(cfg, layers=k) == empirical_receptive_field(params, cfg, layers=k)
        print(f"{name:<34}{k:>2}  {cfg.stream_len(k):>4}  {same}")
jacobian_seconds = time.perf_counter() - start

# %% tags=["varies"]
print(f"The {3 * len(configs)} Jacobians took {jacobian_seconds:.1f} s on this machine ({machine()}).")

# %% [markdown]
# What the Jacobian looks like: |∂ out[i] / ∂ x[j]| for ECP (n = 20, m = 4) after 2 layers, on a log scale,
# next to the analytic field. White means exactly zero.

# %%
cfg = configs["ecp"]
params = init_params(cfg, seed=0, dtype="float64")
mag = influence(params, cfg, layers=2)
analytic = receptive_field(cfg, layers=2).mask()
fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.4))
shown = np.where(mag > 0, np.log10(np.where(mag > 0, mag, 1)), np.nan)
im = a.imshow(shown, cmap="viridis")
fig.colorbar(im, ax=a, label="log10 max |dJ|")
a.set(title="Jacobian of the model (2 layers)", xlabel="input token j", ylabel="output token i")
b.imshow(analytic, cmap="Blues")
b.set(title="receptive_field(cfg, layers=2)", xlabel="input token j", ylabel="output token i")
for ax in (a, b):
    ax.set_xticks(range(0, cfg.seq_len, 4))
    ax.set_yticks(range(0, cfg.seq_len, 4))
plt.tight_layout()
plt.show()
print("non-zero pattern identical:", np.array_equal(mag > 0, analytic))

# %% [markdown]
# **Exercise.** Measure one ECP attention layer's receptive field yourself, the way the Jacobian does it but
# with nothing more than `minicp.attention`: take random rows x of shape (1, 1, n, 8), compute
# `minicp.attention("ecp", x, x, x, half_segment=m)`, then for each input row j change x[..., j, :] and note which
# output rows change at all (masked scores get probability exactly 0, so an unseen row changes nothing, not even
# a rounding bit). Write `my_perturbation_field(n, m)` returning the (n, n) bool array; the check cell holds it
# against `receptive_field(..., layers=1).mask()`.


# %%
def my_perturbation_field(n, m):
    return None  # your code here: an (n, n) bool array, True where changing row j changes output row i


# %%
# check cell
fn, who = yours_or_solution(my_perturbation_field, "perturbation_field", 4, 2)
for n_, m_ in [(16, 4), (12, 3), (20, 5)]:
    mine, ref = np.asarray(fn(n_, m_)), receptive_field("ecp", seq_len=n_, half_segment=m_, layers=1).mask()
    assert mine.shape == ref.shape, f"n = {n_}: expected an array of shape {ref.shape}"
    assert np.array_equal(mine, ref), f"n = {n_}, m = {m_}: rows {np.nonzero((mine != ref).any(1))[0].tolist()} differ"
print(f"{who}: the measured field equals receptive_field(..., layers=1) for 3 sizes")

# %% [markdown]
# ## The S2 roll leak, measured
#
# With `shift="roll"` the wrap-around group lets the first u = g/2 tokens attend to the last u tokens in the
# first layer, and every further layer pushes the leak one group further: after k layers rows 0 .. k·u − 1 see
# future tokens ([docs/receptive-fields.md](../docs/receptive-fields.md)). The Jacobian of the model shows the same rows.

# %%
cfg = configs["longlora roll"]
params = init_params(cfg, seed=0, dtype="float64")
u = cfg.group // 2
for k in (1, 2, 3):
    analytic = receptive_field(cfg, layers=k).sees_future()
    measured = empirical_receptive_field(params, cfg, layers=k).sees_future()
    print(
        f"k={k}: rows that see the future {np.nonzero(analytic)[0].tolist()} (k·u = {k * u}); "
        f"Jacobian agrees: {np.array_equal(analytic, measured)}"
    )

# %% [markdown]
# **Exercise.** Write `my_leaky_rows(n, g, k)`: the rows of LongLoRA S2 with `shift="roll"` (group g) that see a
# future token after k layers, as a sorted list. Careful with deep models: which row can never see the future?
# The check cell asks `receptive_field(...).sees_future()`, up to 20 layers.


# %%
def my_leaky_rows(n, g, k):
    return None  # your code here: a list of rows


# %%
# check cell
fn, who = yours_or_solution(my_leaky_rows, "leaky_rows", 16, 4, 1)
for n_, g_ in [(16, 4), (32, 8), (24, 12)]:
    for k_ in (1, 2, 3, 8, 20):
        ref = np.nonzero(receptive_field("longlora", seq_len=n_, group=g_, shift="roll", layers=k_).sees_future())[0]
        assert list(fn(n_, g_, k_)) == ref.tolist(), (
            f"n = {n_}, g = {g_}, k = {k_}: {list(fn(n_, g_, k_))}, expected {ref.tolist()}"
        )
print(f"{who}: equals receptive_field(...).sees_future() for 3 sizes and 1 to 20 layers")

# %% [markdown]
# ## At Table 8's size
#
# n = 4096, 48 layers, every architecture (Table 8's presets; LongLoRA with both shifts). The interval arithmetic
# never builds an n x n matrix. With s = 256 (m = 128), ECP's last token needs 31 layers to see the whole sequence.

# %%
took = {}
for arch in ("transformer", "perceiver_ar", "double", "compressed", "s_split", "ecp", "longlora"):
    cfgs = [ModelConfig.preset(f"table8-{arch}")]
    if arch == "longlora":
        cfgs.append(cfgs[0].replace(shift="roll"))
    for cfg in cfgs:
        start = time.perf_counter()
        fields = receptive_field_by_layer(cfg)
        name = arch + (f" ({cfg.shift})" if arch == "longlora" else "")
        took[name] = time.perf_counter() - start
        full = next((k for k, f in enumerate(fields) if k and f.sees_all_past()[-1]), None)
        print(f"{name:<18} the last token sees everything after {full} layer(s)")

# %% tags=["varies"]
print(
    f"All 48 layers of each took {1000 * min(took.values()):.1f} to {1000 * max(took.values()):.1f} ms "
    f"({1000 * sum(took.values()):.0f} ms for the {len(took)} configurations) on this machine ({machine()})."
)

# %% [markdown]
# **Exercise.** LongLoRA S2 varlen with group g: how many layers does the last token need before it sees token 0?
# Hint: after one layer its group starts g tokens back; every further layer reaches u = g/2 further (the shifted
# heads' groups straddle the border). Write `my_s2_layers_to_full(n, g)`; the check cell asks
# `receptive_field_by_layer` for four sizes, Table 8's among them. Compare with ECP's answer at m = g/2.


# %%
def my_s2_layers_to_full(n, g):
    return None  # your code here: a number of layers


# %%
# check cell
fn, who = yours_or_solution(my_s2_layers_to_full, "s2_layers_to_full", 32, 8)
for n_, g_ in [(32, 8), (64, 16), (24, 8), (4096, 256)]:
    cfg = ModelConfig(arch="longlora", vocab=8, dim=8, heads=2, layers=2 * n_ // g_, seq_len=n_, group=g_)
    measured = next(k for k, f in enumerate(receptive_field_by_layer(cfg)) if k and f.sees_all_past()[-1])
    assert fn(n_, g_) == measured, (
        f"n = {n_}, g = {g_}: {fn(n_, g_)} layers, but the last token first sees token 0 after {measured}"
    )
print(f"{who}: n = 4096, g = 256 needs {fn(4096, 256)} layers, as ECP with m = 128; receptive_field_by_layer agrees")
