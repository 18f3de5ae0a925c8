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
# # 04 · Training: ECP's context grows with every layer
#
# The paper's central claim about ECP (section 5.1, Figure 6) is structural: one ECP layer lets a token see
# its own half segment (m tokens, the official code's block) and the previous one, and because the previous
# half segment already saw one further back in the layer below, **after k layers a token sees k half
# segments back**. `minicp.analysis.receptive` derives that from the declared attention pattern (notebook 02). Here we
# check it the empirical way: we train real ECP models with `minicp.train` (AdamW with the official parameter
# groups, gradients from autograd through the hand-written attention VJP) and ask what they can learn.
#
# 1. **Lag-copy.** Every sequence repeats its first `lag` random symbols, so the target at position i is the
#    token `lag` positions back. An ECP model with k layers and half segment m can copy it only if that token
#    lies in its receptive field: accuracy should be high while `lag - 1 <= k m`, fall over the next half
#    segment, and sit at chance (1 / vocab) once `lag > (k + 1) m`.
# 2. **All architectures on one budget.** Every architecture in minicp trained with the same steps, batch
#    and width on the Python documentation (a corpus that ships with Python, byte-level tokens), then the
#    validation perplexity two ways (`minicp.lm.evaluate`): the official recipe and every-token-once. The
#    orderings are compared with the paper's Table 1.
#
# **Short and full version.** Run as it is (CI does this), the notebook trains tiny models for a few dozen
# steps: it checks that everything runs and its numbers mean nothing. `MINICP_FULL=1` runs the real
# experiment, training the runs in parallel processes, one per core (about 25 minutes on 2 cores, 5 on 16), and
# writes the figure and the numbers to `figures/`. The last cell quotes one full run, as measured.

# %%
import os

FULL = os.environ.get("MINICP_FULL", "0") == "1"
WORKERS = int(os.environ.get("MINICP_WORKERS", "0")) or ((os.cpu_count() or 1) if FULL else 1)
if WORKERS > 1:  # one BLAS thread per worker process (set before NumPy is imported)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")

import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from minicp import ModelConfig, count_params, forward
from minicp.analysis.receptive import receptive_field
from minicp.lm import data as D
from minicp.lm import evaluate as E
from minicp.lm import train as T
from minicp.lm.generate import generate

ROOT = Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()
OUT = (
    ROOT / "figures" if FULL else Path(tempfile.mkdtemp(prefix="minicp-04-"))
)  # the short run keeps figures/ untouched
print(f"{'FULL' if FULL else 'short'} version, {WORKERS} worker process(es), outputs in {OUT}")


def pmap(fn, jobs):
    """fn over jobs, in WORKERS forked processes when there is more than one (results in job order)."""
    if WORKERS > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(min(WORKERS, len(jobs))) as pool:
            return pool.map(fn, jobs, chunksize=1)
    return [fn(job) for job in jobs]


# %% [markdown]
# ## 1. Lag-copy: accuracy against lag for k = 1, 2, 3 layers
#
# The task comes from `minicp.lm.data.lag_copy`: a row draws `lag` symbols from a vocabulary of 16 and repeats
# them, and only the positions whose target is a copy are scored (`copy_accuracy`). One model is trained per
# (layers, lag) pair, from the same seed, on fresh random rows every step. The prediction next to each
# measurement uses nothing but the receptive field: the share of scored positions i whose source token
# i + 1 - lag lies in `receptive_field(config).mask()[i]` (those can be copied perfectly), the rest at chance.
#
# Departures from the official training recipe, for a synthetic task: learning rate 3e-3 instead of 2e-4 and
# one micro-batch per step. The architecture is the official ECP (RoPE in layer 0 only, K = V).

# %%
if FULL:
    LAG = dict(m=8, n=64, vocab=16, dim=64, heads=4, steps=600, batch=16, lr=3e-3)
    LAYERS, LAGS = (1, 2, 3), list(range(4, 41, 4))
else:
    LAG = dict(m=4, n=16, vocab=8, dim=32, heads=2, steps=30, batch=8, lr=3e-3)
    LAYERS, LAGS = (1, 2), [3, 7, 11]


def lag_config(k):
    return ModelConfig(
        arch="ecp",
        vocab=LAG["vocab"],
        dim=LAG["dim"],
        heads=LAG["heads"],
        layers=k,
        seq_len=LAG["n"],
        half_segment=LAG["m"],
    )


def predicted_accuracy(k, lag):
    """Accuracy if every copy inside the receptive field is learned and every other one is a guess."""
    n, vocab = LAG["n"], LAG["vocab"]
    reach = receptive_field(lag_config(k)).mask()  # (n, n): reach[i, j] = token j can reach row i
    rows = np.arange(lag - 1, n)  # input positions whose target is a copy
    share = reach[rows, rows + 1 - lag].mean()
    return float(share + (1 - share) / vocab)


def run_lag(job):
    k, lag = job
    cfg, n, vocab = lag_config(k), LAG["n"], LAG["vocab"]
    start = time.perf_counter()
    result = T.train(
        cfg,
        lambda rng, b: D.lag_copy(b, n, lag, vocab, rng)[0],
        T.TrainConfig(steps=LAG["steps"], batch=LAG["batch"], grad_accum=1, lr=LAG["lr"], seed=0),
        progress=False,
    )
    tokens, mask = D.lag_copy(256, n, lag, vocab, rng=np.random.default_rng(12345))  # held-out rows
    logits = np.asarray(forward(result.params, tokens[:, :-1], cfg))
    return dict(
        layers=k,
        lag=lag,
        accuracy=D.copy_accuracy(logits, tokens, mask),
        predicted=predicted_accuracy(k, lag),
        final_loss=result.history[-1]["loss"],
        seconds=time.perf_counter() - start,
    )


jobs = [(k, lag) for k in sorted(LAYERS, reverse=True) for lag in LAGS]  # deepest first: they take longest
start = time.perf_counter()
lag_results = sorted(pmap(run_lag, jobs), key=lambda r: (r["layers"], r["lag"]))
print(
    f"{len(jobs)} lag-copy runs in {time.perf_counter() - start:.0f} s (m = {LAG['m']}, n = {LAG['n']}, "
    f"chance = {1 / LAG['vocab']:.3f})\n"
)
print("layers  lag  reach(lag-1 <= k m?)  accuracy  predicted")
for r in lag_results:
    k, lag = r["layers"], r["lag"]
    where = "inside" if lag - 1 <= k * LAG["m"] else ("edge" if lag <= (k + 1) * LAG["m"] else "outside")
    print(f"{k:6d} {lag:4d}  {where:>20s}  {r['accuracy']:8.3f}  {r['predicted']:9.3f}")

# %%
m, vocab = LAG["m"], LAG["vocab"]
fig, ax = plt.subplots(figsize=(10, 4.6))
colors = {1: "tab:blue", 2: "tab:orange", 3: "tab:green"}
dense = np.arange(1, min(LAG["n"], max(max(LAGS), (max(LAYERS) + 1) * m) + 2) + 1)
for k in LAYERS:
    rs = [r for r in lag_results if r["layers"] == k]
    ax.plot(
        [r["lag"] for r in rs], [r["accuracy"] for r in rs], "o-", color=colors[k], label=f"k = {k} layers (trained)"
    )
    ax.plot(
        dense,
        [predicted_accuracy(k, lag) for lag in dense],
        "--",
        color=colors[k],
        alpha=0.5,
        label=f"k = {k}: receptive-field prediction",
    )
    ax.axvline(k * m + 1, color=colors[k], lw=0.8, ls=":")
right = max(max(LAGS), (max(LAYERS) + 1) * m) + 2
ax.axhline(1 / vocab, color="grey", lw=0.8)
ax.text(0.5, 1 / vocab + 0.01, "chance", va="bottom", color="grey", fontsize=8)
ax.set(
    xlabel="lag (target = the token lag positions back)",
    ylabel="copy accuracy (held-out rows)",
    xlim=(0, right),
    ylim=(0, 1.05),
    title=f"Lag-copy with ECP, half segment m = {m}, n = {LAG['n']}: dotted lines at lag = k m + 1",
)
ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
caption = (
    f"minicp notebooks/04_training.ipynb ({'MINICP_FULL=1' if FULL else 'short version'}): "
    f"ECP D={LAG['dim']} h={LAG['heads']} n={LAG['n']} m={m} vocab={vocab}, "
    f"{LAG['steps']} AdamW steps x {LAG['batch']} rows, lr {LAG['lr']}, seed 0; 256 held-out rows"
)
fig.text(0.99, 0.005, caption, ha="right", va="bottom", fontsize=6, color="grey")
fig.tight_layout(rect=(0, 0.03, 1, 1))
fig.savefig(OUT / "lag_copy_accuracy.png", dpi=120)
plt.show()

# %% [markdown]
# Reading the plot: left of its dotted line (lag - 1 <= k m) a model with k layers has every source token in
# reach and learns the copy; over the next half segment only the positions late in their half segment still
# reach back far enough, so the prediction falls linearly; past lag = (k + 1) m nothing is in reach and the
# accuracy sits at chance. One more layer moves the whole curve right by one half segment. Where a trained
# curve falls short of its prediction inside the field, the model simply did not learn the copy in the steps it
# had (relaying a token through an intermediate position takes longer to learn than copying it directly);
# it never beats the prediction outside the field, which is what the receptive field forbids.

# %% [markdown]
# ## 2. All architectures, one budget, the Python documentation
#
# Byte-level tokens of `pydoc_data.topics` (ships with CPython), cut 90/5/5 into train/valid/test
# (`minicp.lm.data.load_tokens("pydoc")`). Every model has the same width, depth, heads and sequence length,
# and is trained for the same number of steps on the same batches (shuffled non-overlapping chunks, seed 0)
# with the official AdamW groups, betas, clipping and weight decay, lr 1e-3. Architecture-specific sizes: the
# Perceiver family uses L = n/2 (history H = n/2), Compressed p = n/4 (as the official main), s-Split c = H/2,
# ECP m = n/8 (N_s = 8, as the official main's default), LongLoRA g = n/4 (varlen shift). The Perceiver family
# is trained on its last L targets only (that is how the official wrapper trains it), ECP, the Transformer and
# LongLoRA on all n: same tokens read, twice the targets. No dropout anywhere (minicp has none).

# %%
ARCHS = ("transformer", "perceiver_ar", "double", "compressed", "s_split", "ecp", "longlora")
if FULL:
    BUDGET = dict(n=128, dim=64, heads=4, layers=4, steps=400, batch=8, lr=1e-3, valid_tokens=None)
else:
    BUDGET = dict(n=32, dim=16, heads=2, layers=2, steps=8, batch=4, lr=1e-3, valid_tokens=2000)

SPLITS = D.load_tokens("pydoc")
VALID = SPLITS["valid"] if BUDGET["valid_tokens"] is None else SPLITS["valid"][: BUDGET["valid_tokens"]]


def arch_config(arch):
    n = BUDGET["n"]
    sizes = {"ecp": dict(half_segment=n // 8), "longlora": dict(group=n // 4), "compressed": dict(compressed=n // 4)}
    return ModelConfig(
        arch=arch,
        vocab=256,
        dim=BUDGET["dim"],
        heads=BUDGET["heads"],
        layers=BUDGET["layers"],
        seq_len=n,
        **sizes.get(arch, {}),
    )


def run_arch(arch):
    cfg = arch_config(arch)
    start = time.perf_counter()
    result = T.train(
        cfg,
        SPLITS["train"],
        T.TrainConfig(steps=BUDGET["steps"], batch=BUDGET["batch"], grad_accum=1, lr=BUDGET["lr"], seed=0),
        progress=False,
    )
    seconds = time.perf_counter() - start
    ppl = E.perplexities(result.params, VALID, cfg, batch=16)
    return dict(
        arch=arch,
        params=count_params(cfg),
        latent=cfg.latent,
        official=ppl["official"],
        every_token_once=ppl["every_token_once"],
        train_loss=float(np.mean([h["loss"] for h in result.history[-20:]])),
        seconds=seconds,
        weights=result.params if arch == "ecp" else None,
    )


print(
    f"train {len(SPLITS['train']):,} tokens, valid {len(VALID):,} tokens; n = {BUDGET['n']}, D = {BUDGET['dim']}, "
    f"{BUDGET['layers']} layers, {BUDGET['heads']} heads, {BUDGET['steps']} steps x {BUDGET['batch']} rows"
)
start = time.perf_counter()
arch_results = pmap(run_arch, list(ARCHS))
print(f"trained and evaluated {len(ARCHS)} models in {time.perf_counter() - start:.0f} s\n")
print(
    f"{'architecture':14s} {'params':>9s} {'L':>4s} {'train loss':>10s} {'ppl official':>12s} {'ppl every-token-once':>20s}"
)
for r in sorted(arch_results, key=lambda r: r["every_token_once"]):
    print(
        f"{r['arch']:14s} {r['params']:9,d} {r['latent']:4d} {r['train_loss']:10.4f} {r['official']:12.3f} "
        f"{r['every_token_once']:20.3f}"
    )

# %% [markdown]
# Two perplexities, because they answer different questions (`minicp.lm.evaluate`'s docstring has the details).
# The **official** recipe slides a window by n/2 and averages each window's mean loss over all of its L
# targets: with L = n (ECP, Transformer, LongLoRA) most tokens are scored twice, once with as little as one
# token of context, so the number is pessimistic for them; with L = n/2 every token is scored once with at
# least n/2 context. **Every-token-once** scores each target once with at least n/2 + 1 tokens of context for
# every architecture, so it is the fair column for comparing them. The paper's Table 1 uses the official
# recipe with L fixed per configuration, so among the Perceiver family (all L = n/2 here) both columns rank
# alike; across L only the second is meaningful ([docs/official-code.md#evaluation-protocol](../docs/official-code.md#evaluation-protocol)).

# %%
# The paper's Table 1 (Wikitext-103, BERT word pieces, official perplexity; lower is better).
TABLE1 = {
    "A, n=1024, L=512": {"perceiver_ar": 43.2374, "double": 38.6215, "s_split": 38.7562, "compressed": 43.0051},
    "A, n=1024, L=256": {"perceiver_ar": 63.8524, "double": 54.8534, "s_split": 55.4036, "compressed": 63.112},
    "A, n=1024, L=768": {"perceiver_ar": 35.4916, "double": 32.9618, "s_split": 32.9865, "compressed": 33.4186},
    "B, n=2048, L=1024": {"perceiver_ar": 31.902, "double": 30.3801, "s_split": 29.5097, "compressed": 29.9752},
    "C, n=2048, L=1024": {"perceiver_ar": 28.2436, "double": 27.3821, "s_split": 27.1041, "compressed": 26.713},
}
family = ("perceiver_ar", "double", "s_split", "compressed")
ours = {r["arch"]: r for r in arch_results}
mine = sorted(family, key=lambda a: ours[a]["official"])
print("Perceiver family, best to worst (official perplexity):")
print(f"  minicp, pydoc, n = {BUDGET['n']}, L = n/2 : {' < '.join(mine)}")
for name, row in TABLE1.items():
    order = sorted(family, key=row.get)
    same = sum(a == b for a, b in zip(order, mine))
    print(f"  paper Table 1 config {name:18s}: {' < '.join(order)}   ({same}/4 places agree)")
par = ours["perceiver_ar"]["every_token_once"]
print("\nEvery-token-once perplexity relative to PerceiverAR (the baseline of Table 1):")
for r in sorted(arch_results, key=lambda r: r["every_token_once"]):
    print(f"  {r['arch']:14s} {r['every_token_once'] / par - 1:+7.1%}")

# %% [markdown]
# What the paper says and what to compare: in Table 1 Double Attention beats the baseline PerceiverAR in every
# configuration, s-Split comes close to Double, and Compressed gains little over the baseline in configuration A
# (it is the best in C); Table 6 then puts ECP (about 20 at n = 2048, D = 768, 6 layers) far below the
# configuration-C Perceiver family (26.7-28.2) at a similar size. The cells above print our ordering next to
# the paper's; the full run's numbers are in the closing cell and in `figures/04_training_results.json`. Keep
# the scale in mind: tiny models, a small byte-level corpus and a few hundred steps are not Wikitext-103 word
# pieces after 200k steps, so agreement or disagreement here is evidence about small-budget behaviour only.

# %% [markdown]
# ## 3. A sample from the ECP model
#
# `minicp.generate` with the official top-k (keep int(0.1 V) = 25 logits) and temperature 1. The prompt is
# shorter than n, so ECP runs on the shorter window with a partial last half segment.

# %%
ecp = ours["ecp"]
prompt = "The with statement"
sample = generate(ecp["weights"], D.encode(prompt), arch_config("ecp"), 200 if FULL else 20, seed=0)
print(repr(prompt + D.decode(sample)))

# %%
summary = {
    "version": "full" if FULL else "short",
    "lag_copy": {"settings": LAG, "results": lag_results},
    "architectures": {
        "settings": BUDGET,
        "results": [{k: v for k, v in r.items() if k != "weights"} for r in arch_results],
    },
}
(OUT / "04_training_results.json").write_text(json.dumps(summary, indent=1))
print(f"wrote {OUT / 'lag_copy_accuracy.png'} and {OUT / '04_training_results.json'}")

# %% [markdown]
# ## What one full run measured
#
# `MINICP_FULL=1`, 2 CPU cores, Python 3.11 (its `pydoc_data` is the corpus: 419,575 train and 23,310 valid
# bytes), seed 0; 1106 s for part 1 and 375 s for part 2. The same code on a 16-core machine with Python 3.12
# (a slightly different `pydoc_data`, 449,648 / 24,980 bytes) gave the same lag-copy table to within 0.015
# and the same ranking in part 2 except that Double and s-Split swap places (their gap is under 1% in both).
#
# **Lag-copy** (m = 8, chance 0.0625; accuracy / receptive-field prediction):
#
# | lag | 4 | 8 | 12 | 16 | 20 | 24 | 28 | 32 | 36, 40 |
# |---|---|---|---|---|---|---|---|---|---|
# | k = 1 | 1.000 / 1 | 0.998 / 1 | 0.684 / 0.682 | 0.194 / 0.196 | 0.063 / 0.062 | 0.060 / 0.062 | chance | chance | chance |
# | k = 2 | 1.000 / 1 | 1.000 / 1 | 0.894 / 1 | 1.000 / 1 | 0.685 / 0.688 | 0.063 / 0.200 | chance | chance | chance |
# | k = 3 | 1.000 / 1 | 1.000 / 1 | 0.979 / 1 | 0.521 / 1 | 0.810 / 1 | 0.062 / 1 | 0.062 / 0.696 | 0.062 / 0.205 | chance |
#
# One layer follows the receptive-field prediction to three decimals, including the linear fall over the second
# half segment. Two layers reach one half segment further, as the paper says (lag 16 copied perfectly, lag 20
# at the predicted 0.69, chance from lag 28); only the far edge (lag 24) was not learned. Three layers
# learned less than their field allows in 600 steps: copies up to lag 20 but nothing from lag 24 on, where the
# token has to be relayed through two intermediate positions. No run beat its prediction: what lies outside
# the receptive field is never learned, and every layer added does extend how far back a model can copy.
#
# **All architectures, one budget** (n 128, D 64, 4 layers, 400 steps x 8 rows; validation perplexity):
#
# | architecture | params | L | official | every token once | vs PerceiverAR |
# |---|---|---|---|---|---|
# | LongLoRA S2 (varlen) | 232,448 | 128 | 6.316 | 6.243 | -33.9% |
# | ECP (m = 16) | 232,704 | 128 | 8.459 | 8.348 | -11.7% |
# | Transformer | 216,064 | 128 | 9.199 | 9.155 | -3.1% |
# | PerceiverAR | 216,064 | 64 | 9.477 | 9.450 | 0 |
# | s-Split | 216,064 | 64 | 9.525 | 9.496 | +0.5% |
# | Double | 216,064 | 64 | 9.565 | 9.538 | +0.9% |
# | Compressed | 224,384 | 64 | 11.150 | 11.122 | +17.7% |
#
# Against Table 1: the paper finds Double and s-Split clearly better than PerceiverAR (by 7-14% in configuration
# A) and Compressed about level with it in configuration A. At this scale we find PerceiverAR, s-Split and
# Double within 1% of each other (PerceiverAR nominally best) and Compressed 18% worse: the paper's ordering
# within the Perceiver family is **not** reproduced, and the measured differences between the three are too
# small to order them. ECP beats every Perceiver-family model and the full Transformer, in line with the paper's
# claim that ECP improves on PerceiverAR and even on full attention; part of that is that ECP, the Transformer
# and LongLoRA are trained on all n targets and the Perceiver family on L = n/2. LongLoRA's large lead is not an
# attention-pattern effect: minicp's LongLoRA follows LLaMA's conventions (separate K and V, halves-style RoPE
# in every layer), the other models the official ECP code (K = V, RoPE in layer 0 only), a handicap at byte
# level. A control run outside this notebook (same settings and seed, `arch_config(arch).replace(separate_kv=True,
# rope_all_layers=True, rope_style="halves")`) gave every-token-once perplexities of **6.025 for ECP** and 6.363
# for the Transformer, against LongLoRA's 6.243: with the same conventions ECP is ahead of both again. The paper
# has no LongLoRA perplexity to compare with.
