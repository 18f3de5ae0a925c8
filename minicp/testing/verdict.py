"""The verdict on one tensor: a kernel's error against the float64 reference, in units of the rounding floors.

For each tensor (out, dq, dk, dv) the float64 reference R, the *plain implementation in the kernel's
dtype* F and the *production implementation* G (``minicp.testing.blockmath``: float32 state and
accumulators, the probabilities and dS rounded to the dtype where fused GPU kernels round them) are
computed from the same rounded inputs; only their row statistics are kept (``minicp.testing.rowstats``).
With e_A = |A - R| for the kernel's result A (element-wise):

    pass  <=>  max(e_A) <= B_max  and  rms(e_A) <= B_rms  for the tensor,
               rms(e_A) <= B_rms  for every unit (a declared block, in pieces of at most TILE_ROWS rows,
                                   with the unit's own floors: errors confined to a few rows show there;
                                   bfloat16 and float16, where rounding to the dtype sets the floors),
               and, for out in bfloat16/float16, par(A) <= PAR_AMBIGUOUS * B_par (a row-wise scale error;
                                   between B_par and that, inconclusive),
               and every non-finite R matched exactly

(the budgets: ``minicp.testing.budgets``). A check that passes in bfloat16 or float16 is *inconclusive*
when a twin of a precision bug (``minicp.testing.twins``: the online-softmax accumulator, maximum or sum
kept in the dtype between key tiles) would also pass here: such a bug cannot be told from rounding at this
size, and the verdict says so and what would decide it. docs/tolerances.md explains the constants and the
measurements behind them.
"""

import json
from dataclasses import asdict, dataclass, field

import numpy as onp

from minicp.testing import budgets as bu
from minicp.testing.arrays import module_of, to_host
from minicp.testing.budgets import C_MAX, C_OUT, C_PAR, C_RMS, FLOOR_ULPS
from minicp.testing.compare import nonfinite_mismatch
from minicp.testing.rowstats import error_stats, floor_stats
from minicp.testing.twins import BUGS, TILE
from minicp.testing.verdict_text import message
from minicp.testing.where import describe_positions, percent

__all__ = [
    "TensorVerdict",
    "Report",
    "judge",
    "refused",
    "twin_shares",
]

BUG_TEXT = {
    "acc": "keeping its P @ V accumulator",
    "max": "keeping its running maximum",
    "sum": "keeping its running sum",
}


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
    par_err: float = 0.0
    par_budget: float = 0.0
    par_share: float = 0.0
    floor_par: float = 0.0
    units_over: int = 0
    inconclusive: list = field(default_factory=list)
    twins: dict = field(default_factory=dict)

    @property
    def status(self):
        """ "fail", "inconclusive" (within budget, but a precision bug could not be told apart) or "pass"."""
        return "fail" if not self.ok else "inconclusive" if self.inconclusive else "pass"

    @property
    def share(self):
        """The largest of the shares that decide: the tensor's max, rms and row-scale, its units' rms."""
        units = max((p["rms_share"] for p in self.per_block), default=0.0) if self.dtype in bu.UNIT_DTYPES else 0.0
        return max(self.max_share, self.rms_share, self.par_share, units)


def refused(name, dtype, shape, message_text, actual_dtype=""):
    """A failing ``TensorVerdict`` for a tensor that could not be compared (wrong dtype, shape, complex)."""
    inf = onp.inf
    v = TensorVerdict(name, dtype, tuple(shape), False, inf, inf, 0, 0, 0, 0, inf, inf, 1.0, 0, (), 0.0, 0.0)
    v.actual_dtype, v.message = actual_dtype, message_text
    return v


def _share(err, budget):
    if budget > 0:
        return err / budget
    return 0.0 if err == 0 else onp.inf


def twin_shares(twin, budget):
    """{bug: (share of the budgets its twin would use, rms ratio, row-scale ratio)} for the precision bugs'
    twins (``twins.twin_stats``) against the tensor's ``Budget`` (out in bfloat16/float16)."""
    twin = onp.asarray(twin, dtype=onp.float64)
    correct = twin[0]
    if correct[0] <= 0 or correct[1] <= 0 or budget.b_par is None:
        return {}
    out = {}
    for i, bug in enumerate(BUGS[1:], start=1):
        rms_ratio, par_ratio = (float(onp.sqrt(twin[i, j] / correct[j])) for j in (0, 1))
        share = max(rms_ratio * budget.g_rms / budget.b_rms, par_ratio * budget.g_par / budget.b_par)
        out[bug] = (share, rms_ratio, par_ratio)
    return out


def _inconclusive(name, dtype, shares):
    notes = []
    for bug, (share, rms_ratio, par_ratio) in shares.items():
        if max(rms_ratio, par_ratio) < bu.HARMLESS or share > 1.0:
            continue  # no such bug at this size, or it would fail
        notes.append(
            f"inconclusive: a kernel {BUG_TEXT[bug]} in {dtype} between key tiles of {TILE} would use "
            f"{100 * share:.3g}% of {name}'s budgets here ({rms_ratio:.3g}x the correct kernel's rms error, "
            f"{par_ratio:.3g}x its row-scale error): it cannot be told from rounding at this size; a case whose "
            f"rows see more keys (more key tiles per row) separates it"
        )
    return notes


def judge(name, actual, reference, floor, dtype, *, accurate=None, groups=None, stats=None, twin=None, units=None):
    """``TensorVerdict`` for ``actual`` against ``reference`` (float64), NumPy or CuPy arrays (b, h, rows, d).

    The floors: ``floor`` (F) and ``accurate`` (G, default F) arrays, or their row statistics ``stats``
    ((5, h, rows), ``rowstats.floor_stats``; pass floor=None). ``groups``: [(label, head, row indices)] of
    the declared blocks (query blocks for out/dq, key blocks for dk/dv; default: each head), judged in
    pieces of at most ``budgets.TILE_ROWS`` rows. ``twin``: the precision bugs' twins (out in
    bfloat16/float16), which make a passing verdict inconclusive when they would pass too. ``units``: the
    ``budgets.units`` of ``groups``, when built before."""
    xp = module_of(reference)
    a, r = actual, reference
    if getattr(a, "dtype", onp.dtype("f8")).kind == "c":
        return refused(name, dtype, r.shape, f"{name}: dtype {a.dtype} is complex; compare real values", a.dtype.name)
    a = xp.asarray(a) if xp is not onp else onp.asarray(a)
    a = a if a.dtype.kind == "f" else a.astype(xp.float64)
    if a.shape != r.shape:
        return refused(name, dtype, r.shape, f"{name}: shape mismatch: actual {a.shape} vs expected {r.shape}")
    if stats is None:
        stats = floor_stats(r, floor, floor if accurate is None else accurate)
    floor_host = to_host(stats)
    tight = bu.tight(name, dtype)
    per_row = r.shape[0] * r.shape[3]
    row = {key: to_host(x) for key, x in error_stats(a, r, parallel=tight).items()} if r.size else None
    finite = row is None or bool(onp.isfinite(row["max"]).all())
    nf_bad = 0
    if not finite:  # non-finite results or reference: the exact rules, on the host
        row, nf_bad = _nonfinite_stats(to_host(a), to_host(r), tight)
    budget = bu.budget_of(name, dtype, floor_host, per_row)
    count = max(r.size, 1)
    max_err = float(row["max"].max()) if row is not None and row["max"].size else 0.0
    rms_err = float(onp.sqrt(row["sq"].sum() / count)) if row is not None else 0.0
    v = TensorVerdict(
        name, dtype, tuple(r.shape), False, max_err, rms_err, budget.b_max, budget.b_rms, budget.f_max, budget.g_rms
    )
    v.max_share, v.rms_share = _share(max_err, budget.b_max), _share(rms_err, budget.b_rms)
    if tight and row is not None:
        v.par_err = bu.par_of(float(row["par"].sum()), float(floor_host[3].sum()))
        v.par_budget, v.par_share = budget.b_par, _share(v.par_err, budget.b_par)
        v.floor_par = budget.g_par
    v.nonfinite_bad = int(nf_bad)
    every = onp.arange(r.shape[2])
    heads = bu.Units([f"head {hd}" for hd in range(r.shape[1])], range(r.shape[1]), [every] * r.shape[1])
    unit_groups = (
        units if units is not None else bu.units(groups or list(zip(heads.labels, heads.head, [every] * len(heads))))
    )
    if row is not None:
        v.per_head = _parts(name, dtype, heads, row, floor_host, per_row, unit_budget=False, tensor=budget)
        v.per_block = _parts(name, dtype, unit_groups, row, floor_host, per_row)
        _worst(v, a, r, row)
    if dtype in bu.UNIT_DTYPES:  # a unit's max is reported, not judged; float32 units: reported (budgets.py)
        v.units_over = sum(1 for p in v.per_block if p["rms_share"] > 1)
    ambiguous = 1.0 < v.par_share <= bu.PAR_AMBIGUOUS  # a row-scale error of a known correct kind, or a bug's
    par_ok = v.par_share <= 1.0 or ambiguous
    v.ok = max(v.max_share, v.rms_share) <= 1.0 and par_ok and v.units_over == 0 and v.nonfinite_bad == 0
    if not v.ok and r.size:
        _where_bad(v, a, r, budget.b_max, heads, unit_groups, per_row)
    if v.ok and tight and twin is not None:
        shares = twin_shares(twin, budget)
        v.twins = {bug: list(x) for bug, x in shares.items()}
        v.inconclusive = _inconclusive(name, dtype, shares)
    if v.ok and ambiguous:
        v.inconclusive.insert(
            0,
            f"inconclusive: {name}'s rows are scaled off by {percent(v.par_share)} of the row-scale budget "
            f"({v.par_err / v.floor_par:.3g}x a production kernel's): rounding the normalised probabilities (row sums "
            f"off by rounding, as non-fused implementations do) and a running maximum kept in {dtype} between key tiles "
            "both do this; a case whose rows see more keys separates them (the maximum's error grows with the tiles)",
        )
    v.message = message(v)
    return v


def _nonfinite_stats(a, r, tight):
    """Row statistics where R or A holds inf or NaN: errors where R is non-finite count 0 unless A differs
    (then inf), NaN errors count inf; and the number of mismatched non-finite reference entries."""
    nf = nonfinite_mismatch(a.astype(onp.float64), r)
    with onp.errstate(invalid="ignore", over="ignore"):
        e = onp.abs(onp.subtract(a, r, dtype=onp.float64))
    e = onp.where(onp.isfinite(r), e, 0.0)
    e = onp.where(onp.isnan(e) | nf, onp.inf, e)
    rv = e.transpose(1, 2, 0, 3).reshape(r.shape[1], r.shape[2], -1)
    with onp.errstate(invalid="ignore", over="ignore"):
        row = {"max": rv.max(axis=-1), "sq": onp.einsum("hrk,hrk->hr", rv, rv)}
    if tight:
        rf = onp.where(onp.isfinite(r), r, 0.0)
        s = error_stats(onp.where(onp.isfinite(e.sum(axis=-1, keepdims=True)), a, rf), rf, parallel=True)
        row["par"] = s["par"]
    return row, int(nf.sum())


def _worst(v, a, r, row):
    """The index of the largest error (the first in C order of the row maxima, then within that row)."""
    hd, rw = (int(i) for i in onp.unravel_index(int(onp.argmax(row["max"])), row["max"].shape))
    got, want = to_host(a[:, hd, rw]).astype(onp.float64), to_host(r[:, hd, rw])
    with onp.errstate(invalid="ignore", over="ignore"):
        e = onp.abs(got - want)
    e = onp.where(onp.isnan(e), onp.inf, e)
    bi, di = onp.unravel_index(int(onp.argmax(e)), e.shape)
    v.worst_index = (int(bi), hd, rw, int(di))
    v.worst_expected, v.worst_actual = float(want[bi, di]), float(got[bi, di])


def _where_bad(v, a, r, b_max, heads, unit_groups, per_row):
    """Fraction, rows and index ranges of the elements over the max budget, per head and unit too (a failing
    tensor only), computed where the arrays live."""
    xp = module_of(r)
    with onp.errstate(invalid="ignore", over="ignore"):
        e = xp.abs(xp.subtract(a, r, dtype=xp.float64))
        mismatch = (xp.isnan(r) & ~xp.isnan(a)) | (xp.isinf(r) & (a != r))
    e = xp.where(xp.isfinite(r), e, 0.0)
    bad = (e > b_max) | xp.isnan(e) | mismatch
    per_rows = to_host(bad.sum(axis=(0, 3)))  # (h, rows)
    for parts, units in ((v.per_head, heads), (v.per_block, unit_groups)):
        fractions = units.reduce(onp.add, per_rows) / onp.maximum(units.sizes * per_row, 1)
        for p, fraction in zip(parts, fractions.tolist()):
            p["bad_fraction"] = fraction
    if not per_rows.any():
        return
    v.bad_fraction = float(per_rows.sum() / bad.size)
    ranges = []
    for axis in range(bad.ndim):
        hit = onp.flatnonzero(to_host(bad.any(axis=tuple(x for x in range(bad.ndim) if x != axis))))
        ranges.append((int(hit.min()), int(hit.max())))
    v.bad_ranges = ranges
    v.bad_rows = describe_positions(onp.flatnonzero(per_rows.any(axis=0)))


def _parts(name, dtype, units, row, floor, per_row, unit_budget=True, tensor=None):
    """Shares of every unit of ``units`` (a ``budgets.Units``): against its own budgets, or the tensor's
    (``unit_budget=False``: per head, for the report)."""
    if not len(units):
        return []
    worst, sq = units.reduce(onp.maximum, row["max"]), units.reduce(onp.add, row["sq"])
    count = units.sizes * per_row
    if unit_budget:
        b_max, b_rms, _, _, _ = bu.unit_budgets(name, dtype, floor, units, per_row)
    else:
        b_max, b_rms = onp.full(len(units), tensor.b_max), onp.full(len(units), tensor.b_rms)
    rms = onp.sqrt(sq / onp.maximum(count, 1))
    with onp.errstate(divide="ignore", invalid="ignore"):
        max_share = onp.where(b_max > 0, worst / onp.where(b_max > 0, b_max, 1), onp.where(worst > 0, onp.inf, 0))
        rms_share = onp.where(b_rms > 0, rms / onp.where(b_rms > 0, b_rms, 1), onp.where(rms > 0, onp.inf, 0))
    return [
        {"where": label, "max_share": float(m), "rms_share": float(s)}
        for label, m, s in zip(units.labels, max_share.tolist(), rms_share.tolist())
    ]


@dataclass
class Report:
    """Verdicts of every tensor of one check (collect mode). ``ok``, ``status``, ``message``, ``to_json()``."""

    context: str
    verdicts: dict

    @property
    def ok(self):
        """No tensor failed (an inconclusive verdict is within budget)."""
        return all(v.ok for v in self.verdicts.values())

    @property
    def status(self):
        """ "fail", "inconclusive" or "pass" (the worst over the tensors)."""
        states = [getattr(v, "status", "pass" if v.ok else "fail") for v in self.verdicts.values()]
        return "fail" if "fail" in states else "inconclusive" if "inconclusive" in states else "pass"

    @property
    def failed(self):
        return [k for k, v in self.verdicts.items() if not v.ok]

    @property
    def inconclusive(self):
        """Every inconclusive note of every tensor."""
        return [note for v in self.verdicts.values() for note in getattr(v, "inconclusive", [])]

    @property
    def message(self):
        if not self.ok:
            head = f"{', '.join(self.failed)} out of budget"
        elif self.inconclusive:
            head = "all tensors within budget, inconclusive"
        else:
            head = "all tensors within budget"
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
            "status": self.status,
            "context": self.context,
            "constants": {
                "C_MAX": C_MAX,
                "C_RMS": C_RMS,
                "C_OUT": C_OUT,
                "C_PAR": C_PAR,
                "PAR_AMBIGUOUS": bu.PAR_AMBIGUOUS,
                "FLOOR_ULPS": FLOOR_ULPS,
                "ARITH_ULPS": bu.ARITH_ULPS,
                "NOISE_Z": bu.NOISE_Z,
                "TILE_ROWS": bu.TILE_ROWS,
            },  # fmt: skip
            "tensors": {k: _jsonable(dict(asdict(v), status=v.status)) for k, v in self.verdicts.items()},
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
