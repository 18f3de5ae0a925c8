"""The tolerance model: a kernel's error against the float64 reference, measured in units of the rounding floor.

For each tensor (out, dq, dk, dv) three arrays are at hand: the float64 reference R, the *plain
implementation in the kernel's dtype* F (``minicp.testing.blockwise``: every intermediate rounded to the
dtype), and the kernel's result A. With e_A = |A - R| and e_F = |F - R| (element-wise):

    max budget  B_max = C_MAX * max(e_F) + FLOOR_ULPS * eps * rms(R)      (FlashAttention's test)
    rms budget  B_rms = C_RMS * rms(e_G) + FLOOR_ULPS * eps * rms(R)      (catches errors spread thin)

where e_G = |G - R| is the error of the *accurate* implementation G: float32 arithmetic, only inputs and
results rounded to the dtype (for float32 G = F). F sets the worst element a correct kernel may reach;
G is the rounding floor no kernel in that dtype can beat, and a correct kernel stays within a small
multiple of it in rms, while a kernel that keeps its softmax state in bfloat16 does not.
    pass  <=>   max(e_A) <= B_max  and  rms(e_A) <= B_rms  and  every non-finite R matched exactly

The floor grows with reduction length, with RoPE angles at large positions and with the dtype, because
the plain implementation suffers the same roundings; a kernel that adds error everywhere (softmax state
kept in low precision) moves the rms, a kernel wrong somewhere (masks, offsets, heads) moves the max.
docs/tolerances.md explains the constants and the measurements behind them.
"""

import json
from dataclasses import asdict, dataclass, field

import numpy as onp

from minicp.testing.compare import nonfinite_mismatch
from minicp.testing.dtypes import EPS
from minicp.testing.where import describe_positions, percent

__all__ = [
    "C_MAX",
    "C_RMS",
    "FLOOR_ULPS",
    "TensorVerdict",
    "Report",
    "judge",
    "budgets",
    "absolute_budget",
    "refused",
]

C_MAX = 5.0  # docs/tolerances.md
C_RMS = 2.5
FLOOR_ULPS = 0.0625
PIECE = 1 << 18  # entries per piece of the budgets' error pass (2 MiB of float64)
ZERO_ULPS = 16.0  # a tensor whose reference is exactly zero (n = 1: dq = dk = 0) may carry this
MAX_LISTED = 8


@dataclass
class TensorVerdict:
    """The verdict on one tensor: errors, budgets, shares (error / budget) and where the errors lie."""

    name: str
    dtype: str
    shape: tuple
    ok: bool
    max_err: float
    rms_err: float
    max_budget: float
    rms_budget: float
    floor_max: float
    floor_rms: float
    max_share: float = 0.0
    rms_share: float = 0.0
    bad_fraction: float = 0.0
    nonfinite_bad: int = 0
    worst_index: tuple = ()
    worst_expected: float = 0.0
    worst_actual: float = 0.0
    per_head: list = field(default_factory=list)
    per_block: list = field(default_factory=list)
    bad_rows: str = "none"
    bad_ranges: list = field(default_factory=list)
    actual_dtype: str = ""
    message: str = ""


def _rms(a):
    """sqrt(mean(a^2)) in one BLAS pass, no temporary."""
    flat = onp.ravel(a)
    return float(onp.sqrt(onp.dot(flat, flat) / flat.size)) if flat.size else 0.0


def _err(x, reference, finite, out=None):
    with onp.errstate(invalid="ignore", over="ignore"):
        e = onp.subtract(x, reference, dtype=onp.float64, out=out)
    onp.abs(e, out=e)
    if finite is None and onp.isfinite(e.max() if e.size else 0.0):  # a NaN or inf shows in the max
        return e
    e = e if finite is None else onp.where(finite, e, 0.0)
    return onp.where(onp.isfinite(e), e, 0.0)


def budgets(reference, floor, dtype, accurate=None):
    """(B_max, B_rms, max(e_F), rms(e_G)) for one tensor; non-finite reference entries are left out."""
    scale = _rms(reference)  # finite exactly when every entry is (attention values are far from overflow)
    if onp.isfinite(scale):  # the common case: no mask, the errors taken piece by piece
        f_max, g_rms = _error_stats(reference, floor, accurate)
    else:
        finite = onp.isfinite(reference)
        e_f = _err(floor, reference, finite)
        e_g = e_f if accurate is None or accurate is floor else _err(accurate, reference, finite)
        scale = _rms(onp.where(finite, reference, 0.0))
        f_max, g_rms = float(e_f.max()) if e_f.size else 0.0, _rms(e_g)
    absolute, _ = absolute_budget(reference, dtype, scale)
    return C_MAX * f_max + absolute, C_RMS * g_rms + absolute, f_max, g_rms


def absolute_budget(reference, dtype, scale=None):
    """(FLOOR_ULPS * eps * rms(R), or ZERO_ULPS * eps when R is exactly zero (unit-scale inputs); rms(R)): the
    part of both budgets that does not come from the floors, non-finite entries of R counted as 0.
    ``scale``: rms(R) when already known."""
    if scale is None or not onp.isfinite(scale):
        scale = _rms(reference)
        if not onp.isfinite(scale):
            scale = _rms(onp.where(onp.isfinite(reference), reference, 0.0))
    return (FLOOR_ULPS * EPS[dtype] * scale if scale > 0 else ZERO_ULPS * EPS[dtype]), scale


def _error_stats(reference, floor, accurate):
    """(max |floor - reference|, rms |accurate - reference|) over a finite reference, ``PIECE`` entries at a
    time through one reused buffer (a full-size error array is fresh memory the system must first zero,
    which costs more than the arithmetic); non-finite errors count as 0, as in ``_err``."""
    r, f = onp.ravel(reference), onp.ravel(floor)
    a = None if accurate is None or accurate is floor else onp.ravel(accurate)
    f_max, g_sq, buf = 0.0, 0.0, onp.empty(min(PIECE, r.size))
    for i0 in range(0, r.size, PIECE):
        piece, into = slice(i0, i0 + PIECE), buf[: min(PIECE, r.size - i0)]
        e = _err(f[piece], r[piece], None, out=into)
        f_max = max(f_max, float(e.max()))
        if a is not None:
            e = _err(a[piece], r[piece], None, out=into)
        g_sq += float(onp.dot(e, e))
    return f_max, float(onp.sqrt(g_sq / r.size)) if r.size else 0.0


def refused(name, dtype, shape, message, actual_dtype=""):
    """A failing ``TensorVerdict`` for a tensor that could not be compared (wrong dtype, shape, complex)."""
    inf = onp.inf
    v = TensorVerdict(name, dtype, tuple(shape), False, inf, inf, 0, 0, 0, 0, inf, inf, 1.0, 0, (), 0.0, 0.0)
    v.actual_dtype, v.message = actual_dtype, message
    return v


def judge(name, actual, reference, floor, dtype, *, accurate=None, groups=None, row_axis=2, budget=None):
    """``TensorVerdict`` for ``actual`` against ``reference`` (float64) with the budgets of ``floor``.

    Arrays are (b, h, rows, d). ``groups``: optional [(label, head, row indices)] of declared blocks
    (query blocks for out/dq, key blocks for dk/dv) to report shares per block. ``budget``: the
    (B_max, B_rms, max(e_F), rms(e_G)) of ``budgets`` computed before, in place of ``floor`` and
    ``accurate`` (then pass floor=None)."""
    a, r = onp.asarray(actual), onp.asarray(reference, dtype=onp.float64)
    if a.dtype.kind == "c":
        return refused(name, dtype, r.shape, f"{name}: dtype {a.dtype} is complex; compare real values", a.dtype.name)
    a = a if a.dtype.kind == "f" else a.astype(onp.float64)
    if a.shape != r.shape:
        return refused(name, dtype, r.shape, f"{name}: shape mismatch: actual {a.shape} vs expected {r.shape}")
    if budget is None:
        budget = budgets(r, floor, dtype, accurate)
    b_max, b_rms, f_max, f_rms = (float(x) for x in budget)
    stats = _lean_stats(a, r, b_max) if row_axis == 2 and r.ndim == 4 and r.size else None
    if stats is not None:  # every error finite and within the max budget: no full-size error array
        err, nf_bad, i = None, onp.zeros((), dtype=bool), _lean_worst_index(a, r, stats)
        max_err = float(abs(onp.subtract(a[i], r[i], dtype=onp.float64)))
    else:
        err, nf_bad, stats = _errors(a, r, row_axis)
        i = _worst_index(err, stats, row_axis)
        max_err = float(err[i]) if err.size else 0.0
    rms_err = _stats_rms(stats, r.size)
    v = TensorVerdict(name, dtype, tuple(r.shape), False, max_err, rms_err, b_max, b_rms, f_max, f_rms)
    v.max_share, v.rms_share = _share(max_err, b_max), _share(rms_err, b_rms)
    v.nonfinite_bad, v.worst_index = int(nf_bad.sum()), tuple(int(j) for j in i)
    v.worst_expected, v.worst_actual = (float(r[i]), float(a[i])) if r.size else (0.0, 0.0)
    v.ok = v.max_share <= 1.0 and v.rms_share <= 1.0 and v.nonfinite_bad == 0
    bad = err > b_max if max_err > b_max else None  # nothing over the max budget (always so on the lean
    # path, where err is None): no pass for it
    if bad is not None:
        stats["bad"] = _rows_view(bad, row_axis).sum(axis=-1)
        v.bad_fraction = float(bad.mean())
        v.bad_ranges = [(int(ax.min()), int(ax.max())) for ax in onp.nonzero(bad)]
        v.bad_rows = describe_positions(onp.nonzero(stats["bad"].any(axis=0))[0])
    every = onp.arange(r.shape[row_axis])
    v.per_head = _parts([(f"head {hd}", hd, every) for hd in range(r.shape[1])], stats, b_max, b_rms)
    v.per_block = _parts(groups or [], stats, b_max, b_rms)
    v.message = _message(v)
    return v


def _rows_view(x, row_axis):
    """x (b, h, rows, d) as (h, rows, everything else): a view when b = 1."""
    return onp.moveaxis(x, (1, row_axis), (0, 1)).reshape(x.shape[1], x.shape[row_axis], -1)


def _row_stats(err, row_axis):
    """Per (head, row): max error and sum of squared errors, and elements per row; the whole tensor's and
    every block's max and rms follow from these, without further passes over the tensor."""
    e = _rows_view(err, row_axis)
    return {"max": e.max(axis=-1), "sq": onp.einsum("hrk,hrk->hr", e, e), "bad": None, "per": e.shape[-1]}


def _lean_stats(a, r, b_max):
    """The row statistics of |a - r| for (b, h, rows, d) arrays, one head at a time through one reused
    buffer, or None unless every error is finite and within ``b_max`` (then ``_errors`` gives the full
    picture). A passing check thus allocates no full-size error array."""
    H, R = r.shape[1], r.shape[2]
    mx, sq, buf = onp.empty((H, R)), onp.empty((H, R)), onp.empty(r[:, 0].shape)
    for hd in range(H):
        with onp.errstate(invalid="ignore", over="ignore"):
            e = onp.subtract(a[:, hd], r[:, hd], dtype=onp.float64, out=buf)  # (b, rows, d)
        onp.abs(e, out=e)
        rows = onp.swapaxes(e, 0, 1).reshape(R, -1)  # (rows, b d): a view when b = 1
        mx[hd] = rows.max(axis=-1)
        if not (onp.isfinite(mx[hd]).all() and mx[hd].max() <= b_max):
            return None
        sq[hd] = onp.einsum("rk,rk->r", rows, rows)
    return {"max": mx, "sq": sq, "bad": None, "per": rows.shape[-1]}


def _lean_worst_index(a, r, stats):
    """``_worst_index`` from the row statistics and the errors of the one row that holds the largest."""
    hd, row = onp.unravel_index(int(onp.argmax(stats["max"])), stats["max"].shape)
    e = onp.abs(onp.subtract(a[:, hd, row], r[:, hd, row], dtype=onp.float64))  # (b, d)
    bi, di = onp.unravel_index(int(onp.argmax(e)), e.shape)
    return (int(bi), int(hd), int(row), int(di))


def _errors(a, r, row_axis):
    """|a - r| (float64) with non-finite entries of the reference left out (0) and every mismatch made inf;
    the mask of mismatched non-finite reference entries; the row statistics. One subtraction when
    everything is finite (a NaN or inf anywhere shows in the row maxima)."""
    with onp.errstate(invalid="ignore", over="ignore"):
        err = onp.subtract(a, r, dtype=onp.float64)
    onp.abs(err, out=err)
    stats = _row_stats(err, row_axis) if err.size else {"max": onp.zeros((0, 0)), "sq": 0.0, "bad": None, "per": 0}
    if onp.isfinite(stats["max"]).all():
        return err, onp.zeros((), dtype=bool), stats
    nf_bad = nonfinite_mismatch(a, r)
    err = onp.where(onp.isfinite(r), err, 0.0)
    err = onp.where(onp.isnan(err) | nf_bad, onp.inf, err)
    return err, nf_bad, _row_stats(err, row_axis)


def _worst_index(err, stats, row_axis):
    """Index of the largest error (the first in C order of the row maxima, then within that row)."""
    if not err.size:
        return ()
    hd, row = onp.unravel_index(int(onp.argmax(stats["max"])), stats["max"].shape)
    inner = onp.moveaxis(err, (1, row_axis), (0, 1))[hd, row]
    rest = iter(onp.unravel_index(int(onp.argmax(inner)), inner.shape))
    return tuple(int(hd) if ax == 1 else int(row) if ax == row_axis else int(next(rest)) for ax in range(err.ndim))


def _stats_rms(stats, size):
    return float(onp.sqrt(onp.sum(stats["sq"]) / size)) if size else 0.0


def _share(err, budget):
    if budget > 0:
        return err / budget
    return 0.0 if err == 0 else onp.inf


def _parts(groups, stats, b_max, b_rms):
    """Shares of every (label, head, row indices) of ``groups``, from the row statistics in a few gathers."""
    if not groups:
        return []
    sizes = onp.array([len(rows) for _, _, rows in groups], dtype=onp.int64)
    heads = onp.repeat(onp.array([hd for _, hd, _ in groups], dtype=onp.int64), sizes)
    rows = onp.concatenate([onp.asarray(rows, dtype=onp.int64).ravel() for _, _, rows in groups])
    starts = onp.concatenate([[0], onp.cumsum(sizes)[:-1]])
    full = sizes > 0
    worst, sq, nbad = (onp.zeros(len(groups)) for _ in range(3))
    if full.any():
        at = starts[full]
        worst[full] = onp.maximum.reduceat(stats["max"][heads, rows], at)
        sq[full] = onp.add.reduceat(stats["sq"][heads, rows], at)
        if stats["bad"] is not None:
            nbad[full] = onp.add.reduceat(stats["bad"][heads, rows], at)
    count = sizes * stats["per"]
    out = []
    for j, (label, _, _) in enumerate(groups):
        rms = float(onp.sqrt(sq[j] / count[j])) if count[j] else 0.0
        out.append(
            {
                "where": label,
                "max_share": _share(float(worst[j]), b_max),
                "rms_share": _share(rms, b_rms),
                "bad_fraction": float(nbad[j] / count[j]) if count[j] else 0.0,
            }
        )
    return out


def _message(v):
    status = "OK," if v.ok else "out of tolerance:"
    lines = [
        f"{v.name}: {status} max err {v.max_err:.3g} = {percent(v.max_share)} of the max budget "
        f"{v.max_budget:.3g}; rms err {v.rms_err:.3g} = {percent(v.rms_share)} of the rms budget "
        f"{v.rms_budget:.3g} (floors: plain {v.dtype} max {v.floor_max:.3g}, accurate rms {v.floor_rms:.3g})"
    ]
    if v.ok:
        return lines[0]
    lines.append(
        f"  {percent(v.bad_fraction)} of elements over the max budget; worst {tuple(v.worst_index)}: "
        f"expected {v.worst_expected:.8g}, actual {v.worst_actual:.8g}"
    )
    if v.nonfinite_bad:
        lines.append(f"  {v.nonfinite_bad} element(s) where the reference is +-inf or NaN and actual differs")
    lines.append(f"  rows over budget: {v.bad_rows}")
    if v.bad_ranges:
        lines.append(
            "  bad elements lie in "
            + " x ".join(f"[{lo}..{hi}]" for lo, hi in v.bad_ranges)
            + " (index range per axis)"
        )
    lines.append("  per head: " + _parts_text(v.per_head))
    if v.per_block:
        lines.append("  per block: " + _parts_text(v.per_block))
    return "\n".join(lines)


def _parts_text(parts):
    bad = [p for p in parts if p["max_share"] > 1 or p["rms_share"] > 1]
    shown = (bad or sorted(parts, key=lambda p: -p["rms_share"]))[:MAX_LISTED]
    text = ", ".join(
        f"{p['where']} max {percent(p['max_share'])} rms {percent(p['rms_share'])} bad {percent(p['bad_fraction'])}"
        for p in shown
    )
    more = len(bad) - len(shown) if bad else 0
    return (
        (f"{len(bad)} of {len(parts)} over budget: " if bad else "all within budget, largest: ")
        + text
        + (f", ... {more} more" if more > 0 else "")
    )


@dataclass
class Report:
    """Verdicts of every tensor of one check (collect mode). ``ok``, ``message``, ``to_json()``."""

    context: str
    verdicts: dict

    @property
    def ok(self):
        return all(v.ok for v in self.verdicts.values())

    @property
    def failed(self):
        return [k for k, v in self.verdicts.items() if not v.ok]

    @property
    def message(self):
        head = "all tensors within budget" if self.ok else f"{', '.join(self.failed)} out of budget"
        return "\n".join([f"{head} ({self.context})"] + [v.message for v in self.verdicts.values()])

    def __getitem__(self, key):
        return self.verdicts[key]

    def __iter__(self):
        return iter(self.verdicts)

    def __len__(self):
        return len(self.verdicts)

    def keys(self):
        return self.verdicts.keys()

    def values(self):
        return self.verdicts.values()

    def items(self):
        return self.verdicts.items()

    def to_dict(self):
        return {
            "ok": self.ok,
            "context": self.context,
            "constants": {"C_MAX": C_MAX, "C_RMS": C_RMS, "FLOOR_ULPS": FLOOR_ULPS},
            "tensors": {k: _jsonable(asdict(v)) for k, v in self.verdicts.items()},
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not onp.isfinite(x):
        return str(x)
    return x
