"""Attention steps: their scaling with the sequence length, and Table 8 (paper against code-faithful counts).
Counts come from ``minicp.analysis.steps`` (docs/attention-steps.md)."""

import numpy as onp

from minicp.analysis.steps import TABLE8_SIZES, count_attention_steps, table8
from minicp.validate import positive_int
from minicp.viz.style import VISIBLE, footer, mpl, new_figure

__all__ = ["steps_scaling_figure", "table8_figure"]

PAPER_BAR = "#adb5bd"
UNMASKED_BAR = "#8fb8e8"
VERDICT_COLOURS = {"exact": "#2b8a3e", "not reproduced": "#c92a2a"}


def _scaling_rows(s, p, c, g):
    """(label, arch, sizes, colour, line style) per curve; "n/2" stands for half the sequence length."""
    return [
        ("Transformer (full)", "transformer", {}, "#212529", "-"),
        ("PerceiverAR (L = n/2)", "perceiver_ar", dict(latent="n/2"), "#0072b2", "-"),
        ("Double (L = n/2)", "double", dict(latent="n/2"), "#009e73", "-"),
        (f"Compressed (L = n/2, p = {p})", "compressed", dict(latent="n/2", compressed=p), "#cc79a7", "-"),
        (f"s-Split (L = n/2, c = {c})", "s_split", dict(latent="n/2", split=c), "#56b4e9", "-"),
        (f"ECP (s = {s}, m = {s // 2})", "ecp", dict(segment=s), "#d55e00", "-"),
        (f"LongLoRA varlen (g = {g})", "longlora", dict(group=g), "#212529", "--"),
        (f"LongLoRA roll (g = {g})", "longlora", dict(group=g, shift="roll"), "#8c510a", ":"),
    ]


def _curve(arch, kw, seq_lens, layers, heads):
    """(n, steps, % of full) for every n at which the sizes fit."""
    xs, ys, pct = [], [], []
    for n in seq_lens:
        sizes = {k: (n // 2 if v == "n/2" else v) for k, v in kw.items()}
        try:
            v = count_attention_steps(arch, seq_len=n, layers=layers, heads=heads, **sizes)
        except ValueError:
            continue  # sizes that do not fit this n
        xs.append(n)
        ys.append(v)
        pct.append(100 * v / (layers * heads * n * n))
    return xs, ys, pct


def _dress_scaling_axes(ax, ax2, layers, heads):
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.axvline(TABLE8_SIZES["n"], color="#868e96", ls=":", lw=1)
        a.grid(alpha=0.3, which="both")
        a.set_xlabel("sequence length n", fontsize=10)
        a.tick_params(labelsize=9)
    ax.set_yscale("log")
    ax.set_ylabel(f"attention steps (score entries), l = {layers}, h = {heads}", fontsize=10)
    ax.set_title("computed entries per model: n² vs. linear in n", fontsize=11)
    ax.text(TABLE8_SIZES["n"], ax.get_ylim()[0] * 1.5, " Table 8\n n = 4096", fontsize=8, color="#495057")
    ax2.set_yscale("log")
    ax2.set_ylabel("% of full attention (l·h·n²)", fontsize=10)
    ax2.set_title("share of full attention", fontsize=11)
    ax.legend(fontsize=8.5, loc="upper left")


def steps_scaling_figure(seq_lens=None, *, layers=48, heads=24, segment=256, compressed=256, split=256, group=256):
    """Attention steps (computed score entries, whole model) against sequence length, log-log, and the
    same as a percentage of full attention. Table 8's sizes by default; its n = 4096 is marked."""
    layers, heads = positive_int("layers", layers), positive_int("heads", heads)
    segment, compressed = positive_int("segment", segment), positive_int("compressed", compressed)
    split, group = positive_int("split", split), positive_int("group", group)
    if seq_lens is None:
        seq_lens = [2**k for k in range(9, 18)]
    seq_lens = [positive_int("seq_lens", n) for n in seq_lens]
    fig = new_figure(13, 5.4)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.25, 1]))
    for label, arch, kw, colour, style in _scaling_rows(segment, compressed, split, group):
        xs, ys, pct = _curve(arch, kw, seq_lens, layers, heads)
        wide = dict(lw=5, alpha=0.45, marker=None) if arch == "ecp" else dict(lw=1.6, marker="o", ms=3)
        ax.plot(xs, ys, style, color=colour, label=label, **wide)
        ax2.plot(xs, pct, style, color=colour, label=label, **wide)
    _dress_scaling_axes(ax, ax2, layers, heads)
    if group == segment and len(seq_lens) >= 2:
        x = seq_lens[-2]
        y = count_attention_steps("ecp", seq_len=x, layers=layers, heads=heads, segment=segment)
        ax.annotate(
            f"ECP (s = {segment}) = S2 varlen (g = {group}) exactly;\nroll adds m² per head and layer",
            xy=(x, y),
            xytext=(x / 7, y / 70),
            fontsize=8,
            color="#495057",
            arrowprops=dict(arrowstyle="->", color="#868e96"),
        )
    fig.suptitle(
        "Attention steps versus sequence length (the per-layer formulas of docs/attention-steps.md; "
        "Table 8's l, h, s, p)",
        fontsize=12,
    )
    fig.subplots_adjust(left=0.07, right=0.99, top=0.86, bottom=0.13, wspace=0.22)
    footer(
        fig,
        f"minicp.viz.steps_scaling_figure(layers={layers}, heads={heads}, segment={segment}, "
        f"compressed={compressed}, split={split}, group={group})",
    )
    return fig


def _table8_row(ax, yi, r, hgt, blend):
    """The three bars of one Table 8 row and its verdict in the right margin."""
    paper = r["paper_millions"]
    if paper is not None:
        ax.barh(yi + hgt, paper, hgt, color=PAPER_BAR, hatch="//", edgecolor="#6c757d", lw=0.5)
        ax.text(paper, yi + hgt, f" {paper:,}M ({r['paper_percent']}%)", va="center", fontsize=8)
    comp, unm = r["computed"] / 1e6, r["unmasked"] / 1e6
    ax.barh(yi, comp, hgt, color=VISIBLE)
    ax.text(comp, yi, f" {comp:,.1f}M ({r['percent_of_full']:.2f}%)", va="center", fontsize=8)
    ax.barh(yi - hgt, unm, hgt, color=UNMASKED_BAR)
    ax.text(unm, yi - hgt, f" {unm:,.1f}M", va="center", fontsize=8, color="#495057")
    verdict = r["verdict"]
    if paper is not None and verdict != "exact":
        verdict += f"\ncode {100 * (comp / paper - 1):+.1f}% vs paper"
    ax.text(
        1.02,
        yi,
        verdict,
        transform=blend(ax.transAxes, ax.transData),
        ha="left",
        va="center",
        fontsize=9.5,
        color=VERDICT_COLOURS.get(r["verdict"], "#495057"),
        weight="bold",
        clip_on=False,
    )


def table8_figure():
    """Table 8 as bars: the paper's printed millions next to the code-faithful computed and unmasked
    counts (minicp.analysis.steps.table8), with each row's verdict."""
    lib = mpl()
    rows = table8()
    fig = new_figure(13, 6.6)
    ax = fig.add_axes([0.2, 0.15, 0.62, 0.72])
    y = onp.arange(len(rows))[::-1]
    for yi, r in zip(y, rows):
        _table8_row(ax, yi, r, 0.26, lib.transforms.blended_transform_factory)
    ax.set_yticks(y)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=9.5)
    ax.set_xlabel("attention steps, millions (all heads and layers)", fontsize=10)
    ax.set_xlim(0, max(r["computed"] / 1e6 for r in rows) * 1.22)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(labelsize=9)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    ax.text(
        1.02,
        1.0,
        "verdict",
        transform=ax.transAxes,
        ha="left",
        va="bottom",
        fontsize=9.5,
        weight="bold",
        color="#343a40",
    )
    t = TABLE8_SIZES
    handles = [
        lib.patches.Patch(facecolor=PAPER_BAR, hatch="//", edgecolor="#6c757d", label="paper (as printed, truncated)"),
        lib.patches.Patch(facecolor=VISIBLE, label="code-faithful, computed entries (% of full)"),
        lib.patches.Patch(facecolor=UNMASKED_BAR, label="code-faithful, unmasked entries"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.02))
    fig.suptitle(
        f"Table 8 reconciled: n = {t['n']}, l = {t['l']}, h = {t['h']}, s = {t['s']} (ECP m = {t['s'] // 2}), "
        f"p = {t['p']}, L = {t['L']}, s-Split c = {t['s']}",
        fontsize=12,
        y=0.965,
    )
    footer(fig, "minicp.viz.table8_figure()")
    return fig
