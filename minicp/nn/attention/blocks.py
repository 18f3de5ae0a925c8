"""Attention patterns as data: which query rows are computed and which keys each one sees.

Every architecture module *declares* its pattern as a list of ``Block``s. A block is one score matrix
that the explicit implementation materialises: its query rows, its key columns (both as token
positions of the layer's input stream) and the mask inside it. From the declaration alone we derive

* the dense boolean mask (n, n) that a plain O(n^2) reference attention uses,
* the exact number of score entries computed (sum of block areas) and unmasked (True entries),
* receptive fields (minicp.analysis.receptive).

The mask inside a block is either "everything visible" (``diagonal=None``) or a shifted lower
triangle: local entry (r, c) is visible iff ``c <= r + diagonal`` (``np.tril``'s ``k``). With
contiguous rows starting at ``i0`` and columns at ``j0``, ``diagonal = i0 - j0`` is plain causality
on absolute positions (key position <= query position).
"""

from dataclasses import dataclass

import numpy as onp


@dataclass(frozen=True, eq=False)
class Block:
    """One score matrix: ``rows`` x ``cols`` (token positions), visible iff c <= r + diagonal."""

    name: str
    rows: onp.ndarray  # (i,) query token positions, in the order the block computes them
    cols: onp.ndarray  # (j,) key token positions
    diagonal: int = None  # None: no mask inside the block

    @property
    def shape(self):
        return (len(self.rows), len(self.cols))

    def local_mask(self):
        """(i, j) boolean mask of this block, True = visible."""
        i, j = self.shape
        if self.diagonal is None:
            return onp.ones((i, j), dtype=bool)
        return onp.tril(onp.ones((i, j), dtype=bool), k=self.diagonal)

    def computed(self):
        """Score entries materialised for this block (masked ones included)."""
        return len(self.rows) * len(self.cols)

    def unmasked(self):
        """Entries visible under the block's mask, in closed form (no matrix built)."""
        i, j = self.shape
        if self.diagonal is None:
            return i * j
        # row r sees min(j, max(0, r + diagonal + 1)) keys
        r = onp.arange(i, dtype=onp.int64)
        return int(onp.clip(r + self.diagonal + 1, 0, j).sum())


def block(name, rows, cols, diagonal=None):
    """Build a Block from ranges or arrays of positions."""
    return Block(name, onp.asarray(rows, dtype=onp.int64), onp.asarray(cols, dtype=onp.int64), diagonal)


def causal_block(name, row_start, row_stop, col_start, col_stop):
    """Contiguous block whose mask is causality on absolute positions (key <= query)."""
    return block(name, range(row_start, row_stop), range(col_start, col_stop), row_start - col_start)


@dataclass(frozen=True, eq=False)
class Pattern:
    """The blocks one attention head computes in one layer over an input stream of length ``n``."""

    arch: str
    n: int
    blocks: tuple

    def __post_init__(self):
        seen = onp.zeros(self.n, dtype=bool)
        for blk in self.blocks:
            if len(blk.rows) == 0 or len(blk.cols) == 0:
                raise ValueError(f"{self.arch}: block {blk.name!r} is empty")
            if blk.rows.min() < 0 or blk.rows.max() >= self.n or blk.cols.min() < 0 or blk.cols.max() >= self.n:
                raise ValueError(f"{self.arch}: block {blk.name!r} indexes outside 0..{self.n - 1}")
            if seen[blk.rows].any():
                raise ValueError(f"{self.arch}: block {blk.name!r} recomputes a query row")
            seen[blk.rows] = True
            if not blk.local_mask().any(axis=1).all():
                raise ValueError(f"{self.arch}: block {blk.name!r} has a fully masked row")

    def rows(self):
        """Computed query rows in output order (the order of the blocks, then of each block's rows)."""
        return onp.concatenate([blk.rows for blk in self.blocks])

    def mask(self):
        """Dense (n, n) boolean mask over token positions; rows that are not computed are all False."""
        dense = onp.zeros((self.n, self.n), dtype=bool)
        for blk in self.blocks:
            dense[onp.ix_(blk.rows, blk.cols)] |= blk.local_mask()
        return dense

    def computed(self):
        """Score entries materialised by the explicit implementation of this pattern."""
        return sum(blk.computed() for blk in self.blocks)

    def unmasked(self):
        """Score entries that survive the mask."""
        return sum(blk.unmasked() for blk in self.blocks)
