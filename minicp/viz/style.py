"""Shared pieces of every figure: matplotlib (imported lazily), colours, axes helpers and atomic saving.

matplotlib is an optional dependency, so it is imported inside ``mpl()`` only: ``import minicp.viz``
works without it and the first figure call raises an ImportError that says what to install.
"""

import types
from pathlib import Path

import numpy as onp

from minicp.files import atomic_write

__all__ = [
    "VISIBLE",
    "MASKED",
    "EMPTY",
    "SHIFTED",
    "BOTH",
    "LEAK",
    "CONTEXT",
    "OUTPUT",
    "GREY",
    "EDGE",
    "ARCH_LABELS",
    "LAYER_PALETTE",
    "mpl",
    "new_figure",
    "footer",
    "rgb",
    "cells",
    "layer_colours",
    "save",
]

# Colours (colour-blind safe; Okabe-Ito where possible)
VISIBLE = "#1f5fa8"  # a score entry that survives the mask
MASKED = "#d5dbe3"  # computed (inside a score matrix) but masked
EMPTY = "#ffffff"  # never computed
SHIFTED = "#e69f00"  # LongLoRA shifted heads
BOTH = "#6a3d9a"  # LongLoRA: unshifted and shifted heads
LEAK = "#d1352b"  # visible and in the future (S2 roll wrap-around)
CONTEXT = "#f2c200"  # Figure 6's yellow
OUTPUT = "#d1352b"
GREY = "#e9ecef"
EDGE = "#495057"

# One colour per layer in the receptive-field figures: Okabe-Ito, ordered so that neighbouring layers
# differ in hue and lightness (layer 1 dark blue, layer 2 orange, ...); yellow comes late (weak on white).
LAYER_PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000", "#f0e442"]

ARCH_LABELS = {
    "transformer": "Transformer (full causal)",
    "perceiver_ar": "PerceiverAR",
    "double": "Double Attention",
    "compressed": "Compressed Double",
    "s_split": "s-Split Double",
    "ecp": "ECP",
    "longlora": "LongLoRA S2-Attn",
}


def mpl():
    """The matplotlib modules the figures use, as a namespace (imported here: matplotlib is optional)."""
    try:
        import matplotlib
        from matplotlib import animation, colors, patches, transforms
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("minicp.viz needs matplotlib and pillow: pip install 'minicp[viz]'") from err
    return types.SimpleNamespace(
        matplotlib=matplotlib,
        animation=animation,
        colors=colors,
        patches=patches,
        transforms=transforms,
        FigureCanvasAgg=FigureCanvasAgg,
        Figure=Figure,
    )


def new_figure(width, height, dpi=110):
    """A Figure of ``width`` x ``height`` inches on its own Agg canvas (no pyplot, no global state)."""
    m = mpl()
    fig = m.Figure(figsize=(width, height), dpi=dpi)
    m.FigureCanvasAgg(fig)
    return fig


def footer(fig, text, regenerate=True, fontsize=7):
    """The bottom-right note naming the call that drew ``fig``."""
    suffix = "  (regenerate: minicp figures)" if regenerate else ""
    fig.text(0.995, 0.004, f"made by {text}{suffix}", ha="right", va="bottom", fontsize=fontsize, color="#6c757d")


def rgb(hex_colour):
    """'#rrggbb' -> array of three floats in [0, 1]."""
    hex_colour = hex_colour.lstrip("#")
    return onp.array([int(hex_colour[i : i + 2], 16) / 255 for i in (0, 2, 4)])


def layer_colours(k):
    """k RGB colours, one per layer: the qualitative LAYER_PALETTE, then a sequential map beyond 8 layers."""
    if k <= len(LAYER_PALETTE):
        return [tuple(rgb(c)) for c in LAYER_PALETTE[:k]]
    cmap = mpl().matplotlib.colormaps["turbo"]
    return [cmap(0.05 + 0.9 * j / (k - 1))[:3] for j in range(k)]


def cells(ax, n_rows, n_cols, image, xlabel, ylabel, grid=True, fontsize=8):
    """Draw an (n_rows, n_cols, 3) image as a grid of cells with integer ticks and axis labels."""
    ax.imshow(image, interpolation="nearest", extent=(-0.5, n_cols - 0.5, n_rows - 0.5, -0.5), aspect="equal")
    if grid and max(n_rows, n_cols) <= 48:
        ax.set_xticks(onp.arange(-0.5, n_cols, 1), minor=True)
        ax.set_yticks(onp.arange(-0.5, n_rows, 1), minor=True)
        ax.grid(which="minor", color="white", linewidth=0.4)
        ax.tick_params(which="minor", length=0)
    ticks = 12 if fontsize <= 9 else 8  # at most this many labels per axis
    step = next(s for s in (1, 2, 4, 8, 16, 32, 64) if max(n_rows, n_cols) / s <= ticks)
    ax.set_xticks(range(0, n_cols, step))
    ax.set_yticks(range(0, n_rows, step))
    ax.tick_params(labelsize=fontsize - 1, length=2)
    ax.set_xlabel(xlabel, fontsize=fontsize)
    ax.set_ylabel(ylabel, fontsize=fontsize)


def save(obj, path, fps=1, dpi=None):
    """Write a Figure (PNG) or an Animation (GIF) to ``path`` atomically: a temporary file in the same
    directory, then a rename (``minicp.files``; a symlink at ``path`` is replaced, never written through)."""
    path = Path(path)
    animation = mpl().animation
    if isinstance(obj, animation.Animation):
        write = lambda tmp: obj.save(tmp, writer=animation.PillowWriter(fps=fps), dpi=dpi)
    else:
        write = lambda tmp: obj.savefig(tmp, dpi=dpi or "figure")
    atomic_write(path, write, suffix=path.suffix, by_path=True, replace_symlink=True)
    return path
