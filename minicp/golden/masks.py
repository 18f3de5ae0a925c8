"""Mask exports in the conventions kernels use: True = attend, True = masked, additive, row ranges."""

import numpy as onp

from minicp.analysis import kernel_pattern

__all__ = ["MASK_CONVENTIONS", "mask_export", "row_ranges"]

MASK_CONVENTIONS = ("allowed", "masked", "additive")


def mask_export(arch, n, heads=1, *, convention="allowed", dtype="float32", **pattern_args):
    """Dense (heads, n, n) mask: "allowed" (bool, True = may attend; minicp's and SDPA's boolean convention),
    "masked" (bool, True = masked out; e.g. ``masked_fill``), or "additive" (0 where allowed, -inf where
    masked, in ``dtype``; SDPA's float ``attn_mask``). Memory heads * n^2: small n only."""
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"convention must be one of {MASK_CONVENTIONS}, got {convention!r}")
    allowed = kernel_pattern.dense_mask(arch, n, heads, **pattern_args)
    if convention == "allowed":
        return allowed
    if convention == "masked":
        return ~allowed
    return onp.where(allowed, 0.0, -onp.inf).astype(dtype)


def row_ranges(arch, n, heads=1, **pattern_args):
    """Key ranges per query row, linear in n: int64 (heads, n, K, 2) of [start, stop) intervals, padded with
    (-1, -1); row i of head h may attend exactly to the union of its intervals (none for rows not computed).

    Built from the block list: a block's row r sees the prefix of the block's columns up to r + diagonal,
    split into runs of consecutive positions."""
    per_row = [[[] for _ in range(n)] for _ in range(heads)]
    for blk in kernel_pattern.blocks(arch, n, heads, **pattern_args):
        cols, diagonal = blk["cols"], blk["diagonal"]
        for i, row in enumerate(blk["rows"]):
            visible = cols if diagonal is None else cols[: max(0, min(len(cols), i + diagonal + 1))]
            per_row[blk["head"]][row].extend(_runs(onp.sort(visible)))
    width = max(1, max(len(r) for head in per_row for r in head))
    out = onp.full((heads, n, width, 2), -1, dtype=onp.int64)
    for h, head in enumerate(per_row):
        for i, runs in enumerate(head):
            for j, (a, b) in enumerate(_merge(runs)):
                out[h, i, j] = (a, b)
    return out


def _runs(p):
    if len(p) == 0:
        return []
    breaks = onp.flatnonzero(onp.diff(p) != 1) + 1
    starts, stops = onp.concatenate([[0], breaks]), onp.concatenate([breaks, [len(p)]])
    return [(int(p[a]), int(p[b - 1]) + 1) for a, b in zip(starts, stops)]


def _merge(runs):
    merged = []
    for a, b in sorted(runs):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged
