"""Figures: attention patterns, receptive fields (paper Figures 1(b-d) and 6) and attention steps (Tables 7-8).

Every function returns a matplotlib ``Figure`` (or a ``FuncAnimation``) built on its own Agg canvas,
so nothing here touches pyplot's global state: the same call works in a script, a test and a notebook
(show an animation there with ``HTML(anim.to_jshtml())``). ``make_all`` writes every file of
``figures/``; ``minicp figures`` (``main``) is its command line. Each image carries a footer naming the
call that drew it.

=================================  ========================================================================
function                           what it draws
=================================  ========================================================================
``patterns_figure``                the declared pattern of every architecture, side by side
``pattern_figure``                 one architecture's pattern, any sizes
``receptive_fields_figure``        every architecture's receptive field after 1, 2, 3 layers
``ecp_receptive_animation``        Figure 1(b-d): ECP's sparse layer-1 pattern, then the field after 2, 3, ...
``ecp_half_segments_animation``    Figure 6: half segments across layers, one output block's context in yellow
``steps_scaling_figure``           attention steps versus n for every architecture (log-log) and % of full
``table8_figure``                  Table 8: the paper's numbers against the code-faithful counts
=================================  ========================================================================

Needs matplotlib and pillow (``pip install 'minicp[viz]'``).
"""
from pathlib import Path

import numpy as onp

from minicp.nn.attention import module as arch_module, patterns as arch_patterns
from minicp.config import ARCHITECTURES, ModelConfig
from minicp.analysis.receptive import receptive_field_by_layer
from minicp.analysis.steps import TABLE8_SIZES, count_attention_steps, table8

__all__ = ["pattern_figure", "patterns_figure", "receptive_fields_figure", "ecp_receptive_animation", "ecp_half_segments_animation",
           "steps_scaling_figure", "table8_figure", "make_all", "main", "FIGURES"]

# Colours (colour-blind safe; Okabe-Ito where possible)
VISIBLE = "#1f5fa8"          # a score entry that survives the mask
MASKED = "#d5dbe3"           # computed (inside a score matrix) but masked
EMPTY = "#ffffff"            # never computed
SHIFTED = "#e69f00"          # LongLoRA shifted heads
BOTH = "#6a3d9a"             # LongLoRA: unshifted and shifted heads
LEAK = "#d1352b"             # visible and in the future (S2 roll wrap-around)
CONTEXT = "#f2c200"          # Figure 6's yellow
OUTPUT = "#d1352b"
GREY = "#e9ecef"
EDGE = "#495057"

ARCH_LABELS = {
    "transformer": "Transformer (full causal)",
    "perceiver_ar": "PerceiverAR",
    "double": "Double Attention",
    "compressed": "Compressed Double",
    "s_split": "s-Split Double",
    "ecp": "ECP",
    "longlora": "LongLoRA S2-Attn",
}


# ----------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------

def _mpl():
    """matplotlib pieces, imported lazily so that ``import minicp.viz`` fails only when used."""
    try:
        import matplotlib
        from matplotlib import animation, colors, patches
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("minicp.viz needs matplotlib and pillow: pip install 'minicp[viz]'") from err
    return matplotlib, animation, colors, patches, FigureCanvasAgg, Figure


def _figure(width, height, dpi=110):
    _, _, _, _, FigureCanvasAgg, Figure = _mpl()
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)                          # its own canvas: no pyplot, no global state
    return fig


def _footer(fig, text, regenerate=True):
    suffix = "  (regenerate: minicp figures)" if regenerate else ""
    fig.text(0.995, 0.004, f"made by {text}{suffix}", ha="right", va="bottom", fontsize=7, color="#6c757d")


def _rgb(hex_colour):
    hex_colour = hex_colour.lstrip("#")
    return onp.array([int(hex_colour[i:i + 2], 16) / 255 for i in (0, 2, 4)])


def _check_int(name, value, low=1):
    if isinstance(value, bool) or not isinstance(value, (int, onp.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


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
    _, _, _, patches, _, _ = _mpl()
    for blk in pattern.blocks:
        for r0, r1 in _runs(blk.rows):
            for c0, c1 in _runs(blk.cols):
                ax.add_patch(patches.Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                                               edgecolor=colour, linewidth=lw))


def _cells(ax, n_rows, n_cols, image, xlabel, ylabel, grid=True):
    ax.imshow(image, interpolation="nearest", extent=(-0.5, n_cols - 0.5, n_rows - 0.5, -0.5), aspect="equal")
    if grid and max(n_rows, n_cols) <= 48:
        ax.set_xticks(onp.arange(-0.5, n_cols, 1), minor=True)
        ax.set_yticks(onp.arange(-0.5, n_rows, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.4)
        ax.tick_params(which="minor", length=0)
    step = next(s for s in (1, 2, 4, 8, 16, 32, 64) if max(n_rows, n_cols) / s <= 12)
    ax.set_xticks(range(0, n_cols, step))
    ax.set_yticks(range(0, n_rows, step))
    ax.tick_params(labelsize=7, length=2)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)


# ----------------------------------------------------------------------------------------------------
# 1. Every architecture's pattern, side by side
# ----------------------------------------------------------------------------------------------------

def _pattern_panels(n, latent, compressed, split, half_segment, group):
    """(title, subtitle, pattern or list of head patterns, stream label) for every panel."""
    H = n - latent
    p_len = compressed + latent
    ecp = arch_module("ecp")
    return [
        ("Transformer", f"n={n}: one causal n×n block", arch_patterns("transformer", n, 1), "token"),
        ("PerceiverAR, layer 0", f"L={latent} latent rows see all H={H} history keys",
         arch_patterns("perceiver_ar", n, 1, latent=latent, layer=0), "token"),
        ("PerceiverAR, layers ≥ 1", f"stream = the L={latent} latents (tokens {H}..{n - 1})",
         arch_patterns("perceiver_ar", latent, 1, latent=latent, layer=1), "latent row"),
        ("Double Attention", f"history H={H} unmasked + latent L={latent}",
         arch_patterns("double", n, 1, latent=latent), "token"),
        ("Compressed, layer 0", f"as Double, then H={H} rows → p={compressed} slots",
         arch_patterns("compressed", n, 1, latent=latent, compressed=compressed, layer=0), "token"),
        ("Compressed, layers ≥ 1", f"stream = p={compressed} slots + L={latent} latents",
         arch_patterns("compressed", p_len, 1, latent=latent, compressed=compressed, layer=1), "slot / latent row"),
        ("s-Split Double", f"history in {H // split} segments of c={split}",
         arch_patterns("s_split", n, 1, latent=latent, split=split), "token"),
        ("ECP", f"half segment m={half_segment} (paper s={2 * half_segment}): ATTN + PAR m×2m",
         [ecp.pattern(n, half_segment=half_segment)], "token"),
        ("LongLoRA S2, varlen", f"g={group}; shifted heads move by u={group // 2}",
         arch_patterns("longlora", n, 2, group=group, shift="varlen"), "token"),
        ("LongLoRA S2, roll", f"g={group}; the wrap group leaks the future",
         arch_patterns("longlora", n, 2, group=group, shift="roll"), "token"),
    ]


def _draw_pattern(ax, pats, title, stream, fontsize=8.5):
    """One panel: the union of the head patterns ``pats`` (LongLoRA: both head kinds coloured)."""
    pat = pats[0]
    size = pat.n
    image = onp.ones((size, size, 3))
    computed = onp.zeros((size, size), dtype=bool)
    for p in pats:
        computed |= _computed_mask(p)
    image[computed] = _rgb(MASKED)
    if pat.arch == "longlora":
        plain, shifted = pats[0].mask(), pats[-1].mask()
        image[plain & ~shifted] = _rgb(VISIBLE)
        image[shifted & ~plain] = _rgb(SHIFTED)
        image[plain & shifted] = _rgb(BOTH)
        future = onp.triu(onp.ones((size, size), dtype=bool), 1)
        image[(plain | shifted) & future] = _rgb(LEAK)
        for p, colour in ((pats[0], VISIBLE), (pats[-1], SHIFTED)):
            _outline_blocks(ax, p, colour=colour, lw=1.0)
        steps = (pats[0].computed() + pats[-1].computed()) // 2, (pats[0].unmasked() + pats[-1].unmasked()) // 2
        per = "per head (avg.)"
    else:
        image[pat.mask()] = _rgb(VISIBLE)
        _outline_blocks(ax, pat)
        steps, per = (pat.computed(), pat.unmasked()), "per head"
    _cells(ax, size, size, image, f"key ({stream})", f"query ({stream})")
    ax.set_title(title, fontsize=fontsize, pad=4)
    ax.text(0.0, -0.12 - 0.008 * fontsize, f"computed {steps[0]}, unmasked {steps[1]} {per}",
            transform=ax.transAxes, fontsize=fontsize - 1.5, color="#343a40", va="top")


def pattern_figure(arch, n=32, *, layer=0, **sizes):
    """One architecture's pattern in layer ``layer`` (same colours as ``patterns_figure``).

    ``sizes`` are the architecture's pattern arguments as ModelConfig names them (``latent``,
    ``compressed``, ``split``, ``segment``/``half_segment``, ``group``, ``shift``, ...), defaults as
    ModelConfig. For PerceiverAR and Compressed, ``layer >= 1`` draws the shorter later stream.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch {arch!r} is not one of {ARCHITECTURES}")
    _check_int("n", n)
    layer = _check_int("layer", layer, low=0)
    if n > 96:
        raise ValueError(f"n must be at most 96 for a readable picture, got {n}")
    heads = 2
    cfg = ModelConfig(arch=arch, seq_len=n, heads=heads, dim=2 * heads, layers=layer + 1, **sizes)
    mod = arch_module(arch)
    n_in = cfg.stream_len(layer)
    pats = arch_patterns(arch, n_in, heads, **mod.pattern_kwargs(cfg, layer))
    fig = _figure(5.8, 6.2)
    ax = fig.add_axes([0.13, 0.2, 0.82, 0.65])
    kw = ", ".join(f"{k}={v!r}" for k, v in sizes.items())
    stream = "token" if n_in == n else "stream row"
    which = f", layer {layer}" + (" (and later)" if layer else "") if arch in ("perceiver_ar", "compressed") else ""
    _draw_pattern(ax, pats, f"{ARCH_LABELS[arch]}{which}\n{_describe_sizes(cfg)}", stream, fontsize=10)
    _footer(fig, f"minicp.viz.pattern_figure({arch!r}, n={n}{', layer=' + str(layer) if layer else ''}"
                 f"{', ' + kw if kw else ''})", regenerate=False)
    return fig


def _describe_sizes(cfg):
    arch, n = cfg.arch, cfg.seq_len
    if arch == "perceiver_ar" or arch == "double":
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


def patterns_figure(n=32, *, latent=12, compressed=6, split=5, half_segment=4, group=8):
    """The declared attention pattern of every architecture (one head, or both LongLoRA head kinds).

    Dark blue: score entries that survive the mask; light grey: computed but masked; white: never
    computed; outlines: the score matrices (blocks) the explicit implementation materialises.
    LongLoRA: blue = unshifted heads, orange = shifted heads, purple = both, red = a future token
    (roll's wrap-around leak). Sizes must be valid for every architecture (ValueError otherwise).
    """
    for name, value in (("n", n), ("latent", latent), ("compressed", compressed), ("split", split),
                        ("half_segment", half_segment), ("group", group)):
        _check_int(name, value)
    if n > 96:
        raise ValueError(f"n must be at most 96 for a readable picture, got {n}")
    if not latent < n or not compressed <= n - latent or (n - latent) % split or n % half_segment or n % group \
            or group % 2:
        raise ValueError(f"sizes do not fit n={n}: need latent < n, compressed <= n - latent, split dividing "
                         f"n - latent, half_segment and (even) group dividing n")
    _, _, _, patches, _, _ = _mpl()
    panels = _pattern_panels(n, latent, compressed, split, half_segment, group)
    fig = _figure(17, 8.4)
    axes = fig.subplots(2, 5)
    for ax, (title, subtitle, pats, stream) in zip(axes.ravel(), panels):
        _draw_pattern(ax, pats, f"{title}\n{subtitle}", stream)
    handles = [patches.Patch(facecolor=c, edgecolor="#adb5bd", label=l) for c, l in (
        (VISIBLE, "visible (unmasked); LongLoRA: unshifted heads"), (SHIFTED, "LongLoRA: shifted heads"),
        (BOTH, "LongLoRA: both head kinds"), (LEAK, "visible future token (S2 roll leak)"),
        (MASKED, "computed but masked"), (EMPTY, "never computed"))]
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8.5, frameon=False, bbox_to_anchor=(0.5, 0.015))
    fig.suptitle(f"Attention patterns of every architecture, one layer, n = {n} (outlines: the score matrices "
                 f"the code materialises)", fontsize=12, y=0.985)
    fig.subplots_adjust(left=0.035, right=0.985, top=0.88, bottom=0.14, wspace=0.36, hspace=0.55)
    _footer(fig, f"minicp.viz.patterns_figure(n={n}, latent={latent}, compressed={compressed}, split={split}, "
                 f"half_segment={half_segment}, group={group})")
    return fig


# ----------------------------------------------------------------------------------------------------
# 2. Receptive fields of every architecture after 1..k layers
# ----------------------------------------------------------------------------------------------------

def _layer_colours(k):
    matplotlib = _mpl()[0]
    cmap = matplotlib.colormaps["viridis"]
    # layer 1 dark, each later layer lighter: the newest context is the brightest
    return [cmap(0.1 + 0.85 * j / max(k - 1, 1))[:3] for j in range(k)]


def _first_reached(fields):
    """(rows, n) int: the first layer k >= 1 at which the input position reaches the row (0: never)."""
    last = fields[-1]
    out = onp.zeros((last.rows, last.n), dtype=int)
    for k in range(len(fields) - 1, 0, -1):
        out[fields[k].mask()] = k
    return out


def receptive_fields_figure(n=32, layers=3, *, latent=12, compressed=6, split=5, half_segment=4, group=8):
    """Every architecture's receptive field after 1..``layers`` layers, coloured by the layer at which
    each input position first reaches each output row (minicp.analysis.receptive, derived from the patterns)."""
    n = _check_int("n", n)
    layers = _check_int("layers", layers)
    if n > 96 or layers > 8:
        raise ValueError(f"n must be at most 96 and layers at most 8 for a readable picture, got n={n}, layers={layers}")
    _, _, colors, patches, _, _ = _mpl()
    configs = [
        ("Transformer", ModelConfig(arch="transformer", seq_len=n)),
        ("PerceiverAR", ModelConfig(arch="perceiver_ar", seq_len=n, latent=latent)),
        ("Double Attention", ModelConfig(arch="double", seq_len=n, latent=latent)),
        ("Compressed (official residual)", ModelConfig(arch="compressed", seq_len=n, latent=latent,
                                                       compressed=compressed)),
        ("s-Split Double", ModelConfig(arch="s_split", seq_len=n, latent=latent, split=split)),
        (f"ECP (m={half_segment})", ModelConfig(arch="ecp", seq_len=n, half_segment=half_segment)),
        (f"LongLoRA varlen (g={group})", ModelConfig(arch="longlora", seq_len=n, group=group)),
        (f"LongLoRA roll (g={group})", ModelConfig(arch="longlora", seq_len=n, group=group, shift="roll")),
    ]
    cols = _layer_colours(layers)
    fig = _figure(14, 7.6)
    axes = fig.subplots(2, 4)
    for ax, (title, cfg) in zip(axes.ravel(), configs):
        fields = receptive_field_by_layer(cfg, layers=layers)
        first = _first_reached(fields)
        last = fields[-1]
        image = onp.ones(first.shape + (3,))
        for k in range(1, layers + 1):
            image[first == k] = cols[k - 1]
        pos = last.positions
        for r in range(last.rows):                     # tokens in the future of a row: faint grey
            if pos[r] >= 0:
                image[r, pos[r] + 1:][first[r, pos[r] + 1:] == 0] = _rgb(GREY)
        ylabel = "output row" + {"perceiver_ar": f" (token {pos[0]} + row)",
                                 "compressed": f" ({cfg.compressed} slots, then tokens {cfg.history}..)"}.get(cfg.arch, "")
        _cells(ax, last.rows, n, image, "input token", ylabel)
        future = last.sees_future()
        if cfg.arch in ("double", "s_split"):           # bidirectional history rows, never scored (SPEC B18)
            note = f"\nhistory rows bidirectional ({int(future.sum())} rows; never scored)"
        elif future.any():
            note = f"\nrows 0..{int(onp.nonzero(future)[0].max())} see future tokens (leak)"
        else:
            note = ""
        ax.set_title(f"{title}{note}", fontsize=9)
    handles = [patches.Patch(facecolor=cols[k - 1], label=f"reached after layer {k}") for k in range(1, layers + 1)]
    handles.append(patches.Patch(facecolor=GREY, edgecolor="#adb5bd", label="future token, not reached"))
    fig.legend(handles=handles, loc="lower center", ncol=layers + 1, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.02))
    fig.suptitle(f"Receptive fields after 1 to {layers} layers (n = {n}, L = {latent}, p = {compressed}, "
                 f"c = {split}, m = {half_segment}, g = {group})", fontsize=12, y=0.98)
    fig.subplots_adjust(left=0.05, right=0.99, top=0.875, bottom=0.13, wspace=0.3, hspace=0.38)
    _footer(fig, f"minicp.viz.receptive_fields_figure(n={n}, layers={layers})")
    return fig


# ----------------------------------------------------------------------------------------------------
# 3. Figure 1(b-d): ECP's sparse pattern in layer 1, then the receptive field after layers 2, 3, ...
# ----------------------------------------------------------------------------------------------------

def ecp_receptive_animation(n=64, half_segment=8, *, layers=None, interval=1100):
    """Animation: frame k shows ECP's receptive field after k layers (k = 1 is the layer-1 pattern).

    Left: output token i (rows) x input token j (columns), coloured by the layer at which j first
    reaches i; the half segments are outlined. Right: the share of causal pairs (j <= i) reached so
    far and the last token's context, per layer. ``layers`` defaults to N_s - 1 (the whole sequence).
    """
    n, m = _check_int("n", n), _check_int("half_segment", half_segment)
    if n % m or n // m < 2:
        raise ValueError(f"half_segment {m} must divide n {n} into at least two half segments")
    if n > 256:
        raise ValueError(f"n must be at most 256 for a readable animation, got {n}")
    N = n // m
    K = N - 1 if layers is None else _check_int("layers", layers)
    _, animation, _, patches, _, _ = _mpl()
    fields = receptive_field_by_layer("ecp", seq_len=n, half_segment=m, layers=K)
    first = _first_reached(fields)
    cols = _layer_colours(K)
    causal = n * (n + 1) // 2
    share = [fields[k].sizes().sum() / causal for k in range(K + 1)]
    last_ctx = [int(fields[k].sizes()[-1]) for k in range(K + 1)]

    fig = _figure(11.5, 5.6, dpi=90)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.15, 1]))
    image = onp.ones((n, n, 3))
    im = ax.imshow(image, interpolation="nearest", extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    for t in range(N):                                   # half-segment grid
        ax.axhline(t * m - 0.5, color="#adb5bd", lw=0.5)
        ax.axvline(t * m - 0.5, color="#adb5bd", lw=0.5)
    ticks = range(0, n, m)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=8)
    ax.set_xlabel("input token j", fontsize=9)
    ax.set_ylabel("output token i", fontsize=9)
    title = ax.set_title("", fontsize=10)

    ks = onp.arange(1, K + 1)
    ax2.plot(ks, [100 * s for s in share[1:]], "-o", color=VISIBLE, ms=4, label="causal pairs (j ≤ i) reached, %")
    ax2.plot(ks, [100 * c / n for c in last_ctx[1:]], "-s", color=SHIFTED, ms=4,
             label=f"last token's context, % of n (min(n, (k+1)m))")
    marker, = ax2.plot([], [], "o", ms=11, mfc="none", mec=OUTPUT, mew=2)
    if N - 1 <= K:
        ax2.axvline(N - 1, color="#868e96", ls=":", lw=1)
        ax2.text(N - 1.1, 3, f"N_s - 1 = {N - 1} layers:\nevery token sees\nits whole prefix", fontsize=8,
                 color="#495057", va="bottom", ha="right")
    ax2.set_xlim(0.5, K + 0.5)
    ax2.set_ylim(0, 105)
    ax2.set_xticks(ks)
    ax2.set_xlabel("layers k", fontsize=9)
    ax2.set_ylabel("%", fontsize=9)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="upper left")
    ax2.tick_params(labelsize=8)
    handles = [patches.Patch(facecolor=cols[k - 1], label=f"layer {k}") for k in range(1, K + 1)]
    fig.legend(handles=handles, loc="lower left", ncol=min(K, 4), fontsize=8, frameon=False,
               title="input token first reaches the output in", title_fontsize=8, bbox_to_anchor=(0.06, 0.03))
    fig.suptitle(f"ECP receptive field, layer by layer (paper Figure 1(b-d)): n = {n}, half segment m = {m} "
                 f"(segment s = {2 * m}), N_s = {N}", fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.25, wspace=0.22)
    _footer(fig, f"minicp.viz.ecp_receptive_animation(n={n}, half_segment={m})")

    def frame(k):
        img = onp.ones((n, n, 3))
        img[onp.triu(onp.ones((n, n), dtype=bool), 1)] = _rgb(GREY)
        for j in range(1, k + 1):
            img[first == j] = cols[j - 1]
        im.set_data(img)
        what = "layer 1: the sparse pattern (ATTN + PAR blocks)" if k == 1 else \
            f"after {k} layers: {k} half segments back + own"
        title.set_text(f"k = {k}: {what}")
        marker.set_data([k], [100 * share[k]])
        return im, title, marker

    frame(1)
    return animation.FuncAnimation(fig, frame, frames=range(1, K + 1), interval=interval, blit=False)


# ----------------------------------------------------------------------------------------------------
# 4. Figure 6: half segments across layers, the context of one output block
# ----------------------------------------------------------------------------------------------------

def ecp_half_segments_animation(num_half_segments=6, layers=5, *, output=None, interval=1200):
    """Animation of paper Figure 6: rows are layers (input tokens at the bottom), columns half segments.

    The output half segment ``output`` (default: the last) of the top layer is red; frame f colours in
    yellow the half segments of layer ``layers - f`` it depends on: [output - f, output] (the PAR block
    of half segment t reads t - 1 and t one layer below; t = 0 is the ATTN block and reads only itself).
    Derived from ``minicp.analysis.receptive`` at one token per half segment's worth of rows.
    """
    N = _check_int("num_half_segments", num_half_segments, low=2)
    K = _check_int("layers", layers)
    T = N - 1 if output is None else output
    if isinstance(T, bool) or not isinstance(T, (int, onp.integer)) or not 0 <= T < N:
        raise ValueError(f"output must be a half-segment index in [0, {N}), got {output!r}")
    if N > 16 or K > 10:
        raise ValueError(f"num_half_segments must be at most 16 and layers at most 10, got {N}, {K}")
    _, animation, _, patches, _, _ = _mpl()
    # Which half segments of layer K - d reach the output block: from the receptive field after d layers
    # (m = 2 tokens per half segment is enough to see block granularity; every token of the block counts).
    m = 2
    fields = receptive_field_by_layer("ecp", seq_len=N * m, half_segment=m, layers=K)
    reach = []
    for d in range(K + 1):
        mask = fields[d].mask()[T * m:(T + 1) * m].any(axis=0)
        reach.append(sorted({int(j) // m for j in onp.nonzero(mask)[0]}))

    fig = _figure(10.5, 6.2, dpi=90)
    ax = fig.add_axes([0.1, 0.15, 0.86, 0.68])
    w, h = 0.82, 0.5
    boxes = {}
    for layer in range(K + 1):
        for t in range(N):
            box = patches.FancyBboxPatch((t - w / 2, layer - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.06",
                                         facecolor=GREY, edgecolor=EDGE, linewidth=1)
            ax.add_patch(box)
            boxes[layer, t] = box
            kind = "tokens" if layer == 0 else ("ATTN" if t == 0 else "PAR")
            ax.text(t, layer, kind, ha="center", va="center", fontsize=8,
                    color="white" if (layer, t) == (K, T) else "#343a40")
    lines = []
    for layer in range(1, K + 1):                      # the PAR wiring: t reads t - 1 and t below
        for t in range(N):
            for src in ((t - 1, t) if t else (t,)):
                ln, = ax.plot([t, src], [layer - h / 2, layer - 1 + h / 2], color="#ced4da", lw=0.8, zorder=0)
                lines.append((layer, t, src, ln))
    ax.set_xlim(-0.7, N - 0.3)
    ax.set_ylim(-1.25, K + 0.6)
    ax.set_yticks(range(K + 1))
    ax.set_yticklabels(["input"] + [f"layer {k}" for k in range(1, K + 1)], fontsize=9)
    ax.set_xticks(range(N))
    ax.set_xticklabels([f"half segment {t}" if N <= 8 else f"h.s. {t}" for t in range(N)], fontsize=8)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for s in range(0, N, 2):                           # paper segments = pairs of half segments
        ax.annotate("", xy=(s - 0.45, -0.85), xytext=(min(s + 1, N - 1) + 0.45, -0.85),
                    arrowprops=dict(arrowstyle="-", color="#868e96", lw=1.2))
        ax.text((s + min(s + 1, N - 1)) / 2, -1.15, f"paper segment {s // 2} (s = 2m)", ha="center", fontsize=8,
                color="#495057")
    status = fig.text(0.5, 0.915, "", ha="center", fontsize=10)
    fig.suptitle(f"ECP, paper Figure 6: the context accumulated by output half segment {T} of layer {K}",
                 fontsize=12, y=0.98)
    handles = [patches.Patch(facecolor=OUTPUT, label="output block"),
               patches.Patch(facecolor=CONTEXT, label="accumulated context"),
               patches.Patch(facecolor=GREY, edgecolor=EDGE, label="not (yet) reached")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.03))
    _footer(fig, f"minicp.viz.ecp_half_segments_animation(num_half_segments={N}, layers={K}, output={T})")

    def frame(f):
        f = min(f, K)
        for (layer, t), box in boxes.items():
            d = K - layer                                # layers below the output
            if layer == K and t == T:
                box.set_facecolor(OUTPUT)
            elif d <= f and t in reach[d]:
                box.set_facecolor(CONTEXT)
            else:
                box.set_facecolor(GREY)
        for layer, t, src, ln in lines:
            d = K - layer
            on = d < f and t in reach[d] and src in reach[d + 1]
            ln.set_color(EDGE if on else "#ced4da")
            ln.set_linewidth(1.6 if on else 0.8)
        lo = reach[f][0]
        below = "the input tokens" if f == K else f"layer {K - f}"
        status.set_text(f"{f} layer(s) down, {below}: half segments {lo}..{T} reach the output"
                        + ("  (all of its past)" if lo == 0 else ""))
        return []

    frame(0)
    return animation.FuncAnimation(fig, frame, frames=range(K + 2), interval=interval, blit=False)


# ----------------------------------------------------------------------------------------------------
# 5. Attention steps: scaling with n, and Table 8
# ----------------------------------------------------------------------------------------------------

def _scaling_rows(l, h, s, p, c, g):
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


def steps_scaling_figure(seq_lens=None, *, layers=48, heads=24, segment=256, compressed=256, split=256,
                         group=256):
    """Attention steps (computed score entries, whole model) against sequence length, log-log, and the
    same as a percentage of full attention. Table 8's sizes by default; its n = 4096 is marked."""
    layers, heads = _check_int("layers", layers), _check_int("heads", heads)
    for name, value in (("segment", segment), ("compressed", compressed), ("split", split), ("group", group)):
        _check_int(name, value)
    if seq_lens is None:
        seq_lens = [2 ** k for k in range(9, 18)]
    seq_lens = [_check_int("seq_lens", n) for n in seq_lens]
    fig = _figure(13, 5.4)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.25, 1]))
    for label, arch, kw, colour, style in _scaling_rows(layers, heads, segment, compressed, split, group):
        xs, ys, pct = [], [], []
        for n in seq_lens:
            sizes = {k: (n // 2 if v == "n/2" else v) for k, v in kw.items()}
            try:
                v = count_attention_steps(arch, seq_len=n, layers=layers, heads=heads, **sizes)
            except ValueError:
                continue                                   # sizes that do not fit this n
            xs.append(n)
            ys.append(v)
            pct.append(100 * v / (layers * heads * n * n))
        wide = dict(lw=5, alpha=0.45, marker=None) if arch == "ecp" else dict(lw=1.6, marker="o", ms=3)
        ax.plot(xs, ys, style, color=colour, label=label, **wide)
        ax2.plot(xs, pct, style, color=colour, label=label, **wide)
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
    if group == segment:
        x = seq_lens[-2]
        y = count_attention_steps("ecp", seq_len=x, layers=layers, heads=heads, segment=segment)
        ax.annotate(f"ECP (s = {segment}) = S2 varlen (g = {group}) exactly;\nroll adds m² per head and layer",
                    xy=(x, y), xytext=(x / 7, y / 70), fontsize=8, color="#495057",
                    arrowprops=dict(arrowstyle="->", color="#868e96"))
    fig.suptitle("Attention steps versus sequence length (SPEC section 5 closed forms; Table 8's l, h, s, p)",
                 fontsize=12)
    fig.subplots_adjust(left=0.07, right=0.99, top=0.86, bottom=0.13, wspace=0.22)
    _footer(fig, f"minicp.viz.steps_scaling_figure(layers={layers}, heads={heads}, segment={segment}, "
                 f"compressed={compressed}, split={split}, group={group})")
    return fig


def table8_figure():
    """Table 8 as bars: the paper's printed millions next to the code-faithful computed and unmasked
    counts (minicp.analysis.steps.table8), with each row's verdict."""
    _, _, _, patches, _, _ = _mpl()
    from matplotlib.transforms import blended_transform_factory as blend
    rows = table8()
    fig = _figure(13, 6.6)
    ax = fig.add_axes([0.2, 0.15, 0.62, 0.72])
    y = onp.arange(len(rows))[::-1]
    hgt = 0.26
    for yi, r in zip(y, rows):
        paper = r["paper_millions"]
        if paper is not None:
            ax.barh(yi + hgt, paper, hgt, color="#adb5bd", hatch="//", edgecolor="#6c757d", lw=0.5)
            ax.text(paper, yi + hgt, f" {paper:,}M ({r['paper_percent']}%)", va="center", fontsize=8)
        comp, unm = r["computed"] / 1e6, r["unmasked"] / 1e6
        ax.barh(yi, comp, hgt, color=VISIBLE)
        ax.text(comp, yi, f" {comp:,.1f}M ({r['percent_of_full']:.2f}%)", va="center", fontsize=8)
        ax.barh(yi - hgt, unm, hgt, color="#8fb8e8")
        ax.text(unm, yi - hgt, f" {unm:,.1f}M", va="center", fontsize=8, color="#495057")
        colour = {"exact": "#2b8a3e", "not reproduced": "#c92a2a"}.get(r["verdict"], "#495057")
        verdict = r["verdict"]
        if paper is not None and verdict != "exact":
            verdict += f"\ncode {100 * (comp / paper - 1):+.1f}% vs paper"
        ax.text(1.02, yi, verdict, transform=blend(ax.transAxes, ax.transData), ha="left", va="center",
                fontsize=9.5, color=colour, weight="bold", clip_on=False)
    ax.set_yticks(y)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=9.5)
    ax.set_xlabel("attention steps, millions (all heads and layers)", fontsize=10)
    ax.set_xlim(0, max(r["computed"] / 1e6 for r in rows) * 1.22)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(labelsize=9)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    ax.text(1.02, 1.0, "verdict", transform=ax.transAxes, ha="left", va="bottom", fontsize=9.5, weight="bold",
            color="#343a40")
    t = TABLE8_SIZES
    handles = [patches.Patch(facecolor="#adb5bd", hatch="//", edgecolor="#6c757d", label="paper (as printed, truncated)"),
               patches.Patch(facecolor=VISIBLE, label="code-faithful, computed entries (% of full)"),
               patches.Patch(facecolor="#8fb8e8", label="code-faithful, unmasked entries")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.02))
    fig.suptitle(f"Table 8 reconciled: n = {t['n']}, l = {t['l']}, h = {t['h']}, s = {t['s']} (ECP m = {t['s'] // 2}), "
                 f"p = {t['p']}, L = {t['L']}, s-Split c = {t['s']}", fontsize=12, y=0.965)
    _footer(fig, "minicp.viz.table8_figure()")
    return fig


# ----------------------------------------------------------------------------------------------------
# Everything in figures/
# ----------------------------------------------------------------------------------------------------

# file name -> (function, keyword arguments, what it shows)
FIGURES = {
    "patterns.png": (patterns_figure, {}, "the declared attention pattern of every architecture, side by side"),
    "receptive_fields.png": (receptive_fields_figure, {}, "every architecture's receptive field after 1-3 layers"),
    "ecp_receptive_field.gif": (ecp_receptive_animation, {},
                                "paper Figure 1(b-d): ECP's sparse layer-1 pattern, then the receptive field "
                                "after 2, 3, ... layers"),
    "ecp_half_segments.gif": (ecp_half_segments_animation, {},
                              "paper Figure 6: half segments across layers; the context accumulated by one "
                              "output block in yellow"),
    "attention_steps_scaling.png": (steps_scaling_figure, {},
                                    "attention steps versus sequence length for every architecture (log-log) "
                                    "and as % of full attention"),
    "table8.png": (table8_figure, {}, "Table 8: the paper's numbers against the code-faithful counts"),
}


def _save(obj, path, fps, dpi=None):
    _, animation, _, _, _, _ = _mpl()
    if isinstance(obj, animation.Animation):
        obj.save(path, writer=animation.PillowWriter(fps=fps), dpi=dpi)
    else:
        obj.savefig(path, dpi=dpi or "figure")


def make_all(out_dir="figures", quick=False, only=None):
    """Write every figure of ``FIGURES`` to ``out_dir`` (created if missing); returns the paths.

    ``quick``: smaller animations and half the resolution, for tests. ``only``: file names to make.
    """
    if not isinstance(quick, bool):
        raise ValueError(f"quick must be True or False, got {quick!r}")
    if only is not None and (isinstance(only, str) or not all(isinstance(x, str) for x in only)):
        raise ValueError(f"only must be a list of file names, got {only!r}")
    names = list(FIGURES) if only is None else list(only)
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        raise ValueError(f"only: unknown figure(s) {unknown}; choose from {list(FIGURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        fn, kwargs, _ = FIGURES[name]
        kwargs = dict(kwargs)
        if quick and fn is ecp_receptive_animation:
            kwargs.update(n=32, half_segment=8)
        if quick and fn is ecp_half_segments_animation:
            kwargs.update(num_half_segments=4, layers=3)
        obj = fn(**kwargs)
        _save(obj, out / name, fps=1, dpi=50 if quick else None)
        written.append(out / name)
    return written
