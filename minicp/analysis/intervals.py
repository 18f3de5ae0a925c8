"""Interval sets vectorised over rows, and ``ReceptiveField``, the result type of the receptive-field functions.

A family of R interval sets is two int64 arrays ``starts``, ``stops`` of shape (R, K): half-open
[start, stop), sorted by start within a row, disjoint and not touching; unused slots hold
(BIG, BIG) at the end of the row; K is the largest number of intervals any row needs.
``normalize``, ``union``, ``points``, ``pad`` and ``range_union`` are the arithmetic that
``minicp.analysis.analytic`` composes layers with; they are internal to ``minicp.analysis`` (the
public face is ``ReceptiveField``, whose ``intervals(row)`` are closed ``(lo, hi)`` pairs).
"""

from dataclasses import dataclass

import numpy as onp

from minicp.config import ModelConfig
from minicp.validate import integer, positive_int

BIG = onp.iinfo(onp.int64).max // 4  # padding for unused interval slots (sorts last)


# ====================================================================================================
# Interval sets, vectorised over rows
# ====================================================================================================


def normalize(starts, stops):
    """Sort, drop empties and merge overlapping or touching intervals, row by row. (R, J) -> (R, K).

    The union of half-open intervals needs no pairing of starts with stops: sort both independently
    (S, E); the coverage of a point x is #(S <= x) - #(E <= x), so the union has a gap after the i-th
    sorted stop exactly when E[i] < S[i + 1]. Merged intervals are [S at a gap's right, E at its left).
    """
    R, w = starts.shape
    if w > 12:  # wide: NumPy's row sort
        empty = starts >= stops
        S = onp.sort(onp.where(empty, BIG, starts), axis=1)
        E = onp.sort(onp.where(empty, BIG, stops), axis=1)
        S, E = list(S.T), list(E.T)
    else:  # narrow: column-wise network
        S, E = [], []
        for i in range(w):
            empty = starts[:, i] >= stops[:, i]
            S.append(onp.where(empty, BIG, starts[:, i]))
            E.append(onp.where(empty, BIG, stops[:, i]))
        S, E = _sort_columns(S), _sort_columns(E)
    out_s, out_e = [S[0]], []
    for i in range(w - 1):
        gap = E[i] < S[i + 1]  # the union has a gap after E[i]
        out_e.append(onp.where(gap, E[i], BIG))
        out_s.append(onp.where(gap, S[i + 1], BIG))
    out_e.append(E[-1])
    # every row's merged starts (and stops) are now spread over the columns in increasing order with
    # BIG in between; a stable compaction to the left is another sort of the (few) columns
    out_s, out_e = _sort_columns(out_s), _sort_columns(out_e)
    K = 1
    while K < w and (out_s[K] < BIG).any():
        K += 1
    return onp.stack(out_s[:K], axis=1), onp.stack(out_e[:K], axis=1)


def _sort_columns(cols):
    """Sort the rows of a narrow array given as a list of its columns (sorted in place, returned).

    NumPy's row-wise sort pays a per-row overhead that dominates for 2..12 columns, so this is an
    odd-even transposition network of vectorised min/max over whole columns instead.
    """
    w = len(cols)
    if w > 12:
        return list(onp.sort(onp.stack(cols, axis=1), axis=1).T)
    for step in range(w):
        for i in range(step % 2, w - 1, 2):
            cols[i], cols[i + 1] = onp.minimum(cols[i], cols[i + 1]), onp.maximum(cols[i], cols[i + 1])
    return cols


def union(*sets):
    """Row-wise union of interval families given as (starts, stops) pairs with the same R."""
    return normalize(onp.concatenate([s for s, _ in sets], axis=1), onp.concatenate([e for _, e in sets], axis=1))


def points(positions):
    """The singletons {positions[r]} as an interval family (R, 1); negative positions give empty sets."""
    positions = onp.asarray(positions, dtype=onp.int64)[:, None]
    return onp.where(positions >= 0, positions, BIG), onp.where(positions >= 0, positions + 1, BIG)


def pad(starts, stops, K):
    R, k = starts.shape
    if k == K:
        return starts, stops
    pad = onp.full((R, K - k), BIG, dtype=onp.int64)
    return onp.concatenate([starts, pad], axis=1), onp.concatenate([stops, pad], axis=1)


def range_union(starts, stops, lo, hi):
    """For every query q, the union of the sets of rows lo[q]..hi[q] (inclusive); empty if lo > hi.

    A sparse table: level t holds the union of rows j .. j + 2^t - 1, built by doubling, so any range
    is the union of two (overlapping) table entries. Everything is vectorised over rows and queries.
    """
    n_rows = starts.shape[0]
    lo, hi = onp.asarray(lo, dtype=onp.int64), onp.asarray(hi, dtype=onp.int64)
    valid = lo <= hi
    length = onp.where(valid, hi - lo + 1, 1)
    level = onp.floor(onp.log2(length)).astype(onp.int64)
    # floating log2 is exact for powers of two, but guard the boundary anyway
    level = onp.where((1 << (level + 1)) <= length, level + 1, level)
    level = onp.where((1 << level) > length, level - 1, level)
    levels = [(starts, stops)]
    for t in range(1, int(level.max(initial=0)) + 1):
        s, e = levels[-1]
        half, size = 1 << (t - 1), n_rows - (1 << t) + 1
        levels.append(union((s[:size], e[:size]), (s[half : half + size], e[half : half + size])))
    K = max(s.shape[1] for s, _ in levels)
    table_s = onp.full((len(levels), n_rows, K), BIG, dtype=onp.int64)
    table_e = onp.full((len(levels), n_rows, K), BIG, dtype=onp.int64)
    for t, (s, e) in enumerate(levels):
        table_s[t, : s.shape[0], : s.shape[1]] = s
        table_e[t, : e.shape[0], : e.shape[1]] = e
    a = onp.where(valid, lo, 0)
    b = onp.where(valid, hi - (1 << level) + 1, 0)
    out_s, out_e = union((table_s[level, a], table_e[level, a]), (table_s[level, b], table_e[level, b]))
    out_s[~valid] = BIG
    out_e[~valid] = BIG
    return normalize(out_s, out_e)


# ====================================================================================================
# The result
# ====================================================================================================


@dataclass(frozen=True, eq=False)
class ReceptiveField:
    """For each output row of the stream after ``layers`` layers, the input token positions (0..n-1)
    that can influence it, as sorted disjoint closed intervals.

    ``positions[row]`` is the token position the row stands for (its query position): row = token for
    most architectures, H + t for PerceiverAR's latent row t, and -1 for Compressed's p slots.
    """

    arch: str
    n: int  # input tokens
    layers: int  # k
    positions: onp.ndarray  # (rows,) token position of each output row, -1 for a compressed slot
    starts: onp.ndarray  # (rows, K) half-open interval starts, padded with a huge sentinel
    stops: onp.ndarray  # (rows, K) half-open interval stops
    config: ModelConfig = None

    # ---- construction ------------------------------------------------------------------------------
    @classmethod
    def from_mask(cls, mask, positions=None, arch="?", layers=0, config=None):
        """From a dense boolean (rows, n) mask (True = can influence)."""
        mask = onp.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be a 2-D boolean array (rows, n), got shape {mask.shape}")
        rows, n = mask.shape
        padded = onp.zeros((rows, n + 2), dtype=onp.int8)
        padded[:, 1:-1] = mask
        edges = onp.diff(padded, axis=1)  # +1 at starts, -1 at stops
        r0, s = onp.nonzero(edges == 1)
        r1, e = onp.nonzero(edges == -1)
        count = onp.bincount(r0, minlength=rows)
        K = max(int(count.max(initial=0)), 1)
        slot = onp.arange(len(r0)) - onp.concatenate([[0], onp.cumsum(count)[:-1]])[r0]
        starts = onp.full((rows, K), BIG, dtype=onp.int64)
        stops = onp.full((rows, K), BIG, dtype=onp.int64)
        starts[r0, slot] = s
        stops[r1, slot] = e
        if positions is None:
            positions = onp.arange(rows)
        return cls(arch, n, layers, onp.asarray(positions, dtype=onp.int64), starts, stops, config)

    # ---- views -------------------------------------------------------------------------------------
    @property
    def rows(self):
        """Number of output rows."""
        return self.starts.shape[0]

    def _check_row(self, row):
        """``row`` as an int in [0, rows); negative rows count from the end, as in NumPy."""
        index = integer("row", row)
        if not -self.rows <= index < self.rows:
            raise ValueError(f"row must be an integer in [0, {self.rows}), got {row!r}")
        return index % self.rows

    def intervals(self, row):
        """The closed intervals [(lo, hi), ...] of input positions that can influence output ``row``."""
        row = self._check_row(row)
        keep = self.starts[row] < BIG
        return [(int(s), int(e) - 1) for s, e in zip(self.starts[row][keep], self.stops[row][keep])]

    def num_intervals(self):
        """(rows,) number of disjoint intervals per row."""
        return (self.starts < BIG).sum(axis=1)

    def sizes(self):
        """(rows,) number of input positions that can influence each row."""
        real = self.starts < BIG
        return onp.where(real, self.stops - self.starts, 0).sum(axis=1)

    def _single(self):
        if not (self.num_intervals() == 1).all():
            bad = int(onp.nonzero(self.num_intervals() != 1)[0][0])
            raise ValueError(f"lo/hi need exactly one interval per row; row {bad} has {self.intervals(bad)}")

    @property
    def lo(self):
        """(rows,) first influencing position of each row (when every row is one interval)."""
        self._single()
        return self.starts[:, 0].copy()

    @property
    def hi(self):
        """(rows,) last influencing position of each row, inclusive (when every row is one interval)."""
        self._single()
        return self.stops[:, 0] - 1

    def mask(self, max_entries=50_000_000):
        """Dense boolean (rows, n): True where the input position can influence the row."""
        max_entries = positive_int("max_entries", max_entries)
        if self.rows * self.n > max_entries:
            raise ValueError(f"mask of {self.rows} x {self.n} exceeds max_entries={max_entries}; use intervals()")
        cols = onp.arange(self.n)
        out = onp.zeros((self.rows, self.n), dtype=bool)
        for k in range(self.starts.shape[1]):
            out |= (cols >= self.starts[:, k : k + 1]) & (cols < self.stops[:, k : k + 1])
        return out

    def sees_future(self):
        """(rows,) True where a row is influenced by a token after its own position (a causality leak)."""
        last = onp.where(self.starts < BIG, self.stops - 1, -1).max(axis=1)
        return (self.positions >= 0) & (last > self.positions)

    def sees_all_past(self):
        """(rows,) True where a row sees every token 0..position (what full causal attention gives)."""
        first = self.starts[:, 0]
        single_prefix = (first == 0) & (self.stops[:, 0] > self.positions)
        return (self.positions >= 0) & single_prefix

    def describe(self, row):
        """One line: 'row 37 (token 37): [16, 37]'."""
        row = self._check_row(row)
        pos = self.positions[row]
        who = f"token {pos}" if pos >= 0 else "compressed slot"
        return f"row {row} ({who}): " + " U ".join(f"[{a}, {b}]" for a, b in self.intervals(row))

    def __eq__(self, other):
        if not isinstance(other, ReceptiveField):
            return NotImplemented
        if (self.n, self.rows) != (other.n, other.rows) or not onp.array_equal(self.positions, other.positions):
            return False
        K = max(self.starts.shape[1], other.starts.shape[1])
        a, b = pad(self.starts, self.stops, K), pad(other.starts, other.stops, K)
        return onp.array_equal(a[0], b[0]) and onp.array_equal(a[1], b[1])

    __hash__ = None

    def __repr__(self):
        return (
            f"ReceptiveField(arch={self.arch!r}, n={self.n}, layers={self.layers}, rows={self.rows}, "
            f"max intervals per row={int(self.num_intervals().max(initial=0))})"
        )
