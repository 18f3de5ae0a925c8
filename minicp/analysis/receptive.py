"""Receptive fields: which input tokens can influence each output row after k layers (SPEC section 8).

Attention is the only operation that mixes positions (LayerNorm, feed-forward and the residual add
work row by row; ``to_out`` mixes the heads of one row), plus Compressed Double Attention's
``projection_hist``, which mixes all history rows of layer 0. So one layer is a *dependency relation*
between its output rows and its input rows:

    dep(o) = (union over heads of the keys the pattern lets query row q(o) see)
             U {q(o)}                       the query itself
             U {res(o)}                     the residual row (the module's ``skip``)

and k layers compose: R_k(o) = union of R_{k-1}(j) over j in dep(o), starting from R_0(i) = {i}.
Everything here is derived from the *declared* patterns (``minicp.nn.attention.patterns``) and the
modules' ``skip``; nothing is hand-written per architecture except the one row mapping that is not
"one output row per query row": Compressed layer 0, whose p slots each mix all H history rows.

Two ways to compute it:

* ``method="intervals"`` (default): every set is a short sorted list of disjoint intervals, and the
  union of R_{k-1} over a range of rows is answered by a sparse table (doubling) of interval sets,
  vectorised over rows with NumPy. n = 4096 with 48 layers takes a few tens of milliseconds for any
  architecture (``benchmarks/receptive.py``).
* ``method="dense"``: boolean (rows, n) matrices from ``Pattern.mask()`` composed by matrix
  products. O(l n^3); for small n only, and an independent check of the first.

``empirical_receptive_field`` measures the same thing on a real model: the Jacobian of every output
row with respect to every embedded input row, in float64, from autograd. Masked scores have
probability exactly 0, so a structural zero is an exact zero and "can influence" is simply J != 0.

Intervals are **closed**, ``(lo, hi)`` with lo <= hi, as SPEC section 8 writes them: ECP's row i after
k layers is [m max(0, floor(i/m) - k), i].
"""
from dataclasses import dataclass

import numpy as onp

from minicp import backend as B
from minicp.nn.attention import module as arch_module, patterns as arch_patterns
from minicp.config import ARCHITECTURES, ModelConfig

__all__ = ["ReceptiveField", "receptive_field", "receptive_field_by_layer", "empirical_receptive_field",
           "influence", "closed_form"]

METHODS = ("intervals", "dense")
_BIG = onp.iinfo(onp.int64).max // 4          # padding for unused interval slots (sorts last)


# ====================================================================================================
# Interval sets, vectorised over rows
# ====================================================================================================
#
# A family of R interval sets is two int64 arrays ``starts``, ``stops`` of shape (R, K): half-open
# [start, stop), sorted by start within a row, disjoint and not touching; unused slots hold
# (_BIG, _BIG) at the end of the row. K is the largest number of intervals any row needs.

def _normalize(starts, stops):
    """Sort, drop empties and merge overlapping or touching intervals, row by row. (R, J) -> (R, K).

    The union of half-open intervals needs no pairing of starts with stops: sort both independently
    (S, E); the coverage of a point x is #(S <= x) - #(E <= x), so the union has a gap after the i-th
    sorted stop exactly when E[i] < S[i + 1]. Merged intervals are [S at a gap's right, E at its left).
    """
    R, w = starts.shape
    if w > 12:                                                       # wide: NumPy's row sort
        empty = starts >= stops
        S = onp.sort(onp.where(empty, _BIG, starts), axis=1)
        E = onp.sort(onp.where(empty, _BIG, stops), axis=1)
        S, E = list(S.T), list(E.T)
    else:                                                            # narrow: column-wise network
        S, E = [], []
        for i in range(w):
            empty = starts[:, i] >= stops[:, i]
            S.append(onp.where(empty, _BIG, starts[:, i]))
            E.append(onp.where(empty, _BIG, stops[:, i]))
        S, E = _sort_columns(S), _sort_columns(E)
    out_s, out_e = [S[0]], []
    for i in range(w - 1):
        gap = E[i] < S[i + 1]                                        # the union has a gap after E[i]
        out_e.append(onp.where(gap, E[i], _BIG))
        out_s.append(onp.where(gap, S[i + 1], _BIG))
    out_e.append(E[-1])
    # every row's merged starts (and stops) are now spread over the columns in increasing order with
    # _BIG in between; a stable compaction to the left is another sort of the (few) columns
    out_s, out_e = _sort_columns(out_s), _sort_columns(out_e)
    K = 1
    while K < w and (out_s[K] < _BIG).any():
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


def _union(*sets):
    """Row-wise union of interval families given as (starts, stops) pairs with the same R."""
    return _normalize(onp.concatenate([s for s, _ in sets], axis=1), onp.concatenate([e for _, e in sets], axis=1))


def _points(positions):
    """The singletons {positions[r]} as an interval family (R, 1); negative positions give empty sets."""
    positions = onp.asarray(positions, dtype=onp.int64)[:, None]
    return onp.where(positions >= 0, positions, _BIG), onp.where(positions >= 0, positions + 1, _BIG)


def _pad(starts, stops, K):
    R, k = starts.shape
    if k == K:
        return starts, stops
    pad = onp.full((R, K - k), _BIG, dtype=onp.int64)
    return onp.concatenate([starts, pad], axis=1), onp.concatenate([stops, pad], axis=1)


def _range_union(starts, stops, lo, hi):
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
        levels.append(_union((s[:size], e[:size]), (s[half:half + size], e[half:half + size])))
    K = max(s.shape[1] for s, _ in levels)
    table_s = onp.full((len(levels), n_rows, K), _BIG, dtype=onp.int64)
    table_e = onp.full((len(levels), n_rows, K), _BIG, dtype=onp.int64)
    for t, (s, e) in enumerate(levels):
        table_s[t, : s.shape[0], : s.shape[1]] = s
        table_e[t, : e.shape[0], : e.shape[1]] = e
    a = onp.where(valid, lo, 0)
    b = onp.where(valid, hi - (1 << level) + 1, 0)
    out_s, out_e = _union((table_s[level, a], table_e[level, a]), (table_s[level, b], table_e[level, b]))
    out_s[~valid] = _BIG
    out_e[~valid] = _BIG
    return _normalize(out_s, out_e)


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
    n: int                         # input tokens
    layers: int                    # k
    positions: onp.ndarray         # (rows,) token position of each output row, -1 for a compressed slot
    starts: onp.ndarray            # (rows, K) half-open interval starts, padded with a huge sentinel
    stops: onp.ndarray             # (rows, K) half-open interval stops
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
        edges = onp.diff(padded, axis=1)                                 # +1 at starts, -1 at stops
        r0, s = onp.nonzero(edges == 1)
        r1, e = onp.nonzero(edges == -1)
        count = onp.bincount(r0, minlength=rows)
        K = max(int(count.max(initial=0)), 1)
        slot = onp.arange(len(r0)) - onp.concatenate([[0], onp.cumsum(count)[:-1]])[r0]
        starts = onp.full((rows, K), _BIG, dtype=onp.int64)
        stops = onp.full((rows, K), _BIG, dtype=onp.int64)
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
        if isinstance(row, bool) or not isinstance(row, (int, onp.integer)) or not -self.rows <= row < self.rows:
            raise ValueError(f"row must be an integer in [0, {self.rows}), got {row!r}")
        return int(row) % self.rows

    def intervals(self, row):
        """The closed intervals [(lo, hi), ...] of input positions that can influence output ``row``."""
        row = self._check_row(row)
        keep = self.starts[row] < _BIG
        return [(int(s), int(e) - 1) for s, e in zip(self.starts[row][keep], self.stops[row][keep])]

    def num_intervals(self):
        """(rows,) number of disjoint intervals per row."""
        return (self.starts < _BIG).sum(axis=1)

    def sizes(self):
        """(rows,) number of input positions that can influence each row."""
        real = self.starts < _BIG
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
        if self.rows * self.n > max_entries:
            raise ValueError(f"mask of {self.rows} x {self.n} exceeds max_entries={max_entries}; use intervals()")
        cols = onp.arange(self.n)
        out = onp.zeros((self.rows, self.n), dtype=bool)
        for k in range(self.starts.shape[1]):
            out |= (cols >= self.starts[:, k:k + 1]) & (cols < self.stops[:, k:k + 1])
        return out

    def sees_future(self):
        """(rows,) True where a row is influenced by a token after its own position (a causality leak)."""
        last = onp.where(self.starts < _BIG, self.stops - 1, -1).max(axis=1)
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
        a, b = _pad(self.starts, self.stops, K), _pad(other.starts, other.stops, K)
        return onp.array_equal(a[0], b[0]) and onp.array_equal(a[1], b[1])

    __hash__ = None

    def __repr__(self):
        return (f"ReceptiveField(arch={self.arch!r}, n={self.n}, layers={self.layers}, rows={self.rows}, "
                f"max intervals per row={int(self.num_intervals().max(initial=0))})")


# ====================================================================================================
# Arguments
# ====================================================================================================

def _nonneg_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, onp.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _resolve(config_or_arch, layers, sizes):
    """(ModelConfig, k) from a config or an architecture name plus sizes (ModelConfig's defaults)."""
    given = {k: v for k, v in sizes.items() if v is not None}
    if isinstance(config_or_arch, ModelConfig):
        if given:
            raise ValueError(f"{', '.join(given)} must not be given together with a ModelConfig "
                             f"(use config.replace({next(iter(given))}=...))")
        cfg = config_or_arch
        k = cfg.layers if layers is None else _nonneg_int("layers", layers)
        return cfg, k
    arch = config_or_arch
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"config_or_arch {arch!r} is not a ModelConfig or one of {ARCHITECTURES}")
    if given.get("seq_len") is None:
        raise ValueError("seq_len is required when the first argument is an architecture name")
    if layers is None:
        raise ValueError("layers is required when the first argument is an architecture name")
    k = _nonneg_int("layers", layers)
    heads = given.pop("heads", 2)              # does not change the answer; LongLoRA needs it even
    if isinstance(heads, bool) or not isinstance(heads, (int, onp.integer)) or heads < 1:
        raise ValueError(f"heads must be a positive integer, got {heads!r}")
    if "partial" in given:
        given["partial_segments"] = given.pop("partial")
    cfg = ModelConfig(arch=arch, heads=int(heads), dim=2 * int(heads), layers=max(k, 1), **given)
    return cfg, k


# ====================================================================================================
# One layer as a dependency relation (from the declared patterns and skip)
# ====================================================================================================

def _pattern_intervals(pattern):
    """Key intervals per query row of one head's Pattern: (n, J) starts/stops; uncomputed rows empty.

    A block row r (local) sees the local keys 0 .. v_r - 1 with v_r = min(j, r + diagonal + 1) (all j
    keys without a mask). Blocks whose key positions are consecutive, all of them but LongLoRA's
    rolled wrap-around group, become one interval per row, vectorised over every such block at once;
    the others are split into runs of consecutive keys.
    """
    n = pattern.n
    cols = [b.cols for b in pattern.blocks]
    ncols = onp.array([len(c) for c in cols])
    steps = onp.concatenate([onp.diff(onp.concatenate(cols)) != 1, [False]])   # a break after this key
    ends = onp.cumsum(ncols) - 1                                                 # each block's last key
    steps[ends] = False                                                          # block boundaries are fine
    breaks = onp.concatenate([[0], onp.cumsum(steps)])[onp.concatenate([ends + 1])] - \
        onp.concatenate([[0], onp.cumsum(steps)])[ends + 1 - ncols]
    simple = [b for b, k in zip(pattern.blocks, breaks) if k == 0]
    other = [b for b, k in zip(pattern.blocks, breaks) if k != 0]
    starts = onp.full((n, 1), _BIG, dtype=onp.int64)
    stops = onp.full((n, 1), _BIG, dtype=onp.int64)
    if simple:
        sizes = onp.array([len(b.rows) for b in simple])
        rows = onp.concatenate([b.rows for b in simple])
        which = onp.repeat(onp.arange(len(simple)), sizes)
        local = onp.arange(len(rows)) - onp.repeat(onp.cumsum(sizes) - sizes, sizes)
        width = onp.array([len(b.cols) for b in simple])[which]
        first = onp.array([b.cols[0] for b in simple])[which]
        diag = onp.array([width.max() if b.diagonal is None else b.diagonal for b in simple])[which]
        visible = onp.clip(local + diag + 1, 0, width)
        starts[rows, 0] = onp.where(visible > 0, first, _BIG)
        stops[rows, 0] = onp.where(visible > 0, first + visible, _BIG)
    for blk in other:
        breaks = onp.nonzero(onp.diff(blk.cols) != 1)[0] + 1        # maximal runs of consecutive keys
        runs = list(zip(onp.concatenate([[0], breaks]), onp.concatenate([breaks, [len(blk.cols)]])))
        i, j = blk.shape
        local = onp.arange(i)
        visible = onp.full(i, j) if blk.diagonal is None else onp.clip(local + blk.diagonal + 1, 0, j)
        extra_s = onp.full((n, len(runs)), _BIG, dtype=onp.int64)
        extra_e = onp.full((n, len(runs)), _BIG, dtype=onp.int64)
        for slot, (k0, k1) in enumerate(runs):
            w = onp.minimum(k1, visible) - k0
            extra_s[blk.rows, slot] = onp.where(w > 0, blk.cols[k0], _BIG)
            extra_e[blk.rows, slot] = onp.where(w > 0, blk.cols[k0] + w, _BIG)
        starts, stops = onp.concatenate([starts, extra_s], axis=1), onp.concatenate([stops, extra_e], axis=1)
    return _normalize(starts, stops)


class _Layer:
    """Dependency of one layer's output rows on its input rows, as interval sets over input rows.

    ``query[o]`` is the query row output o comes from (-1: a compressed slot), ``deps`` the interval
    family (R_out, J) over input rows.
    """

    def __init__(self, cfg, layer, heads):
        mod = arch_module(cfg.arch)
        n_in = cfg.stream_len(layer)
        kwargs = mod.pattern_kwargs(cfg, layer)
        pats = arch_patterns(cfg.arch, n_in, heads, **kwargs)
        self.n_in = n_in
        self.patterns = list({id(p): p for p in pats}.values())       # heads sharing a Pattern count once
        # residual row of every output row: run skip on the row indices themselves
        index = onp.arange(n_in, dtype=onp.float64).reshape(1, n_in, 1)
        self.residual = onp.asarray(B.to_numpy(mod.skip(index, cfg, layer)))[0, :, 0].astype(onp.int64)
        R_out = len(self.residual)
        computed = onp.sort(onp.concatenate([p.rows() for p in self.patterns]))
        computed = onp.unique(computed)
        if cfg.arch == "compressed" and layer == 0:
            # projection_hist: slot r = sum_j Wp[r, j] O_h[j] mixes every history output row j < H
            H, P = cfg.history, cfg.compressed
            self.query = onp.concatenate([onp.full(P, -1), computed[H:]])
            self.slot_sources = onp.arange(H)
        else:
            if len(computed) != R_out:
                raise AssertionError(f"{cfg.arch} layer {layer}: {len(computed)} computed query rows but skip "
                                     f"keeps {R_out} rows")
            self.query = computed
            self.slot_sources = None
        self.R_out = R_out

    def dependencies(self):
        """(starts, stops) over input rows for every output row."""
        keys = _union(*[_pattern_intervals(p) for p in self.patterns])             # (n_in, J) per query row
        q = self.query
        out_keys = (onp.where(q[:, None] >= 0, keys[0][onp.maximum(q, 0)], _BIG),
                    onp.where(q[:, None] >= 0, keys[1][onp.maximum(q, 0)], _BIG))
        parts = [out_keys, _points(q), _points(self.residual)]
        if self.slot_sources is not None:
            src = self.slot_sources
            # all history query rows, their keys and the rows themselves, merged into one set
            flat = _normalize(keys[0][src].reshape(1, -1), keys[1][src].reshape(1, -1))
            flat = _union(flat, (onp.array([[src.min()]]), onp.array([[src.max() + 1]])))
            slot = (q < 0)[:, None]
            parts.append((onp.where(slot, flat[0], _BIG), onp.where(slot, flat[1], _BIG)))
        return _union(*parts)

    def dense(self):
        """(R_out, n_in) boolean dependency matrix from the dense Pattern masks (the independent route)."""
        mask = onp.zeros((self.n_in, self.n_in), dtype=bool)
        for p in self.patterns:
            mask |= p.mask()
        dep = onp.zeros((self.R_out, self.n_in), dtype=bool)
        rows = onp.nonzero(self.query >= 0)[0]
        dep[rows] = mask[self.query[rows]]
        dep[rows, self.query[rows]] = True
        if self.slot_sources is not None:
            slots = onp.nonzero(self.query < 0)[0]
            src = self.slot_sources
            dep[slots] = mask[src].any(axis=0)
            dep[onp.ix_(slots, src)] = True
        dep[onp.arange(self.R_out), self.residual] = True
        return dep


def _layer_key(layer):
    """Layers that share a dependency relation: every architecture treats all layers >= 1 alike
    (their ``pattern_kwargs`` and ``skip`` differ from layer 0 only; the Jacobian tests check
    layers 0-3 of every architecture against the model)."""
    return min(layer, 1)


# ====================================================================================================
# Public functions
# ====================================================================================================

def receptive_field_by_layer(config_or_arch, *, layers=None, seq_len=None, heads=None, latent=None,
                             compressed=None, split=None, segment=None, half_segment=None, group=None,
                             shift=None, partial=None, compressed_residual=None, method="intervals"):
    """[R_0, R_1, ..., R_k]: the receptive field after 0, 1, ..., k layers (same arguments as
    ``receptive_field``). Costs the same as computing R_k alone."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    sizes = dict(seq_len=seq_len, heads=heads, latent=latent, compressed=compressed, split=split,
                 segment=segment, half_segment=half_segment, group=group, shift=shift, partial=partial,
                 compressed_residual=compressed_residual)
    cfg, k = _resolve(config_or_arch, layers, sizes)
    heads = cfg.heads
    n = cfg.seq_len
    if method == "dense" and n > 2048:
        raise ValueError(f"method 'dense' builds n x n matrices; seq_len {n} is too large (use 'intervals')")
    positions = onp.arange(n, dtype=onp.int64)
    cache = {}
    if method == "intervals":
        cur = _points(positions)
    else:
        cur = onp.eye(n, dtype=bool)
    out = [_make(cfg, 0, positions, cur, method)]
    for layer in range(k):
        key = _layer_key(layer)
        if key not in cache:
            lay = _Layer(cfg, layer, heads)
            cache[key] = (lay, lay.dependencies() if method == "intervals" else lay.dense())
        lay, dep = cache[key]
        if method == "intervals":
            new = _compose(cur, dep)
        else:
            new = (dep.astype(onp.int64) @ cur.astype(onp.int64)) > 0
        q = lay.query
        positions = onp.where(q >= 0, positions[onp.maximum(q, 0)], -1)
        if layer >= 1 and _same(new, cur):
            # a fixed point: this layer changed nothing, and every later layer is the same relation
            out += [_make(cfg, j, positions, new, method) for j in range(layer + 1, k + 1)]
            break
        cur = new
        out.append(_make(cfg, layer + 1, positions, cur, method))
    return out


def _same(a, b):
    if isinstance(a, tuple):
        return a[0].shape == b[0].shape and onp.array_equal(a[0], b[0]) and onp.array_equal(a[1], b[1])
    return onp.array_equal(a, b)


def _compose(cur, dep):
    """R_new(o) = union of cur[j] over j in dep(o): one range union per dependency interval."""
    ds, de = dep
    R, J = ds.shape
    real = ds < _BIG
    lo = onp.where(real, ds, 1).ravel()
    hi = onp.where(real, de - 1, 0).ravel()                       # lo > hi: empty query
    s, e = _range_union(cur[0], cur[1], lo, hi)                    # (R * J, K)
    return _normalize(s.reshape(R, -1), e.reshape(R, -1))


def _make(cfg, k, positions, cur, method):
    if method == "intervals":
        return ReceptiveField(cfg.arch, cfg.seq_len, k, positions.copy(), cur[0], cur[1], cfg)
    return ReceptiveField.from_mask(cur, positions.copy(), cfg.arch, k, cfg)


def receptive_field(config_or_arch, *, layers=None, seq_len=None, heads=None, latent=None, compressed=None,
                    split=None, segment=None, half_segment=None, group=None, shift=None, partial=None,
                    compressed_residual=None, method="intervals"):
    """The input positions that can influence each output row after ``layers`` layers.

    ``config_or_arch``: a ``ModelConfig`` (``layers`` defaults to its own; give no sizes), or an
    architecture name with ``seq_len`` and ``layers`` and, optionally, the sizes ModelConfig takes
    (``latent``, ``compressed``, ``split``, ``segment`` or ``half_segment``, ``partial``, ``group``,
    ``shift``, ``compressed_residual``; ``heads`` defaults to 2 and does not change the answer).
    ``layers`` may be 0 (every row sees itself) and may exceed the config's own layer count.

    Returns a ``ReceptiveField``: ``.intervals(row)``, ``.lo``/``.hi``, ``.mask()``, ``.positions``.

    >>> rf = receptive_field("ecp", seq_len=64, half_segment=8, layers=2)
    >>> rf.intervals(37)                     # [8 max(0, 37 // 8 - 2), 37]
    [(16, 37)]
    """
    return receptive_field_by_layer(config_or_arch, layers=layers, seq_len=seq_len, heads=heads, latent=latent,
                                    compressed=compressed, split=split, segment=segment, half_segment=half_segment,
                                    group=group, shift=shift, partial=partial,
                                    compressed_residual=compressed_residual, method=method)[-1]


def closed_form(config, row, layers):
    """SPEC section 8's closed form for output ``row`` after ``layers`` >= 1 layers: list of closed
    intervals. An independent statement of the answer, used by the tests and the notebooks."""
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
    k = _nonneg_int("layers", layers)
    if k < 1:
        raise ValueError("layers must be at least 1 for the closed forms")
    arch, n = config.arch, config.seq_len
    rows = config.seq_len if arch not in ("perceiver_ar", "compressed") else config.stream_len(1)
    if isinstance(row, bool) or not isinstance(row, (int, onp.integer)) or not 0 <= row < rows:
        raise ValueError(f"row must be an integer in [0, {rows}), got {row!r}")
    H, L = config.history, config.latent
    if arch == "transformer":
        return [(0, row)]
    if arch == "perceiver_ar":
        return [(0, H + row)]
    if arch == "double":
        return [(0, H - 1)] if row < H else [(0, row)]
    if arch == "s_split":
        c = config.split
        return [(c * (row // c), c * (row // c) + c - 1)] if row < H else [(0, row)]
    if arch == "compressed":
        p = config.compressed
        return [(0, H - 1)] if row < p else [(0, H + row - p)]
    if arch == "ecp":
        m = config.half_segment
        return [(m * max(0, row // m - k), row)]
    if arch == "longlora":
        u = config.group // 2
        a = row // u
        out = [(u * max(0, a - k), row)]
        if config.shift == "roll" and a < k:
            wrap = (n - u * (k - a), n - 1)
            out = _merge_closed(out + [wrap])
        return out
    raise AssertionError(arch)


def _merge_closed(intervals):
    merged = []
    for a, b in sorted(intervals):
        a = max(a, 0)
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


# ====================================================================================================
# Empirical: the Jacobian of the model
# ====================================================================================================

def _to_float64(tree):
    if isinstance(tree, dict):
        return {k: _to_float64(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_to_float64(v) for v in tree]
    return onp.asarray(B.to_numpy(tree), dtype=onp.float64)


def influence(params, config, *, layers=None, tokens=None, seed=0, chunk=512):
    """max |d out[row, :] / d x[j, :]| over channels: (rows, n) float64, x = token_emb[tokens].

    The model runs its first ``layers`` blocks (default: all of them) from the embedded tokens, in
    float64 on the NumPy backend; the final LayerNorm and logits work row by row and are left out.
    ``tokens`` (n,) or (1, n) integers (default: random ids drawn with ``seed``). The full Jacobian is
    computed with reverse mode, one cotangent per (output row, channel), batched ``chunk`` at a time.
    """
    import autograd
    import autograd.numpy as anp
    from minicp.nn import model as M

    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
    if not isinstance(params, dict) or "layers" not in params or "token_emb" not in params:
        raise ValueError("params must be the nested dict of minicp.init_params(config)")
    k = len(params["layers"]) if layers is None else _nonneg_int("layers", layers)
    if k > len(params["layers"]):
        raise ValueError(f"layers {k} exceeds the {len(params['layers'])} layers in params")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    n = config.seq_len
    if tokens is None:
        tokens = onp.random.default_rng(seed).integers(0, config.vocab, size=(1, n))
    tokens = onp.asarray(tokens)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.shape != (1, n):
        raise ValueError(f"tokens must have shape ({n},) or (1, {n}) (= seq_len), got {tokens.shape}")
    tokens = M.check_tokens(tokens, config)
    with B.backend("numpy"):
        p = _to_float64(params)
        x0 = p["token_emb"]["weight"][tokens[0]]                                    # (n, D)
        D = x0.shape[1]
        rows = config.stream_len(k) if k else n
        pairs = [(o, c) for o in range(rows) for c in range(D)]                    # one cotangent each
        result = onp.zeros((rows, n))
        for start in range(0, len(pairs), chunk):
            batch = pairs[start:start + chunk]
            cot = onp.zeros((len(batch), rows, D))
            cot[onp.arange(len(batch)), [o for o, _ in batch], [c for _, c in batch]] = 1.0

            def f(X):
                h = X
                for layer in range(k):
                    h = M.block(p["layers"][layer], h, config, layer)
                return anp.sum(h * cot)

            G = autograd.grad(f)(onp.repeat(x0[None], len(batch), axis=0))         # (batch, n, D)
            mag = onp.abs(G).max(axis=2)                                            # (batch, n)
            for (o, _), row in zip(batch, mag):
                result[o] = onp.maximum(result[o], row)
    return result


def empirical_receptive_field(params, config, *, layers=None, tokens=None, seed=0):
    """The receptive field measured on the model: input position j influences output row o iff some
    entry of d out[o] / d x[j] is non-zero (exactly, in float64). Same result type as
    ``receptive_field``; see ``influence`` for the arguments."""
    mag = influence(params, config, layers=layers, tokens=tokens, seed=seed)
    k = len(params["layers"]) if layers is None else layers
    # the row -> token map, from the analytic side (it does not depend on the weights)
    positions = receptive_field(config, layers=k).positions
    return ReceptiveField.from_mask(mag > 0, positions, config.arch, k, config)
