"""The lag-copy figure of notebook 04: trained accuracy against the accuracy ECP's receptive field allows.

A lag-copy row repeats its first ``lag`` symbols, so the target of input position i (for i + 1 >= lag) is the
token at i + 1 - lag. An ECP model with k layers and half segment m lets row i see [m max(0, floor(i/m) - k), i]
(docs/receptive-fields.md), so a perfect learner copies exactly the positions whose source lies in that interval
and guesses the others (1 / vocab):

    predicted = share + (1 - share) / vocab,   share = mean over i >= lag - 1 of [i + 1 - lag in field(i)]
"""

import json
import os

import numpy as onp

from minicp import validate as V
from minicp.analysis.receptive import receptive_field
from minicp.config import ModelConfig
from minicp.viz.style import LAYER_PALETTE, footer, new_figure

__all__ = ["predicted_copy_accuracy", "lag_copy_figure", "lag_copy_record_figure"]


def predicted_copy_accuracy(layers, lag, *, seq_len, half_segment, vocab):
    """Copy accuracy of a perfect learner limited by ECP's receptive field (see the module docstring)."""
    layers, lag = V.positive_int("layers", layers), V.positive_int("lag", lag)
    n, m, vocab = (
        V.positive_int("seq_len", seq_len),
        V.positive_int("half_segment", half_segment),
        V.integer("vocab", vocab),
    )
    if vocab < 2:
        raise ValueError(f"vocab must be an integer >= 2, got {vocab!r}")
    if lag > n:
        raise ValueError(f"lag {lag} must be at most seq_len {n}")
    cfg = ModelConfig(arch="ecp", vocab=vocab, dim=8, heads=1, layers=layers, seq_len=n, half_segment=m)
    reach = receptive_field(cfg).mask()  # (n, n): reach[i, j] = token j can reach row i
    rows = onp.arange(lag - 1, n)  # input positions whose target is a copy
    share = float(reach[rows, rows + 1 - lag].mean())
    return share + (1 - share) / vocab


def lag_copy_figure(results, settings, caption=None):
    """Trained copy accuracy (dots) against the receptive-field prediction (dashed), one colour per layer count.

    ``results``: dicts with ``layers``, ``lag``, ``accuracy``; ``settings``: dict with ``m``, ``n``, ``vocab``.
    """
    if not results:
        raise ValueError("results must hold at least one run")
    for key in ("m", "n", "vocab"):
        if key not in settings:
            raise ValueError(f"settings must give {key!r} (half segment m, sequence length n, vocab)")
    m, n, vocab = settings["m"], settings["n"], settings["vocab"]
    layers = sorted({r["layers"] for r in results})
    lags = sorted({r["lag"] for r in results})
    right = min(n, max(max(lags), (max(layers) + 1) * m) + 1)
    dense = onp.arange(1, right + 1)
    fig = new_figure(9.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for k in layers:
        colour = LAYER_PALETTE[(k - 1) % len(LAYER_PALETTE)]
        rs = sorted((r for r in results if r["layers"] == k), key=lambda r: r["lag"])
        pred = [predicted_copy_accuracy(k, g, seq_len=n, half_segment=m, vocab=vocab) for g in dense]
        ax.plot(dense, pred, "--", color=colour, lw=1.5, alpha=0.7)
        ax.plot([r["lag"] for r in rs], [r["accuracy"] for r in rs], "o-", color=colour, lw=2, ms=7, label=f"k = {k}")
        ax.axvline(k * m + 1, color=colour, lw=0.8, ls=":")
    ax.plot([], [], "--", color="grey", label="receptive-field\nprediction")
    ax.axhline(1 / vocab, color="grey", lw=0.8)
    ax.text(right, 1 / vocab + 0.015, "chance", ha="right", va="bottom", color="grey", fontsize=11)
    ax.set_xlim(0, right + 0.5)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("lag (the target is the token lag positions back)", fontsize=12)
    ax.set_ylabel("copy accuracy", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.set_title(f"ECP lag-copy, half segment m = {m}, n = {n}; dotted: lag = k m + 1", fontsize=12)
    ax.legend(
        fontsize=11, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="layers", title_fontsize=11
    )  # beside: no curve hidden
    fig.tight_layout(rect=(0, 0.04 * (1 + (caption or "").count("\n")), 1, 1))
    if caption:
        footer(fig, caption, regenerate=False, fontsize=8)
    return fig


def lag_copy_caption(settings, full=True):
    """The caption notebook 04 puts under its lag-copy figure."""
    run = "MINICP_FULL=1" if full else "default run"
    return (
        f"notebooks/04_training.ipynb ({run}): ECP D {settings['dim']}, h {settings['heads']}, "
        f"{settings['steps']} AdamW steps x {settings['batch']} rows, lr {settings['lr']}, 256 held-out rows"
    )


def lag_copy_record_figure(record):
    """``lag_copy_figure`` of the full run recorded in ``record`` (notebook 04's ``04_training_results.json``,
    written with ``MINICP_FULL=1``): how ``minicp figures`` redraws ``lag_copy_accuracy.png``."""
    record = os.fspath(record)
    try:
        with open(record, encoding="utf-8") as f:
            lag = json.load(f)["lag_copy"]
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{record}: no such file (notebooks/04_training.ipynb writes it when run with MINICP_FULL=1)"
        ) from None
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{record}: not a record of notebook 04's lag-copy runs ({e})") from None
    caption = f"minicp.viz.lag_copy_record_figure({os.path.basename(record)!r}),\n{lag_copy_caption(lag['settings'])}"
    return lag_copy_figure(lag["results"], lag["settings"], caption=caption)
