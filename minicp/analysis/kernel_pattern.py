"""Attention patterns exported for kernel authors: dense mask, block list, and a mask predicate.

Every architecture in minicp declares its attention pattern as a list of blocks (``minicp.nn.attention.blocks``):
a block is one score matrix with its query rows, its key columns and, optionally, a shifted causal
mask inside it. This module hands that declaration out in the three forms a kernel needs:

* ``dense_mask(arch, n, heads, **args)`` -> bool (heads, n, n), True = query i may attend to key j.
  Fine for tests and for SDPA's ``attn_mask`` at small n; O(n^2) memory.
* ``blocks(arch, n, heads, **args)`` -> list of dicts, one per (head, block): which query rows, which
  key columns, and the diagonal of the mask inside. This is what a block-sparse kernel iterates over:
  every computed query row belongs to exactly one block, and its softmax runs over that block's keys.
* ``allowed_fn(arch, n, heads, **args)`` -> ``allowed(q_idx, kv_idx, head=0)``, a vectorised predicate
  in the style of FlexAttention's ``mask_mod``. It is computed in closed form from the block list
  (a union of rectangles, each with an optional ``kv_idx - q_idx <= c`` constraint), never by
  indexing a dense mask, and it uses only the operators ``& | >= < <= -``, so it works unchanged on
  Python ints, NumPy integer arrays (broadcasting) and PyTorch tensors.

Porting to FlexAttention (PyTorch >= 2.5)::

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    allowed = minicp.analysis.kernel_pattern.allowed_fn("ecp", n, heads, half_segment=128)
    def mask_mod(b, h, q_idx, kv_idx):          # FlexAttention calls this on 0-d int tensors under vmap
        return allowed(q_idx, kv_idx, h)
    block_mask = create_block_mask(mask_mod, B=None, H=heads, Q_LEN=n, KV_LEN=n)
    out = flex_attention(q, k, v, block_mask=block_mask)      # (b, h, n, d), q NOT pre-scaled

``allowed.source`` is the same predicate as plain Python source (one line per term) to paste into a
Triton/CUDA kernel or a hand-written mask_mod; for ECP with half segment m it reduces, term by term,
to ``(kv_idx <= q_idx) & (kv_idx >= max(0, (q_idx // m - 1) * m))``.

Rows that an architecture does not compute (PerceiverAR's history rows in its first layer) are all
False in every form. FlexAttention returns zeros for such rows, SDPA zeros or NaN depending on the
PyTorch version and backend; compare only the computed rows (``rows(...)``), which is what
``minicp.testing`` does.
"""

import numpy as onp

from minicp.nn.attention import attention_mask
from minicp.nn.attention import patterns as _patterns
from minicp.validate import positive_int

__all__ = ["blocks", "dense_mask", "allowed_fn", "mask_mod", "rows"]


# ----------------------------------------------------------------------------------------------------
# Argument handling
# ----------------------------------------------------------------------------------------------------


def patterns_checked(arch, n, heads, args):
    """Validate every argument (ValueError naming it) and return one Pattern per head."""
    return _patterns(arch, n, heads, **args)


def _runs(positions):
    """Split an int array into maximal runs of consecutive integers: [(start, stop, local_offset)]."""
    positions = onp.asarray(positions, dtype=onp.int64)
    breaks = onp.flatnonzero(onp.diff(positions) != 1) + 1
    starts = onp.concatenate([[0], breaks])
    stops = onp.concatenate([breaks, [len(positions)]])
    return [(int(positions[a]), int(positions[b - 1]) + 1, int(a)) for a, b in zip(starts, stops)]


def _contiguous(positions):
    runs = _runs(positions)
    return (runs[0][0], runs[0][1]) if len(runs) == 1 else (None, None)


# ----------------------------------------------------------------------------------------------------
# The three exports
# ----------------------------------------------------------------------------------------------------


def blocks(arch, n, heads=1, **pattern_args):
    """The block list, one dict per (head, block), heads in order and blocks in computation order.

    Keys: ``head`` (int), ``name`` (str), ``rows`` and ``cols`` (int64 arrays of token positions, in
    the order the block computes them), ``diagonal`` (int, or None for "no mask inside"),
    ``row_start``/``row_stop``/``col_start``/``col_stop`` (ints when the rows/cols are one contiguous
    range, else None; only LongLoRA's ``shift="roll"`` wrap block is not contiguous).

    Inside a block, local entry (r, c) (r-th row, c-th column of the block) is visible iff
    ``diagonal is None or c <= r + diagonal``. For a contiguous block that is
    ``kv_idx - col_start <= q_idx - row_start + diagonal``; ``diagonal = row_start - col_start`` is
    plain causality, ``kv_idx <= q_idx``. Every computed query row is in exactly one block.
    """
    out = []
    for h, pat in enumerate(patterns_checked(arch, n, heads, pattern_args)):
        for blk in pat.blocks:
            rs, re = _contiguous(blk.rows)
            cs, ce = _contiguous(blk.cols)
            out.append(
                dict(
                    head=h,
                    name=blk.name,
                    rows=blk.rows.copy(),
                    cols=blk.cols.copy(),
                    diagonal=None if blk.diagonal is None else int(blk.diagonal),
                    row_start=rs,
                    row_stop=re,
                    col_start=cs,
                    col_stop=ce,
                )
            )
    return out


def dense_mask(arch, n, heads=1, **pattern_args):
    """Boolean (heads, n, n) mask from the block list, True = query row i may attend to key j.

    Memory is heads * n^2 bytes (8 heads at n = 4096: 128 MB); for large n use ``blocks`` or
    ``allowed_fn``. Rows the architecture does not compute are all False.
    """
    return attention_mask(arch, n, positive_int("heads", heads), **pattern_args)


def rows(arch, n, heads=1, **pattern_args):
    """Sorted token positions of the query rows the architecture computes (the rows of its output)."""
    pats = patterns_checked(arch, n, heads, pattern_args)
    return onp.unique(onp.concatenate([p.rows() for p in pats]))


def _terms(pattern):
    """The pattern as a union of terms (q_lo, q_hi, kv_lo, kv_hi, c): q in [q_lo, q_hi), kv in
    [kv_lo, kv_hi) and, unless c is None, kv - q <= c. Terms that are always false are dropped and
    constraints that always hold become None."""
    terms = []
    for blk in pattern.blocks:
        for rs, re, roff in _runs(blk.rows):
            for cs, ce, coff in _runs(blk.cols):
                c = None
                if blk.diagonal is not None:
                    # local col (coff + kv - cs) <= local row (roff + q - rs) + diagonal
                    c = roff - rs + blk.diagonal - coff + cs
                    if cs - (re - 1) > c:  # smallest kv - q already too large
                        continue
                    if (ce - 1) - rs <= c:  # largest kv - q fits: no constraint
                        c = None
                terms.append((rs, re, cs, ce, c))
    return terms


def _head_groups(pats):
    """Group heads with identical patterns: [(head_runs, terms)], head_runs = [(h_lo, h_hi)]."""
    groups = []
    for h, pat in enumerate(pats):
        terms = _terms(pat)
        for group in groups:
            if group[1] == terms:
                group[0].append(h)
                break
        else:
            groups.append(([h], terms))
    return [([(a, b) for a, b, _ in _runs(heads)], terms) for heads, terms in groups]


def _term_source(t):
    rs, re, cs, ce, c = t
    parts = [f"(q_idx >= {rs})", f"(q_idx < {re})", f"(kv_idx >= {cs})", f"(kv_idx < {ce})"]
    if c is not None:
        parts.append(f"(kv_idx - q_idx <= {c})")
    return " & ".join(parts)


def _any_term(q_idx, kv_idx, terms):
    """OR over the terms (q_lo, q_hi, kv_lo, kv_hi, c) of "q in [q_lo, q_hi), kv in [kv_lo, kv_hi), kv - q <= c"."""
    result = None
    for rs, re, cs, ce, c in terms:
        t = (q_idx >= rs) & (q_idx < re) & (kv_idx >= cs) & (kv_idx < ce)
        if c is not None:
            t = t & (kv_idx - q_idx <= c)
        result = t if result is None else (result | t)
    return result if result is not None else (q_idx < 0) & (q_idx >= 0)  # empty pattern: all False


def _allowed_source(arch, n, heads, pattern_args, groups):
    """The predicate ``allowed_fn`` builds, as plain Python source (one line per term)."""
    lines = [
        "def allowed(q_idx, kv_idx, head=0):",
        f'    """minicp.analysis.kernel_pattern.allowed_fn({arch!r}, n={n}, heads={heads}, '
        + ", ".join(f"{k}={v!r}" for k, v in sorted(pattern_args.items()))
        + ')"""',
    ]
    if len(groups) == 1:
        body = "\n        | ".join(f"({_term_source(t)})" for t in groups[0][1])
        lines.append(f"    return (\n          {body}\n    )")
    else:
        parts = []
        for head_runs, terms in groups:
            hcond = " | ".join(f"((head >= {a}) & (head < {b}))" for a, b in head_runs)
            inner = "\n            | ".join(f"({_term_source(t)})" for t in terms)
            parts.append(f"(({hcond}) & (\n            {inner}\n          ))")
        lines.append("    return (\n          " + "\n        | ".join(parts) + "\n    )")
    return "\n".join(lines) + "\n"


def allowed_fn(arch, n, heads=1, **pattern_args):
    """A vectorised predicate ``allowed(q_idx, kv_idx, head=0)``, True = query q_idx may attend to key kv_idx.

    ``q_idx``, ``kv_idx`` and ``head`` may be Python ints, NumPy integer arrays (broadcast against each
    other, e.g. ``allowed(q[:, None], kv[None, :])``) or PyTorch integer tensors (FlexAttention's
    ``mask_mod`` arguments). Out-of-range indices give False. The predicate is the union, over the
    pattern's blocks, of "q in the block's rows, kv in its columns, and kv - q <= c" (c from the
    block's diagonal), so it equals ``dense_mask`` exactly and costs O(number of blocks) per entry.
    ``head`` matters only where heads differ (LongLoRA); NumPy heads outside [0, heads) raise.

    Attributes: ``allowed.source`` (equivalent Python source), ``allowed.terms``
    (list of ((h_lo, h_hi) runs, [(q_lo, q_hi, kv_lo, kv_hi, c or None)])), ``allowed.n``,
    ``allowed.heads``.
    """
    pats = patterns_checked(arch, n, heads, pattern_args)
    groups = _head_groups(pats)
    n, heads = int(n), int(heads)

    def allowed(q_idx, kv_idx, head=0):
        for name, value in (("q_idx", q_idx), ("kv_idx", kv_idx), ("head", head)):
            kind = getattr(getattr(value, "dtype", None), "kind", None)
            if isinstance(value, (bool, float)) or isinstance(value, onp.ndarray) and kind not in "iu":
                raise ValueError(f"{name} must be an integer or an integer array, got {value!r:.60}")
        if isinstance(head, (int, onp.integer, onp.ndarray)):
            h = onp.asarray(head)
            if h.size and (h.min() < 0 or h.max() >= heads):
                raise ValueError(f"head must lie in [0, {heads}), got {head!r:.60}")
        if isinstance(q_idx, int) and isinstance(kv_idx, int):
            q_idx = onp.int64(q_idx)  # keep & | elementwise, not Python bool ops
        if len(groups) == 1:  # head does not matter; broadcast against it
            result = _any_term(q_idx, kv_idx, groups[0][1])
            return result if isinstance(head, (int, onp.integer)) else result & (head >= 0)
        result = None
        for head_runs, terms in groups:
            in_group = None
            for lo, hi in head_runs:
                t = (head >= lo) & (head < hi)
                in_group = t if in_group is None else (in_group | t)
            t = in_group & _any_term(q_idx, kv_idx, terms)
            result = t if result is None else (result | t)
        return result

    allowed.source = _allowed_source(arch, n, heads, pattern_args, groups)
    allowed.terms = groups
    allowed.n, allowed.heads, allowed.arch = n, heads, arch
    allowed.__doc__ = (
        f"True where query q_idx may attend to key kv_idx for {arch} "
        f"(n={n}, heads={heads}, {pattern_args}); see minicp.analysis.kernel_pattern.allowed_fn."
    )
    return allowed


def mask_mod(arch, n, heads=1, **pattern_args):
    """A FlexAttention ``mask_mod(b, h, q_idx, kv_idx)`` built on ``allowed_fn`` (no torch import here)."""
    allowed = allowed_fn(arch, n, heads, **pattern_args)

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed(q_idx, kv_idx, h)

    mask_mod.source = allowed.source
    return mask_mod
