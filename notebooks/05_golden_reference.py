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
# # 05 · Golden reference: checking your own kernel
#
# You wrote ECP (or any architecture here) in Triton, CUDA, FlexAttention or JAX. How do you know it is right?
# minicp gives you three things:
#
# 1. **The pattern, in kernel form** (`minicp.analysis.kernel_pattern`): the dense mask, the block list, and a vectorised
#    predicate `allowed(q_idx, kv_idx, head)` that ports directly to a FlexAttention `mask_mod`.
# 2. **Golden files** (`minicp golden`, `minicp.golden`): a plain `.npz` with seeded inputs, float64 reference
#    outputs and gradients stored in your dtype, the mask, the block list and a JSON config. Any framework can read it.
# 3. **A comparison helper** (`minicp.testing`): `assert_matches_reference(my_fn, "ecp", ...)` calls your function
#    and, when it is wrong, tells you which tensor, where, and by how much.
#
# Everything below runs on the CPU in a few seconds.

# %%
import json
import pathlib
import tempfile

import matplotlib.pyplot as plt
import numpy as np

import minicp
import minicp.testing as mt
from minicp import golden
from minicp.analysis import kernel_pattern as kp
from minicp.cli import golden as cli_golden

workdir = pathlib.Path(tempfile.mkdtemp())

# %% [markdown]
# ## 1 · The pattern for kernel authors
#
# ECP with paper segment *s* = 16 is the official code's half segment *m* = 8: half segment 0 attends causally to itself,
# every later half segment *t* attends to half segments *t*−1 and *t* (causally in its own). Each block below is one
# score matrix a block-sparse kernel computes; `diagonal` is the shifted-triangle mask inside it
# (local entry (r, c) visible iff c ≤ r + diagonal; `None` = all visible).

# %%
n, m = 64, 8
for blk in kp.blocks("ecp", n, half_segment=m)[:4]:
    print(
        f"{blk['name']:<8} rows [{blk['row_start']}, {blk['row_stop']})  cols [{blk['col_start']}, {blk['col_stop']})"
        f"  diagonal {blk['diagonal']}"
    )

# %% [markdown]
# The predicate is built in closed form from the block list (a union of rectangles with a `kv_idx - q_idx <= c`
# constraint) and uses only `& | < <= >= -`, so the same function works on Python ints, NumPy arrays and
# PyTorch tensors. `allowed.source` prints it as code you can paste into a kernel.

# %%
allowed = kp.allowed_fn("ecp", n, half_segment=m)
q_idx, kv_idx = np.arange(n)[:, None], np.arange(n)[None, :]
assert np.array_equal(allowed(q_idx, kv_idx), kp.dense_mask("ecp", n, half_segment=m)[0])
# the same thing as a one-liner, what you would write in a FlexAttention mask_mod:
assert np.array_equal(allowed(q_idx, kv_idx), (kv_idx <= q_idx) & (kv_idx >= np.maximum(0, (q_idx // m - 1) * m)))
print(kp.allowed_fn("ecp", 32, half_segment=8).source)

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, (title, arch, args, heads, h) in zip(
    axes,
    [
        ("ECP, m = 8", "ecp", dict(half_segment=8), 1, 0),
        ("PerceiverAR layer 0, L = 24", "perceiver_ar", dict(latent=24), 1, 0),
        ("LongLoRA roll, shifted head", "longlora", dict(group=16, shift="roll"), 2, 1),
    ],
):
    ax.imshow(kp.dense_mask(arch, n, heads, **args)[h], cmap="Greys", interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key kv_idx")
    ax.set_ylabel("query q_idx")
fig.tight_layout()
plt.show()

# %% [markdown]
# In FlexAttention (PyTorch ≥ 2.5) this becomes
# ```python
# mask_mod = minicp.analysis.kernel_pattern.mask_mod("ecp", n, heads, half_segment=128)   # (b, h, q_idx, kv_idx) -> bool
# block_mask = create_block_mask(mask_mod, B=None, H=heads, Q_LEN=n, KV_LEN=n)
# out = flex_attention(q, k, v, block_mask=block_mask)
# ```
# (`examples/ecp_sdpa_torch.py` runs exactly this, plus two SDPA versions.)
#
# ## 2 · A golden file
#
# `make_golden` draws q, k, v and the upstream gradient `dout` from the seed (one generator per tensor, split off by
# `numpy.random.SeedSequence(seed).spawn(4)`, so that the four fill side by side), rounds them to the requested dtype, computes the output and the gradients of `sum(out * dout)` in float64 **from the rounded inputs**, and
# stores them in that dtype. The command line does the same: `minicp golden --arch ecp --seq-len 512 --segment 128 --heads 4 --head-dim 32 -o ecp.npz`.

# %%
g = golden.make_golden("ecp", seq_len=512, heads=4, head_dim=32, dtype="float32", seed=0, half_segment=64)
path = golden.save_golden(g, workdir / "ecp.npz")
for key in ("q", "out", "dout", "dq", "mask", "rows", "block_row_start"):
    print(f"{key:<16} {str(g[key].shape):<18} {g[key].dtype}")
print({k: g.config[k] for k in ("arch", "pattern_args", "segment", "dtype", "seed", "mask", "tolerance")})

# %% [markdown]
# The file is a plain zip of `.npy` arrays plus a JSON string: no pickle, so `np.load(path)` (and from there
# `torch.from_numpy`, `jnp.asarray`, ...) reads it anywhere. `load_golden` additionally checks it: shapes and dtypes
# against the config, the mask and block list against the pattern recomputed from the config, and the output
# recomputed in float64 from the stored inputs.

# %%
with np.load(path) as z:  # any NumPy, no minicp needed
    print(sorted(z.files)[:6], "...")
    print(json.loads(str(z["config"]))["pattern_args"])
g2 = golden.load_golden(path, check=True, check_grads=True)
print(g2)


# %% [markdown]
# ## 3 · Checking a kernel
#
# Here is a kernel author's ECP in plain NumPy: dense scores and the hand-written predicate. `assert_matches_golden`
# calls it on the golden file's inputs; `assert_matches_reference` on the same seeded inputs without a file. Both judge
# every tensor against the float64 reference with **budgets** (docs/tolerances.md): the largest element error against
# 5x the plain float32 implementation's, the rms error against 2.5x the rounding floor. The report says how much of
# each budget was used.


# %%
def my_ecp(q, k, v, m=64):
    n, d = q.shape[-2:]
    i = np.arange(n)
    mask = (i[None, :] <= i[:, None]) & (i[None, :] >= np.maximum(0, (i[:, None] // m - 1) * m))
    s = np.where(mask, (q * d**-0.5) @ np.swapaxes(k, -1, -2), -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


report = golden.assert_matches_golden(my_ecp, path)
print(report["out"].message)
report = mt.assert_matches_reference(my_ecp, "ecp", seq_len=512, heads=4, head_dim=32, dtype="float32", half_segment=64)
v = report["out"]
print(f"max error {v.max_err:.2e} = {100 * v.max_share:.0f}% of its budget, rms {100 * v.rms_share:.0f}% of its budget")
print("per head:", [f"{p['where']}: {100 * max(p['max_share'], p['rms_share']):.0f}%" for p in v.per_head])

# %% [markdown]
# `mt.cases(arch)` lists the edge cases worth running (one head, n = 1, partial blocks, every dtype asked for ...), ready
# for `pytest.mark.parametrize` (`examples/test_my_kernel.py`). Here, the float32 ones of ECP without gradients:

# %%
ecp_cases = [c for c in mt.cases("ecp", check_grads=False) if c.kwargs["seq_len"] <= 512]
for case in ecp_cases:
    m = case.kwargs.get("half_segment") or case.kwargs.get("segment", 2) // 2
    r = mt.assert_matches_reference(lambda q, k, v, m=m: my_ecp(q, k, v, m), **case.kwargs)
    print(f"{str(case):<40} largest budget share {100 * max(max(x.max_share, x.rms_share) for x in r.values()):.0f}%")

# %% [markdown]
# The fixed element-wise tolerances remain for `mt.compare` / `mt.assert_close` and for
# `assert_matches_reference(..., rtol=, atol=)`: `|actual - expected| <= atol + rtol * |expected|`.

# %%
for name, (rtol, atol) in mt.TOLERANCES.items():
    print(f"{name:<9} rtol {rtol:.0e}  atol {atol:.0e}")


# %% [markdown]
# ## 4 · What a failure looks like
#
# The classic off-by-one: `>` instead of `>=` at the start of the previous half segment. The message names the tensor,
# its share of each budget, the worst element with expected and actual values, the fraction of elements over budget,
# the rows over budget and the index range where they lie: rows 64 onward, i.e. from the second half segment on,
# which points straight at the "previous half segment" part of the mask; then the shares per head and per block.


# %%
def off_by_one(q, k, v, m=64):
    n, d = q.shape[-2:]
    i = np.arange(n)
    mask = (i[None, :] <= i[:, None]) & (i[None, :] > (i[:, None] // m - 1) * m)  # BUG: > instead of >=
    s = np.where(mask, (q * d**-0.5) @ np.swapaxes(k, -1, -2), -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


try:
    mt.assert_matches_reference(off_by_one, "ecp", seq_len=512, heads=4, head_dim=32, half_segment=64)
except mt.MismatchError as e:
    print(e)

# %% [markdown]
# `examples/planted_bugs.py` has two more: forgetting the previous half segment, and LLaMA's "halves" RoPE instead of
# the official interleaved one (caught at the sub-layer level with `mt.assert_close`).
#
# ## 5 · bfloat16
#
# NumPy has no bfloat16, so golden files store bfloat16 as float32 arrays whose values are exactly bfloat16 numbers
# (round to nearest even, as PyTorch). Converting them with `torch.from_numpy(a).to(torch.bfloat16)` is exact.

# %%
x = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, np.pi])
print(golden.round_to_bfloat16(x))  # ties go to even: 1.0, 1.015625; pi -> 3.140625
gb = golden.make_golden("ecp", seq_len=128, heads=2, head_dim=16, dtype="bfloat16", half_segment=16)
print(
    gb.config["dtype"],
    gb.config["storage_dtype"],
    gb["q"].dtype,
    "low 16 bits all zero:",
    not (gb["q"].view(np.uint32) & 0xFFFF).any(),
)

# %% [markdown]
# ## 6 · Whole-model golden files
#
# `minicp golden --model` (or `make_model_golden`) stores the tokens, every parameter under its official state_dict name
# (`param/layers.0.0.fn.to_q.weight`), the logits, the loss and the gradients of the loss (`grad/...`): the reference for a
# full training step of your implementation.

# %%
cfg = minicp.ModelConfig(arch="ecp", vocab=64, dim=32, heads=2, layers=2, seq_len=64, segment=16)
gm = golden.make_model_golden(cfg, batch=2, seed=0)
print(gm, "loss", float(gm["loss"]))
print([k for k in gm.keys() if k.startswith("param/layers.0.0")])
assert (
    cli_golden.main(
        [
            "--model",
            "--arch",
            "ecp",
            "--seq-len",
            "64",
            "--segment",
            "16",
            "--heads",
            "2",
            "--head-dim",
            "16",
            "--layers",
            "2",
            "--vocab",
            "64",
            "-o",
            str(workdir / "model.npz"),
        ]
    )
    == 0
)
