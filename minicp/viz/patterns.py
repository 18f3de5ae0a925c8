"""Attention-pattern panels: every architecture side by side (``patterns_figure``) or one at any sizes
(``pattern_figure``). Patterns come from ``minicp.nn.attention.patterns``."""

import numpy as onp

from minicp.config import ARCHITECTURES, ModelConfig
from minicp.nn.attention import module as arch_module
from minicp.nn.attention import patterns as arch_patterns
from minicp.validate import nonnegative_int, positive_int
from minicp.viz.style import (
    ARCH_LABELS,
    BOTH,
    EDGE,
    EMPTY,
    LEAK,
    MASKED,
    SHIFTED,
    VISIBLE,
    cells,
    footer,
    mpl,
    new_figure,
    rgb,
)

__all__ = ["pattern_figure", "patterns_figure"]

BOUNDARY = "#212529"  # dashed line between the history (or compressed slots) and the latents
PERCEIVER_FAMILY = ("perceiver_ar", "double", "compressed", "s_split")
MAX_N = 96  # larger patterns are no longer readable cell by cell


def _computed_mask(pattern):
    """(n, n) True inside any score matrix the pattern materialises (masked entries included)."""
    out = onp.zeros((pattern.n, pattern.n), dtype=bool)
    for blk in pattern.blocks:
        out[onp.ix_(blk.rows, blk.cols)] = True
    return out


def _runs(positions):
    """Maximal runs of consecutive integers in an array: [(first, last), ...]."""
    positions = onp.asarray(positions)
    cut = onp.nonzero(onp.diff(positions) != 1)[0] + 1
    return [(int(r[0]), int(r[-1])) for r in onp.split(positions, cut)]


def _outline_blocks(ax, pattern, colour=EDGE, lw=0.8):
    """Outline every score matrix (block) of ``pattern``; a block over scattered rows gets one box per run."""
    patches = mpl().patches
    for blk in pattern.blocks:
        for r0, r1 in _runs(blk.rows):
            for c0, c1 in _runs(blk.cols):
                ax.add_patch(
                    patches.Rectangle(
                        (c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False, edgecolor=colour, linewidth=lw
                    )
                )


def _boundary(arch, layer, history, compressed):
    """(position, left label, right label) of the history/latent boundary in a Perceiver-family stream, or None.

    Layer 0 (and every layer of Double and s-Split) runs over the n tokens: history 0..H-1, latents H..n-1.
    Later Compressed layers run over p slots then the latents; later PerceiverAR layers over the latents only.
    """
    if arch not in PERCEIVER_FAMILY or (arch == "perceiver_ar" and layer >= 1):
        return None
    if arch == "compressed" and layer >= 1:
        return compressed, "slots", "latent"
    return history, "history", "latent"


def _draw_boundary(ax, boundary, fontsize):
    """Dashed lines at key = query = ``boundary[0]`` and the two stream names above the top edge."""
    pos, left, right = boundary
    ax.axvline(pos - 0.5, color=BOUNDARY, ls="--", lw=1.3)
    ax.axhline(pos - 0.5, color=BOUNDARY, ls="--", lw=1.3)
    top = mpl().transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for label, ha in ((f"{left} ◂ ", "right"), (f" ▸ {right}", "left")):
        ax.text(pos - 0.5, 1.015, label, transform=top, ha=ha, va="bottom", fontsize=fontsize - 1, color=BOUNDARY)


def _colour_pattern(ax, pats):
    """(size, size, 3) image of the union of head patterns ``pats``; outlines drawn; (computed, unmasked, per)."""
    pat = pats[0]
    size = pat.n
    image = onp.ones((size, size, 3))
    computed = onp.zeros((size, size), dtype=bool)
    for p in pats:
        computed |= _computed_mask(p)
    image[computed] = rgb(MASKED)
    if pat.arch != "longlora":
        image[pat.mask()] = rgb(VISIBLE)
        _outline_blocks(ax, pat)
        return image, (pat.computed(), pat.unmasked(), "per head")
    plain, shifted = pats[0].mask(), pats[-1].mask()  # LongLoRA: both head kinds coloured
    image[plain & ~shifted] = rgb(VISIBLE)
    image[shifted & ~plain] = rgb(SHIFTED)
    image[plain & shifted] = rgb(BOTH)
    future = onp.triu(onp.ones((size, size), dtype=bool), 1)
    image[(plain | shifted) & future] = rgb(LEAK)
    for p, colour in ((pats[0], VISIBLE), (pats[-1], SHIFTED)):
        _outline_blocks(ax, p, colour=colour, lw=1.0)
    steps = (pats[0].computed() + pats[-1].computed()) // 2, (pats[0].unmasked() + pats[-1].unmasked()) // 2
    return image, steps + ("per head (avg.)",)


def _draw_pattern(ax, pats, title, stream, fontsize=8.5, boundary=None, per_head=True):
    """One panel: the union of the head patterns ``pats``; ``boundary`` as ``_boundary`` returns it.
    ``per_head=False`` leaves "per head" out of the counts line (the caller says it once)."""
    image, (computed, unmasked, per) = _colour_pattern(ax, pats)
    size = pats[0].n
    xlabel = f"key ({stream})\n{computed} computed, {unmasked} unmasked" + (f" {per}" if per_head else "")
    cells(ax, size, size, image, xlabel, f"query ({stream})", fontsize=fontsize)
    pad = 4
    if boundary is not None:
        _draw_boundary(ax, boundary, fontsize)
        pad = 4 + 1.4 * fontsize
    ax.set_title(title, fontsize=fontsize, pad=pad)


def _legend_handles(longlora=False, roll=False, boundary=None, single=False):
    """Legend entries: the colours a pattern uses, and the ``boundary`` line (its label) when one is drawn.
    ``single``: the labels of one architecture's figure (no "LongLoRA:" prefixes)."""
    m = mpl()
    if single and longlora:
        entries = [
            (VISIBLE, "unshifted heads (visible)"),
            (SHIFTED, "shifted heads (visible)"),
            (BOTH, "both head kinds (visible)"),
        ]
    else:
        entries = [(VISIBLE, "visible (unmasked score)" + ("; LongLoRA: unshifted heads" if longlora else ""))]
        if longlora:
            entries += [(SHIFTED, "LongLoRA: shifted heads"), (BOTH, "LongLoRA: both head kinds")]
    if roll:
        entries.append((LEAK, "visible future token" + (" (roll leak)" if single else " (S2 roll leak)")))
    entries += [(MASKED, "computed but masked"), (EMPTY, "never computed")]
    handles = [m.patches.Patch(facecolor=c, edgecolor="#adb5bd", label=label) for c, label in entries]
    if boundary:
        handles.append(m.matplotlib.lines.Line2D([], [], color=BOUNDARY, ls="--", lw=1.3, label=boundary))
    return handles


def _describe_sizes(cfg):
    arch, n = cfg.arch, cfg.seq_len
    if arch in ("perceiver_ar", "double"):
        return f"n={n}, L={cfg.latent}, H={cfg.history}"
    if arch == "compressed":
        return f"n={n}, L={cfg.latent}, H={cfg.history}, p={cfg.compressed}"
    if arch == "s_split":
        return f"n={n}, L={cfg.latent}, H={cfg.history}, c={cfg.split}"
    if arch == "ecp":
        return f"n={n}, m={cfg.half_segment} (s={cfg.segment}), N_s={cfg.num_segments}"
    if arch == "longlora":
        return f"n={n}, g={cfg.group}, shift={cfg.shift}"
    return f"n={n}"


def pattern_figure(arch, n=32, *, layer=0, **sizes):
    """One architecture's pattern in layer ``layer`` (same colours as ``patterns_figure``), with a legend.

    ``sizes`` are the architecture's pattern arguments as ModelConfig names them (``latent``,
    ``compressed``, ``split``, ``segment``/``half_segment``, ``group``, ``shift``, ...), defaults as
    ModelConfig. For PerceiverAR and Compressed, ``layer >= 1`` draws the shorter later stream. For the
    Perceiver family a dashed line marks where the history (or the compressed slots) ends and the latents begin.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch {arch!r} is not one of {ARCHITECTURES}")
    n = positive_int("n", n)
    layer = nonnegative_int("layer", layer)
    if n > MAX_N:
        raise ValueError(f"n must be at most {MAX_N} for a readable picture, got {n}")
    heads = 2
    cfg = ModelConfig(arch=arch, seq_len=n, heads=heads, dim=2 * heads, layers=layer + 1, **sizes)
    n_in = cfg.stream_len(layer)
    pats = arch_patterns(arch, n_in, heads, **arch_module(arch).pattern_kwargs(cfg, layer))
    boundary = _boundary(arch, layer, cfg.history if arch in PERCEIVER_FAMILY else None, cfg.compressed)
    fig = new_figure(5.8, 6.9)
    ax = fig.add_axes([0.14, 0.25, 0.8, 0.6])
    stream = "token" if n_in == n else "stream row"
    which = f", layer {layer}" + (" (and later)" if layer else "") if arch in ("perceiver_ar", "compressed") else ""
    _draw_pattern(
        ax, pats, f"{ARCH_LABELS[arch]}{which}\n{_describe_sizes(cfg)}", stream, fontsize=10, boundary=boundary
    )
    handles = _legend_handles(
        longlora=arch == "longlora",
        roll=arch == "longlora" and cfg.shift == "roll",
        boundary=boundary and f"{boundary[1]} | {boundary[2]} boundary",
        single=True,
    )
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.035))
    kw = ", ".join(f"{k}={v!r}" for k, v in sizes.items())
    footer(
        fig,
        f"minicp.viz.pattern_figure({arch!r}, n={n}{', layer=' + str(layer) if layer else ''}"
        f"{', ' + kw if kw else ''})",
        regenerate=False,
    )
    return fig


def _pattern_panels(n, latent, compressed, split, half_segment, group):
    """(title, subtitle, head patterns, stream label, boundary) for every panel of ``patterns_figure``."""
    H = n - latent
    ecp = arch_module("ecp")
    return [
        ("Transformer", f"n={n}: one causal n×n block", arch_patterns("transformer", n, 1), "token", None),
        (
            "PerceiverAR, layer 0",
            f"latents L={latent}, history H={H}",
            arch_patterns("perceiver_ar", n, 1, latent=latent, layer=0),
            "token",
            _boundary("perceiver_ar", 0, H, 0),
        ),
        (
            "PerceiverAR, layers ≥ 1",
            f"only the L={latent} latents ({H}..{n - 1})",
            arch_patterns("perceiver_ar", latent, 1, latent=latent, layer=1),
            "latent",
            None,
        ),
        (
            "Double Attention",
            f"H={H} unmasked, L={latent} causal",
            arch_patterns("double", n, 1, latent=latent),
            "token",
            _boundary("double", 0, H, 0),
        ),
        (
            "Compressed, layer 0",
            f"as Double; H={H} rows → p={compressed}",
            arch_patterns("compressed", n, 1, latent=latent, compressed=compressed, layer=0),
            "token",
            _boundary("compressed", 0, H, compressed),
        ),
        (
            "Compressed, layers ≥ 1",
            f"p={compressed} slots + L={latent} latents",
            arch_patterns("compressed", compressed + latent, 1, latent=latent, compressed=compressed, layer=1),
            "slot / latent",
            _boundary("compressed", 1, H, compressed),
        ),
        (
            "s-Split Double",
            f"history in {H // split} segments of c={split}",
            arch_patterns("s_split", n, 1, latent=latent, split=split),
            "token",
            _boundary("s_split", 0, H, 0),
        ),
        (
            "ECP",
            f"m={half_segment} (s={2 * half_segment}): ATTN + PAR m×2m",
            [ecp.pattern(n, half_segment=half_segment)],
            "token",
            None,
        ),
        (
            "LongLoRA S2, varlen",
            f"g={group}; shifted heads move by {group // 2}",
            arch_patterns("longlora", n, 2, group=group, shift="varlen"),
            "token",
            None,
        ),
        (
            "LongLoRA S2, roll",
            f"g={group}; wrap group sees the future",
            arch_patterns("longlora", n, 2, group=group, shift="roll"),
            "token",
            None,
        ),
    ]


def _check_panel_sizes(n, latent, compressed, split, half_segment, group):
    values = {
        "n": n,
        "latent": latent,
        "compressed": compressed,
        "split": split,
        "half_segment": half_segment,
        "group": group,
    }
    n, latent, compressed, split, half_segment, group = (positive_int(k, v) for k, v in values.items())
    if n > MAX_N:
        raise ValueError(f"n must be at most {MAX_N} for a readable picture, got {n}")
    if (
        not latent < n
        or not compressed <= n - latent
        or (n - latent) % split
        or n % half_segment
        or n % group
        or group % 2
    ):
        raise ValueError(
            f"sizes do not fit n={n}: need latent < n, compressed <= n - latent, split dividing "
            f"n - latent, half_segment and (even) group dividing n"
        )
    return n, latent, compressed, split, half_segment, group


def patterns_figure(n=32, *, latent=12, compressed=6, split=5, half_segment=4, group=8):
    """The declared attention pattern of every architecture (one head, or both LongLoRA head kinds).

    Dark blue: score entries that survive the mask; light grey: computed but masked; white: never
    computed; outlines: the score matrices (blocks) the explicit implementation materialises; dashed:
    the history/latent boundary of the Perceiver family. LongLoRA: blue = unshifted heads, orange =
    shifted heads, purple = both, red = a future token (roll's wrap-around leak). Sizes must be valid
    for every architecture (ValueError otherwise). Fonts stay >= 11 px when the image is shown 880 px wide.
    """
    sizes = _check_panel_sizes(n, latent, compressed, split, half_segment, group)
    fontsize = 11
    fig = new_figure(11.5, 16.5)
    axes = fig.subplots(4, 3).ravel()
    for ax, (title, subtitle, pats, stream, boundary) in zip(axes, _pattern_panels(*sizes)):
        _draw_pattern(ax, pats, f"{title}\n{subtitle}", stream, fontsize=fontsize, boundary=boundary, per_head=False)
    for ax in axes[10:]:
        ax.set_axis_off()
    fig.legend(
        handles=_legend_handles(longlora=True, roll=True, boundary="history (or slots) | latent boundary"),
        loc="center",
        fontsize=fontsize,
        frameon=False,
        bbox_to_anchor=(0.67, 0.14),
        title="colours (outlines: blocks)",
        title_fontsize=fontsize,
    )
    fig.suptitle(
        f"Attention patterns of every architecture, one layer, n = {n}\n(outlines: the score matrices "
        f"the code materialises; counts per head, LongLoRA: mean of its two head kinds)",
        fontsize=13,
        y=0.995,
    )
    fig.subplots_adjust(left=0.07, right=0.98, top=0.93, bottom=0.06, wspace=0.3, hspace=0.72)
    footer(
        fig,
        f"minicp.viz.patterns_figure(n={n}, latent={latent}, compressed={compressed}, split={split}, "
        f"half_segment={half_segment}, group={group})",
        fontsize=10,
    )
    return fig
