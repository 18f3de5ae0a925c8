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
# Everything below runs on the CPU. Each section ends with a kernel author's exercise (write a predicate, read a
# golden file, write a kernel that passes, plant a bug and read the message, round to bfloat16, recompute a
# model's loss) and a check cell that holds your answer against minicp; until you write one, the check cell runs
# the solution from [solutions/](solutions) instead.
#
# Numbers that come from float32 arithmetic (errors, shares of a budget) move a little with the BLAS of the
# machine (the order in which it sums the products); the cells that print them say so.

# %%
# %matplotlib inline
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import minicp
import minicp.testing as mt
from minicp import golden
from minicp.analysis import kernel_pattern as kp
from minicp.course import machine, yours_or_solution

workdir = Path(tempfile.mkdtemp(prefix="minicp-05-"))  # a scratch folder for the golden files of this notebook


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
# **Exercise.** Write the `mask_mod` predicate of LongLoRA S2 **varlen**'s shifted heads yourself:
# `my_shifted_allowed(q_idx, kv_idx, g)`, using only `& | < <= >= - + //` so that it works on ints, NumPy arrays and
# tensors alike. Varlen groups start g/2 earlier than the plain ones (the first group holds g/2 tokens), and
# attention is causal inside each group. The check cell compares it with the shifted head of
# `kernel_pattern.dense_mask("longlora", n, 2, group=g)`.


# %%
def my_shifted_allowed(q_idx, kv_idx, g):
    return None  # your code here: a boolean (array) from q_idx, kv_idx and g


# %%
# check cell
fn, who = yours_or_solution(my_shifted_allowed, "shifted_allowed", 3, 1, 8)
for n_, g_ in [(32, 8), (64, 16), (24, 8), (128, 64)]:
    q_, kv_ = np.arange(n_)[:, None], np.arange(n_)[None, :]
    mine, ref = np.asarray(fn(q_, kv_, g_)), kp.dense_mask("longlora", n_, 2, group=g_)[1]
    assert mine.shape == ref.shape, (
        f"n = {n_}: shape {mine.shape}, expected {ref.shape} (broadcast q_idx against kv_idx)"
    )
    assert np.array_equal(mine, ref), f"n = {n_}, g = {g_}: rows {np.nonzero((mine != ref).any(1))[0].tolist()} differ"
print(f"{who}: equals the shifted head of dense_mask('longlora', ...) for 4 sizes")

# %% [markdown]
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
# **Exercise.** Read a golden file with nothing but NumPy: write `my_golden_head(path, head)` that loads q, k, v
# and the mask with `np.load`, and returns the attention output of that head (batch 0) in float64, as an (n, d)
# array. Mind the two conventions of the table in `minicp.golden`'s docstring: q is stored **unscaled**, and the
# mask is stored once, (1, n, n), when every head shares it. The check cell compares your output with the
# file's own `out`, for the ECP file above and a LongLoRA file whose heads differ.


# %%
def my_golden_head(path, head):
    return None  # your code here: an (n, d) array


# %%
# check cell
fn, who = yours_or_solution(my_golden_head, "golden_head", path, 0)
longlora_file = golden.save_golden(
    golden.make_golden("longlora", seq_len=128, heads=2, head_dim=16, dtype="float32", seed=0, group=32),
    workdir / "longlora.npz",
)
for file_, heads_ in [(path, 4), (longlora_file, 2)]:
    with np.load(file_) as z:
        stored = z["out"]
    for h_ in range(heads_):
        mt.assert_close(
            np.asarray(fn(file_, h_), dtype=np.float32), stored[0, h_], name=f"{Path(file_).stem} head {h_}"
        )
print(f"{who}: every head of the ECP and the LongLoRA file equals the stored out (float32 tolerances)")


# %% [markdown]
# ## 3 · Checking a kernel
#
# Here is a kernel author's ECP in plain NumPy: dense scores and the hand-written predicate. `assert_matches_golden`
# calls it on the golden file's inputs; `assert_matches_reference` on the same seeded inputs without a file. Both judge
# every tensor against the float64 reference with **budgets** (docs/tolerances.md): the largest element error against
# 5x the plain float32 implementation's, the rms error against 2.5x a production floor (the same arithmetic rounded
# where fused GPU kernels round). The report says how much of each budget was used; a check that does not fail can
# still be *inconclusive* when a known precision bug would not have failed either (in bfloat16 on small cases).


# %% tags=["approx"]
def my_ecp(q, k, v, m=64):
    n, d = q.shape[-2:]
    i = np.arange(n)
    mask = (i[None, :] <= i[:, None]) & (i[None, :] >= np.maximum(0, (i[:, None] // m - 1) * m))
    s = np.where(mask, (q * d**-0.5) @ np.swapaxes(k, -1, -2), -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


report = golden.assert_matches_golden(my_ecp, path)
print(report["out"].message.splitlines()[0])  # the verdict; the next line names the file and the case
report = mt.assert_matches_reference(my_ecp, "ecp", seq_len=512, heads=4, head_dim=32, dtype="float32", half_segment=64)
v = report["out"]
print(f"max error {v.max_err:.2e} = {100 * v.max_share:.0f}% of its budget, rms {100 * v.rms_share:.0f}% of its budget")
print("per head:", [f"{p['where']}: {100 * max(p['max_share'], p['rms_share']):.0f}%" for p in v.per_head])

# %% [markdown]
# `mt.cases(arch)` lists the edge cases worth running (one head, n = 1, partial blocks, every dtype asked for ...), ready
# for `pytest.mark.parametrize` (`examples/test_my_kernel.py`). Here, the float32 ones of ECP without gradients:

# %% tags=["approx"]
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
# **Exercise.** Your turn to write a kernel: LongLoRA S2 varlen in plain NumPy, `my_longlora(q, k, v, g)` for q, k,
# v of shape (b, h, n, d). The first half of the heads attend causally inside groups of g tokens, the second half
# inside the shifted groups of the first exercise; scale q by d^-0.5. The check cell runs
# `mt.assert_matches_reference(..., "longlora", group=64)` on it and prints how much of each budget it used.


# %%
def my_longlora(q, k, v, g):
    return None  # your code here: a (b, h, n, d) array


# %% tags=["approx"]
# check cell
fn, who = yours_or_solution(my_longlora, "longlora_kernel", *np.zeros((3, 1, 2, 8, 4)), 4)
r = mt.assert_matches_reference(
    lambda q, k, v: fn(q, k, v, 64), "longlora", seq_len=256, heads=4, head_dim=32, group=64
)
print(
    f"{who}: passes; max error {100 * r['out'].max_share:.0f}% and rms {100 * r['out'].rms_share:.0f}% of their budgets"
)


# %% [markdown]
# ## 4 · What a failure looks like
#
# The classic off-by-one: `>` instead of `>=` at the start of the previous half segment. The message names the tensor,
# its share of each budget, the worst element with expected and actual values, the fraction of elements over budget,
# the rows over budget and the index range where they lie: rows 64 onward, i.e. from the second half segment on,
# which points straight at the "previous half segment" part of the mask; then the shares per head and per block.


# %% tags=["approx"]
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
# **Exercise.** Plant a bug and read the message. `no_causal_mask` below forgets the causal mask inside the current
# half segment: every row sees its whole pair (previous, current). Before you run it, predict which rows of the
# output are wrong: write `my_rows_over_budget(n, m)` as a sorted list. The check cell runs the check, reads
# "rows over budget" from the message and compares. (Which row of each half segment stays right, and why?)


# %%
def no_causal_mask(q, k, v, m=64):
    n, d = q.shape[-2:]
    t = np.arange(n) // m  # half segment of each position
    mask = (t[None, :] >= t[:, None] - 1) & (t[None, :] <= t[:, None])  # BUG: no kv_idx <= q_idx
    s = np.where(mask, (q * d**-0.5) @ np.swapaxes(k, -1, -2), -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def my_rows_over_budget(n, m):
    return None  # your prediction: a sorted list of rows


# %%
# check cell
fn, who = yours_or_solution(my_rows_over_budget, "rows_over_budget", 8, 4)
try:
    mt.assert_matches_reference(no_causal_mask, "ecp", seq_len=256, heads=2, head_dim=16, half_segment=64)
    raise AssertionError("the planted bug passed the check")
except mt.MismatchError as e:
    line = next(x for x in str(e).splitlines() if "rows over budget" in x)
    ranges = re.findall(r"\[(\d+)(?:\.\.(\d+))?\]", line.split(":", 1)[1])
    reported = [row for a, b in ranges for row in range(int(a), int(b or a) + 1)]
print(line.strip())
assert list(fn(256, 64)) == reported, f"you predicted {len(list(fn(256, 64)))} rows, the message lists {len(reported)}"
print(f"{who}: the {len(reported)} rows the message lists")

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
print(mt.round_to_bfloat16(x))  # ties go to even: 1.0, 1.015625; pi -> 3.140625
gb = golden.make_golden("ecp", seq_len=128, heads=2, head_dim=16, dtype="bfloat16", half_segment=16)
print(
    gb.config["dtype"],
    gb.config["storage_dtype"],
    gb["q"].dtype,
    "low 16 bits all zero:",
    not (gb["q"].view(np.uint32) & 0xFFFF).any(),
)

# %% [markdown]
# **Exercise.** Round to bfloat16 yourself: `my_bfloat16_round(x)` takes float32 values and returns float32 values
# that are exactly bfloat16 numbers, rounded to nearest with ties to even. Work on the bits: view the float32 as
# `np.uint32`; bfloat16 keeps the high 16 bits; add half of the dropped part's range (0x7FFF), plus one when the
# lowest kept bit is odd (that makes ties go to even), then clear the low 16 bits. The check cell compares your
# bits with `mt.round_to_bfloat16` on 300,000 values of every magnitude, exact ties among them.


# %%
def my_bfloat16_round(x):
    return None  # your code here: a float32 array of bfloat16 values


# %%
# check cell
fn, who = yours_or_solution(my_bfloat16_round, "bfloat16_round", np.ones(2, np.float32))
rng = np.random.default_rng(0)
high = rng.integers(0, 0x7F7F, 100_000, dtype=np.uint32) << 16  # finite bfloat16 patterns, positive and below the top
ties = (high | 0x8000).view(np.float32)  # exactly half way between two bfloat16 numbers
values = np.concatenate([ties, -ties, rng.standard_normal(100_000).astype(np.float32)])
mine = np.asarray(fn(values), dtype=np.float32)
bad = np.nonzero(mine.view(np.uint32) != mt.round_to_bfloat16(values).view(np.uint32))[0]
assert not bad.size, (
    f"{bad.size} values differ, e.g. {values[bad[0]]!r}: {mine[bad[0]]!r}, expected {mt.round_to_bfloat16(values)[bad[0]]!r}"
)
print(f"{who}: bit for bit mt.round_to_bfloat16 on {values.size:,} values")

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

# %% [markdown]
# The command line writes the same file (here into the scratch folder, so the output names it `model.npz`); it
# says how long the writing took, on this machine.

# %% tags=["varies"]
command = (
    "golden --model --arch ecp --seq-len 64 --segment 16 --heads 2 --head-dim 16 --layers 2 --vocab 64 -o model.npz"
)
done = subprocess.run([sys.executable, "-m", "minicp", *command.split()], cwd=workdir, capture_output=True, text=True)
print(f"$ minicp {command}\n{done.stdout}(exit status {done.returncode}, on this machine: {machine()})")
assert done.returncode == 0, done.stderr

# %% [markdown]
# **Exercise.** A model golden file stores the tokens (b, n + 1), the logits of the first n tokens (b, n, V) and
# the loss. Recompute the loss from the tokens and logits alone: `my_model_loss(tokens, logits)`, the mean
# cross-entropy where row t predicts token t + 1 (compute the log-softmax stably, in float64). The check cell
# compares it with the stored loss of `gm` above and of the file the command line wrote.


# %%
def my_model_loss(tokens, logits):
    return None  # your code here: a number


# %%
# check cell
fn, who = yours_or_solution(my_model_loss, "model_loss", gm["tokens"], gm["logits"])
with np.load(workdir / "model.npz") as z:
    from_cli = {key: z[key] for key in ("tokens", "logits", "loss")}
for name, f in [("make_model_golden", gm), ("minicp golden --model", from_cli)]:
    mine = float(fn(f["tokens"], f["logits"]))
    assert abs(mine - float(f["loss"])) <= 1e-5 * abs(float(f["loss"])), f"{name}: {mine}, stored {float(f['loss'])}"
print(f"{who}: equals the stored loss of both files (to float32 rounding)")
