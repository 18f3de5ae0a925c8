"""Receptive fields: every architecture after 1..k layers, and the ECP animations of the paper's Figures
1(b-d) and 6. Fields come from ``minicp.analysis.receptive`` (derived from the declared patterns)."""

import numpy as onp

from minicp.analysis.receptive import receptive_field_by_layer
from minicp.config import ModelConfig
from minicp.validate import positive_int
from minicp.viz.style import CONTEXT, EDGE, GREY, OUTPUT, cells, footer, layer_colours, mpl, new_figure, rgb

__all__ = ["receptive_fields_figure", "ecp_receptive_animation", "ecp_half_segments_animation"]

LINE_DARK, LINE_LIGHT = "#343a40", "#868e96"  # the curves of the animation's right panel


def _first_reached(fields):
    """(rows, n) int: the first layer k >= 1 at which the input position reaches the row (0: never)."""
    last = fields[-1]
    out = onp.zeros((last.rows, last.n), dtype=int)
    for k in range(len(fields) - 1, 0, -1):
        out[fields[k].mask()] = k
    return out


def _field_configs(n, latent, compressed, split, half_segment, group):
    return [
        ("Transformer", ModelConfig(arch="transformer", seq_len=n)),
        ("PerceiverAR", ModelConfig(arch="perceiver_ar", seq_len=n, latent=latent)),
        ("Double Attention", ModelConfig(arch="double", seq_len=n, latent=latent)),
        (
            "Compressed (official residual)",
            ModelConfig(arch="compressed", seq_len=n, latent=latent, compressed=compressed),
        ),
        ("s-Split Double", ModelConfig(arch="s_split", seq_len=n, latent=latent, split=split)),
        (f"ECP (m={half_segment})", ModelConfig(arch="ecp", seq_len=n, half_segment=half_segment)),
        (f"LongLoRA varlen (g={group})", ModelConfig(arch="longlora", seq_len=n, group=group)),
        (f"LongLoRA roll (g={group})", ModelConfig(arch="longlora", seq_len=n, group=group, shift="roll")),
    ]


def _draw_field(ax, title, cfg, layers, cols):
    """One panel: output rows x input tokens, coloured by the layer that first connects them."""
    fields = receptive_field_by_layer(cfg, layers=layers)
    first = _first_reached(fields)
    last = fields[-1]
    image = onp.ones(first.shape + (3,))
    for k in range(1, layers + 1):
        image[first == k] = cols[k - 1]
    pos = last.positions
    for r in range(last.rows):  # tokens in the future of a row: faint grey
        if pos[r] >= 0:
            image[r, pos[r] + 1 :][first[r, pos[r] + 1 :] == 0] = rgb(GREY)
    ylabel = "output row" + {
        "perceiver_ar": f" (token {pos[0]} + row)",
        "compressed": f" ({cfg.compressed} slots, then tokens {cfg.history}..)",
    }.get(cfg.arch, "")
    cells(ax, last.rows, cfg.seq_len, image, "input token", ylabel)
    future = last.sees_future()
    if cfg.arch in ("double", "s_split"):
        # the bidirectional (unmasked) history rows (docs/official-code.md#bidirectional-history-rows)
        note = f"\nhistory rows bidirectional ({int(future.sum())} rows; never scored)"
    elif future.any():
        note = f"\nrows 0..{int(onp.nonzero(future)[0].max())} see future tokens (leak)"
    else:
        note = ""
    ax.set_title(f"{title}{note}", fontsize=9)


def receptive_fields_figure(n=32, layers=3, *, latent=12, compressed=6, split=5, half_segment=4, group=8):
    """Every architecture's receptive field after 1..``layers`` layers, coloured by the layer at which
    each input position first reaches each output row (minicp.analysis.receptive, derived from the patterns).
    White: a past token the row never reaches; grey: a future token it does not reach."""
    n = positive_int("n", n)
    layers = positive_int("layers", layers)
    if n > 96 or layers > 8:
        raise ValueError(
            f"n must be at most 96 and layers at most 8 for a readable picture, got n={n}, layers={layers}"
        )
    patches = mpl().patches
    cols = layer_colours(layers)
    fig = new_figure(14, 7.6)
    axes = fig.subplots(2, 4)
    for ax, (title, cfg) in zip(axes.ravel(), _field_configs(n, latent, compressed, split, half_segment, group)):
        _draw_field(ax, title, cfg, layers, cols)
    handles = [patches.Patch(facecolor=cols[k - 1], label=f"reached after layer {k}") for k in range(1, layers + 1)]
    handles.append(patches.Patch(facecolor="white", edgecolor="#adb5bd", label="past token, never reached"))
    handles.append(patches.Patch(facecolor=GREY, edgecolor="#adb5bd", label="future token, not reached"))
    fig.legend(
        handles=handles, loc="lower center", ncol=layers + 2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.02)
    )
    fig.suptitle(
        f"Receptive fields after 1 to {layers} layers (n = {n}, L = {latent}, p = {compressed}, "
        f"c = {split}, m = {half_segment}, g = {group})",
        fontsize=12,
        y=0.98,
    )
    fig.subplots_adjust(left=0.05, right=0.99, top=0.875, bottom=0.13, wspace=0.3, hspace=0.38)
    footer(fig, f"minicp.viz.receptive_fields_figure(n={n}, layers={layers})")
    return fig


# ----------------------------------------------------------------------------------------------------
# Figure 1(b-d): ECP's sparse pattern in layer 1, then the receptive field after layers 2, 3, ...
# ----------------------------------------------------------------------------------------------------


def _share_panel(ax, share, last_ctx, n, N, K):
    """Right panel: % of causal pairs reached and the last token's context per layer; returns the marker."""
    ks = onp.arange(1, K + 1)
    ax.plot(ks, [100 * s for s in share[1:]], "-o", color=LINE_DARK, ms=4, label="causal pairs (j ≤ i) reached, %")
    ax.plot(
        ks,
        [100 * c / n for c in last_ctx[1:]],
        "--s",
        color=LINE_LIGHT,
        ms=4,
        label="last token's context, % of n (min(n, (k+1)m))",
    )
    (marker,) = ax.plot([], [], "o", ms=11, mfc="none", mec=OUTPUT, mew=2)
    if N - 1 <= K:
        ax.axvline(N - 1, color="#868e96", ls=":", lw=1)
        ax.text(
            N - 1.1,
            3,
            f"N_s - 1 = {N - 1} layers:\nevery token sees\nits whole prefix",
            fontsize=8,
            color="#495057",
            va="bottom",
            ha="right",
        )
    ax.set_xlim(0.5, K + 0.5)
    ax.set_ylim(0, 105)
    ax.set_xticks(ks)
    ax.set_xlabel("layers k", fontsize=9)
    ax.set_ylabel("%", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.tick_params(labelsize=8)
    return marker


def _field_axes(ax, n, m):
    """Left panel: an empty n x n image with the half-segment grid; returns the image artist."""
    im = ax.imshow(onp.ones((n, n, 3)), interpolation="nearest", extent=(-0.5, n - 0.5, n - 0.5, -0.5))
    for t in range(n // m):
        ax.axhline(t * m - 0.5, color="#adb5bd", lw=0.5)
        ax.axvline(t * m - 0.5, color="#adb5bd", lw=0.5)
    ax.set_xticks(range(0, n, m))
    ax.set_yticks(range(0, n, m))
    ax.tick_params(labelsize=8)
    ax.set_xlabel("input token j", fontsize=9)
    ax.set_ylabel("output token i", fontsize=9)
    return im


def ecp_receptive_animation(n=64, half_segment=8, *, layers=None, interval=1100):
    """Animation: frame k shows ECP's receptive field after k layers (k = 1 is the layer-1 pattern).

    Left: output token i (rows) x input token j (columns), coloured by the layer at which j first
    reaches i (a qualitative palette: neighbouring layers differ in hue); the half segments are outlined.
    Right: the share of causal pairs (j <= i) reached so far and the last token's context, per layer.
    ``layers`` defaults to N_s - 1 (the whole sequence).
    """
    n, m = positive_int("n", n), positive_int("half_segment", half_segment)
    if n % m or n // m < 2:
        raise ValueError(f"half_segment {m} must divide n {n} into at least two half segments")
    if n > 256:
        raise ValueError(f"n must be at most 256 for a readable animation, got {n}")
    N = n // m
    K = N - 1 if layers is None else positive_int("layers", layers)
    lib = mpl()
    fields = receptive_field_by_layer("ecp", seq_len=n, half_segment=m, layers=K)
    first = _first_reached(fields)
    cols = layer_colours(K)
    causal = n * (n + 1) // 2
    share = [fields[k].sizes().sum() / causal for k in range(K + 1)]
    last_ctx = [int(fields[k].sizes()[-1]) for k in range(K + 1)]

    fig = new_figure(11.5, 5.6, dpi=90)
    ax, ax2 = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1.15, 1]))
    im = _field_axes(ax, n, m)
    title = ax.set_title("", fontsize=10)
    marker = _share_panel(ax2, share, last_ctx, n, N, K)
    handles = [lib.patches.Patch(facecolor=cols[k - 1], label=f"layer {k}") for k in range(1, K + 1)]
    fig.legend(
        handles=handles,
        loc="lower left",
        ncol=min(K, 4),
        fontsize=8,
        frameon=False,
        title="input token first reaches the output in",
        title_fontsize=8,
        bbox_to_anchor=(0.06, 0.03),
    )
    fig.suptitle(
        f"ECP receptive field, layer by layer (paper Figure 1(b-d)): n = {n}, half segment m = {m} "
        f"(segment s = {2 * m}), N_s = {N}",
        fontsize=11,
    )
    fig.subplots_adjust(left=0.06, right=0.98, top=0.88, bottom=0.25, wspace=0.22)
    footer(fig, f"minicp.viz.ecp_receptive_animation(n={n}, half_segment={m})")
    future = onp.triu(onp.ones((n, n), dtype=bool), 1)

    def frame(k):
        img = onp.ones((n, n, 3))
        img[future] = rgb(GREY)
        for j in range(1, k + 1):
            img[first == j] = cols[j - 1]
        im.set_data(img)
        what = (
            "layer 1: the sparse pattern (ATTN + PAR blocks)"
            if k == 1
            else f"after {k} layers: {k} half segments back + own"
        )
        title.set_text(f"k = {k}: {what}")
        marker.set_data([k], [100 * share[k]])
        return im, title, marker

    frame(1)
    return lib.animation.FuncAnimation(fig, frame, frames=range(1, K + 1), interval=interval, blit=False)


# ----------------------------------------------------------------------------------------------------
# Figure 6: half segments across layers, the context of one output block
# ----------------------------------------------------------------------------------------------------


def _half_segment_reach(N, K, T):
    """reach[d]: the half segments of layer K - d that output half segment T of layer K depends on.

    From the receptive field after d layers at m = 2 tokens per half segment (enough to see the block
    granularity; every token of the output block counts)."""
    m = 2
    fields = receptive_field_by_layer("ecp", seq_len=N * m, half_segment=m, layers=K)
    reach = []
    for d in range(K + 1):
        mask = fields[d].mask()[T * m : (T + 1) * m].any(axis=0)
        reach.append(sorted({int(j) // m for j in onp.nonzero(mask)[0]}))
    return reach


def _draw_half_segments(ax, N, K, T, patches):
    """Boxes (layer, t) and PAR wiring lines (layer, t, src, line); axes dressed. Returns (boxes, lines)."""
    w, h = 0.82, 0.5
    boxes, lines = {}, []
    for layer in range(K + 1):
        for t in range(N):
            boxes[layer, t] = ax.add_patch(
                patches.FancyBboxPatch(
                    (t - w / 2, layer - h / 2),
                    w,
                    h,
                    boxstyle="round,pad=0.02,rounding_size=0.06",
                    facecolor=GREY,
                    edgecolor=EDGE,
                    linewidth=1,
                )
            )
            kind = "tokens" if layer == 0 else ("ATTN" if t == 0 else "PAR")
            ax.text(
                t,
                layer,
                kind,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if (layer, t) == (K, T) else "#343a40",
            )
            for src in ((t - 1, t) if t else (t,)) if layer else ():  # the PAR block reads t - 1 and t below
                (ln,) = ax.plot([t, src], [layer - h / 2, layer - 1 + h / 2], color="#ced4da", lw=0.8, zorder=0)
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
    for s in range(0, N, 2):  # paper segments = pairs of half segments
        ax.annotate(
            "",
            xy=(s - 0.45, -0.85),
            xytext=(min(s + 1, N - 1) + 0.45, -0.85),
            arrowprops=dict(arrowstyle="-", color="#868e96", lw=1.2),
        )
        ax.text(
            (s + min(s + 1, N - 1)) / 2,
            -1.15,
            f"paper segment {s // 2} (s = 2m)",
            ha="center",
            fontsize=8,
            color="#495057",
        )
    return boxes, lines


def ecp_half_segments_animation(num_half_segments=6, layers=5, *, output=None, interval=1200):
    """Animation of paper Figure 6: rows are layers (input tokens at the bottom), columns half segments.

    The output half segment ``output`` (default: the last) of the top layer is red; frame f colours in
    yellow the half segments of layer ``layers - f`` it depends on: [output - f, output] (the PAR block
    of half segment t reads t - 1 and t one layer below; t = 0 is the ATTN block and reads only itself).
    Derived from ``minicp.analysis.receptive`` at one token per half segment's worth of rows.
    """
    N = positive_int("num_half_segments", num_half_segments)
    K = positive_int("layers", layers)
    if N < 2:
        raise ValueError(f"num_half_segments must be at least 2, got {N}")
    T = N - 1 if output is None else output
    if isinstance(T, bool) or not isinstance(T, (int, onp.integer)) or not 0 <= T < N:
        raise ValueError(f"output must be a half-segment index in [0, {N}), got {output!r}")
    if N > 16 or K > 10:
        raise ValueError(f"num_half_segments must be at most 16 and layers at most 10, got {N}, {K}")
    lib = mpl()
    reach = _half_segment_reach(N, K, T)
    fig = new_figure(10.5, 6.2, dpi=90)
    ax = fig.add_axes([0.1, 0.15, 0.86, 0.68])
    boxes, lines = _draw_half_segments(ax, N, K, T, lib.patches)
    status = fig.text(0.5, 0.915, "", ha="center", fontsize=10)
    fig.suptitle(
        f"ECP, paper Figure 6: the context accumulated by output half segment {T} of layer {K}", fontsize=12, y=0.98
    )
    handles = [
        lib.patches.Patch(facecolor=OUTPUT, label="output block"),
        lib.patches.Patch(facecolor=CONTEXT, label="accumulated context"),
        lib.patches.Patch(facecolor=GREY, edgecolor=EDGE, label="not (yet) reached"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.03))
    footer(fig, f"minicp.viz.ecp_half_segments_animation(num_half_segments={N}, layers={K}, output={T})")

    def frame(f):
        f = min(f, K)
        for (layer, t), box in boxes.items():
            d = K - layer  # layers below the output
            box.set_facecolor(OUTPUT if (layer, t) == (K, T) else CONTEXT if d <= f and t in reach[d] else GREY)
        for layer, t, src, ln in lines:
            d = K - layer
            on = d < f and t in reach[d] and src in reach[d + 1]
            ln.set_color(EDGE if on else "#ced4da")
            ln.set_linewidth(1.6 if on else 0.8)
        lo = reach[f][0]
        below = "the input tokens" if f == K else f"layer {K - f}"
        status.set_text(
            f"{f} layer(s) down, {below}: half segments {lo}..{T} reach the output"
            + ("  (all of its past)" if lo == 0 else "")
        )
        return []

    frame(0)
    return lib.animation.FuncAnimation(fig, frame, frames=range(K + 2), interval=interval, blit=False)
