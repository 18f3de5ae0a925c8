"""Describing where errors lie (index sets as ranges, strided progressions or short lists) and how large
they are (shares of a budget as percentages)."""

import numpy as onp

__all__ = ["describe_positions", "fmt_index", "percent"]


def percent(share):
    """``share`` (an error over its budget, or a fraction of elements) as a percentage of at most four
    significant digits: '0%', '0.0123%', '98.37%', '100%', '9999%', and from 10^4 % on in exponent form,
    '3.648e+07%'; non-finite shares read 'inf%' and 'nan%'."""
    x = 100.0 * float(share)
    if not onp.isfinite(x):
        return f"{x}%"
    if x == 0:
        return "0%"
    return (f"{x:.4g}" if abs(x) < 9999.5 else f"{x:.3e}") + "%"


def fmt_index(idx):
    return "(" + ", ".join(str(int(i)) for i in idx) + ")"


def describe_positions(positions, limit=6):
    """Sorted unique ints -> short text: '5', '[3..9]' (all of them), '255, 383, ..., 1023 (7, stride 128)',
    or the first few and a count. An empty set gives 'none'."""
    p = onp.unique(onp.asarray(positions, dtype=onp.int64))
    if p.size == 0:
        return "none"
    if p.size == 1:
        return str(int(p[0]))
    steps = onp.diff(p)
    if p.size <= 3 and not (steps == 1).all():
        return ", ".join(str(int(i)) for i in p) + f" ({p.size})"
    if (steps == 1).all():
        return f"[{p[0]}..{p[-1]}] (all {p.size})"
    if (steps == steps[0]).all():
        shown = ", ".join(str(int(i)) for i in p[:2])
        return f"{shown}, ..., {p[-1]} ({p.size}, stride {steps[0]})"
    runs = _runs(p)
    if len(runs) <= limit:
        return ", ".join(str(a) if a == b else f"[{a}..{b}]" for a, b in runs) + f" ({p.size})"
    shown = ", ".join(str(a) if a == b else f"[{a}..{b}]" for a, b in runs[:limit])
    return f"{shown}, ... ({p.size} in {len(runs)} runs, up to {p[-1]})"


def _runs(p):
    breaks = onp.flatnonzero(onp.diff(p) != 1) + 1
    starts = onp.concatenate([[0], breaks])
    stops = onp.concatenate([breaks, [len(p)]])
    return [(int(p[a]), int(p[b - 1])) for a, b in zip(starts, stops)]
