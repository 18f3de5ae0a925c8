"""Analytic receptive fields: the input positions that can influence each output row after k layers.

Derived from the *declared* patterns (``minicp.nn.attention.patterns``) and the modules' ``skip``
alone: one layer is a dependency relation between its output rows and its input rows, and k layers
compose (``minicp.analysis.receptive`` explains the rules; docs/receptive-fields.md states them per
architecture). ``closed_form`` is an independent statement of the answer for the tests and notebooks.
"""

import numpy as onp

from minicp import backend as B
from minicp.analysis.intervals import BIG, ReceptiveField, normalize, points, range_union, union
from minicp.config import ARCHITECTURES, ModelConfig
from minicp.nn.attention import module as arch_module
from minicp.nn.attention import patterns as arch_patterns
from minicp.validate import bounded, choice, half_segment_from, integer, nonnegative_int, positive_int

MAX_LAYER_ROWS = 2**26  # layers x seq_len for the interval method: about a minute at most

METHODS = ("intervals", "dense")


# ====================================================================================================
# Arguments
# ====================================================================================================


def _resolve(config_or_arch, layers, sizes):
    """(ModelConfig, k) from a config or an architecture name plus sizes (ModelConfig's defaults).

    ECP's segment may be given as ``segment`` s (paper units, even) or ``half_segment`` m = s / 2, or
    both when they agree (``minicp.validate.half_segment_from``)."""
    given = {k: v for k, v in sizes.items() if v is not None}
    if isinstance(config_or_arch, ModelConfig):
        if given:
            raise ValueError(
                f"{', '.join(given)} must not be given together with a ModelConfig "
                f"(use config.replace({next(iter(given))}=...))"
            )
        cfg = config_or_arch
        k = cfg.layers if layers is None else nonnegative_int("layers", layers)
        return cfg, k
    arch = config_or_arch
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise ValueError(f"config_or_arch {arch!r} is not a ModelConfig or one of {ARCHITECTURES}")
    if given.get("seq_len") is None:
        raise ValueError("seq_len is required when the first argument is an architecture name")
    if layers is None:
        raise ValueError("layers is required when the first argument is an architecture name")
    k = nonnegative_int("layers", layers)
    heads = positive_int("heads", given.pop("heads", 2))  # does not change the answer; LongLoRA needs it even
    half_segment = half_segment_from(given.pop("segment", None), given.pop("half_segment", None), required=False)
    if half_segment is not None:
        given["half_segment"] = half_segment
    if "partial" in given:
        given["partial_segments"] = given.pop("partial")
    cfg = ModelConfig(arch=arch, heads=heads, dim=2 * heads, layers=max(k, 1), **given)
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
    steps = onp.concatenate([onp.diff(onp.concatenate(cols)) != 1, [False]])  # a break after this key
    ends = onp.cumsum(ncols) - 1  # each block's last key
    steps[ends] = False  # block boundaries are fine
    breaks = (
        onp.concatenate([[0], onp.cumsum(steps)])[onp.concatenate([ends + 1])]
        - onp.concatenate([[0], onp.cumsum(steps)])[ends + 1 - ncols]
    )
    simple = [b for b, k in zip(pattern.blocks, breaks) if k == 0]
    other = [b for b, k in zip(pattern.blocks, breaks) if k != 0]
    starts = onp.full((n, 1), BIG, dtype=onp.int64)
    stops = onp.full((n, 1), BIG, dtype=onp.int64)
    if simple:
        sizes = onp.array([len(b.rows) for b in simple])
        rows = onp.concatenate([b.rows for b in simple])
        which = onp.repeat(onp.arange(len(simple)), sizes)
        local = onp.arange(len(rows)) - onp.repeat(onp.cumsum(sizes) - sizes, sizes)
        width = onp.array([len(b.cols) for b in simple])[which]
        first = onp.array([b.cols[0] for b in simple])[which]
        diag = onp.array([width.max() if b.diagonal is None else b.diagonal for b in simple])[which]
        visible = onp.clip(local + diag + 1, 0, width)
        starts[rows, 0] = onp.where(visible > 0, first, BIG)
        stops[rows, 0] = onp.where(visible > 0, first + visible, BIG)
    for blk in other:
        breaks = onp.nonzero(onp.diff(blk.cols) != 1)[0] + 1  # maximal runs of consecutive keys
        runs = list(zip(onp.concatenate([[0], breaks]), onp.concatenate([breaks, [len(blk.cols)]])))
        i, j = blk.shape
        local = onp.arange(i)
        visible = onp.full(i, j) if blk.diagonal is None else onp.clip(local + blk.diagonal + 1, 0, j)
        extra_s = onp.full((n, len(runs)), BIG, dtype=onp.int64)
        extra_e = onp.full((n, len(runs)), BIG, dtype=onp.int64)
        for slot, (k0, k1) in enumerate(runs):
            w = onp.minimum(k1, visible) - k0
            extra_s[blk.rows, slot] = onp.where(w > 0, blk.cols[k0], BIG)
            extra_e[blk.rows, slot] = onp.where(w > 0, blk.cols[k0] + w, BIG)
        starts, stops = onp.concatenate([starts, extra_s], axis=1), onp.concatenate([stops, extra_e], axis=1)
    return normalize(starts, stops)


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
        self.patterns = list({id(p): p for p in pats}.values())  # heads sharing a Pattern count once
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
                raise AssertionError(
                    f"{cfg.arch} layer {layer}: {len(computed)} computed query rows but skip keeps {R_out} rows"
                )
            self.query = computed
            self.slot_sources = None
        self.R_out = R_out

    def dependencies(self):
        """(starts, stops) over input rows for every output row."""
        keys = union(*[_pattern_intervals(p) for p in self.patterns])  # (n_in, J) per query row
        q = self.query
        out_keys = (
            onp.where(q[:, None] >= 0, keys[0][onp.maximum(q, 0)], BIG),
            onp.where(q[:, None] >= 0, keys[1][onp.maximum(q, 0)], BIG),
        )
        parts = [out_keys, points(q), points(self.residual)]
        if self.slot_sources is not None:
            src = self.slot_sources
            # all history query rows, their keys and the rows themselves, merged into one set
            flat = normalize(keys[0][src].reshape(1, -1), keys[1][src].reshape(1, -1))
            flat = union(flat, (onp.array([[src.min()]]), onp.array([[src.max() + 1]])))
            slot = (q < 0)[:, None]
            parts.append((onp.where(slot, flat[0], BIG), onp.where(slot, flat[1], BIG)))
        return union(*parts)

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


def receptive_field_by_layer(
    config_or_arch,
    *,
    layers=None,
    seq_len=None,
    heads=None,
    latent=None,
    compressed=None,
    split=None,
    segment=None,
    half_segment=None,
    group=None,
    shift=None,
    partial=None,
    compressed_residual=None,
    method="intervals",
):
    """[R_0, R_1, ..., R_k]: the receptive field after 0, 1, ..., k layers (same arguments as
    ``receptive_field``). Costs the same as computing R_k alone."""
    method = choice("method", method, METHODS)
    sizes = dict(
        seq_len=seq_len,
        heads=heads,
        latent=latent,
        compressed=compressed,
        split=split,
        segment=segment,
        half_segment=half_segment,
        group=group,
        shift=shift,
        partial=partial,
        compressed_residual=compressed_residual,
    )
    cfg, k = _resolve(config_or_arch, layers, sizes)
    heads = cfg.heads
    n = cfg.seq_len
    if method == "dense" and n > 2048:
        raise ValueError(f"method 'dense' builds n x n matrices; seq_len {n} is too large (use 'intervals')")
    # bounded work: one vectorised pass over the n rows per layer (intervals), l n^3 for dense
    if method == "intervals":
        bounded("layers", k * n, what="layer x row updates", limit_name=f"{__name__}.MAX_LAYER_ROWS")
    else:
        bounded("layers", k * n**3, what="layer x row updates", factor=32, advice="use method='intervals'")
    positions = onp.arange(n, dtype=onp.int64)
    cache = {}
    if method == "intervals":
        cur = points(positions)
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
    real = ds < BIG
    lo = onp.where(real, ds, 1).ravel()
    hi = onp.where(real, de - 1, 0).ravel()  # lo > hi: empty query
    s, e = range_union(cur[0], cur[1], lo, hi)  # (R * J, K)
    return normalize(s.reshape(R, -1), e.reshape(R, -1))


def _make(cfg, k, positions, cur, method):
    if method == "intervals":
        return ReceptiveField(cfg.arch, cfg.seq_len, k, positions.copy(), cur[0], cur[1], cfg)
    return ReceptiveField.from_mask(cur, positions.copy(), cfg.arch, k, cfg)


def receptive_field(
    config_or_arch,
    *,
    layers=None,
    seq_len=None,
    heads=None,
    latent=None,
    compressed=None,
    split=None,
    segment=None,
    half_segment=None,
    group=None,
    shift=None,
    partial=None,
    compressed_residual=None,
    method="intervals",
):
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
    return receptive_field_by_layer(
        config_or_arch,
        layers=layers,
        seq_len=seq_len,
        heads=heads,
        latent=latent,
        compressed=compressed,
        split=split,
        segment=segment,
        half_segment=half_segment,
        group=group,
        shift=shift,
        partial=partial,
        compressed_residual=compressed_residual,
        method=method,
    )[-1]


def closed_form(config, row, layers):
    """The closed form of docs/receptive-fields.md for output ``row`` after ``layers`` >= 1 layers: list of closed
    intervals. An independent statement of the answer, used by the tests and the notebooks."""
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config must be a ModelConfig, got {type(config).__name__}")
    k = nonnegative_int("layers", layers)
    if k < 1:
        raise ValueError("layers must be at least 1 for the closed forms")
    arch, n = config.arch, config.seq_len
    rows = config.seq_len if arch not in ("perceiver_ar", "compressed") else config.stream_len(1)
    if not 0 <= integer("row", row) < rows:
        raise ValueError(f"row must be an integer in [0, {rows}), got {row!r}")
    H = config.history
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
