"""The budgets of a verdict, from the floors' row statistics (``minicp.testing.rowstats``); docs/tolerances.md.

For a tensor, and for every *unit* of it (a declared block of the pattern, split into pieces of at most
``TILE_ROWS`` rows), with e_X = |X - R| over the unit's elements:

    B_max = max(C_MAX * max(e_F), ARITH_ULPS * eps_a * max|R|) + FLOOR_ULPS * eps * rms(R)
    B_rms = max(C * rms(e_G) * (1 + NOISE_Z / sqrt(N)), ARITH_ULPS * eps_a * rms(R)) + FLOOR_ULPS * eps * rms(R)
    B_par = max(C_PAR * par(G) * (1 + NOISE_Z / sqrt(rows)), ARITH_ULPS * eps_a)       (out in bfloat16/float16)

with C = C_OUT for out in bfloat16/float16 (the production floor judges the output tightly), else C_RMS.
F is the plain implementation in the dtype, G the production one (``minicp.testing.blockmath``), N the
number of elements, par(X) = sqrt(sum_rows <e_X, R>^2 / <R, R> / sum R^2) the rms of the rows' relative
scale errors (a row computed as (1 + delta) R has par = |delta|), eps the dtype's unit roundoff at 1 and
eps_a the arithmetic's (float32 for every dtype but float64). No budget is below ARITH_ULPS ulps of the
arithmetic: a floor of exactly zero (n = 1, where the plain implementation is exact) never turns 2 ulps of
a kernel's float32 arithmetic into a failure. Where R is all zero the absolute term is ZERO_ULPS * eps.
The factor (1 + NOISE_Z / sqrt(N)) is the sampling spread of an rms over N values (four of its standard
deviations): small tensors and units are judged as precisely as their size allows. Units are judged by
their rms in bfloat16 and float16 (``UNIT_DTYPES``); in float32 and float64 their shares are reported.
"""

import numpy as onp

from minicp.testing.dtypes import EPS

__all__ = [
    "C_MAX",
    "C_RMS",
    "C_OUT",
    "C_PAR",
    "FLOOR_ULPS",
    "ZERO_ULPS",
    "ARITH_ULPS",
    "NOISE_Z",
    "TILE_ROWS",
    "HARMLESS",
    "PAR_AMBIGUOUS",
    "UNIT_DTYPES",
    "tight",
    "arith_eps",
    "widen",
    "Budget",
    "budget_of",
    "units",
    "Units",
    "unit_budgets",
    "par_of",
]

C_MAX = 5.0
C_RMS = 2.5
C_OUT = 1.2
C_PAR = 1.25
FLOOR_ULPS = 0.0625
ZERO_ULPS = 16.0
ARITH_ULPS = 4.0
NOISE_Z = 4.0
TILE_ROWS = 128
UNIT_DTYPES = ("bfloat16", "float16")  # where units are judged: rounding to the dtype, not summation order, sets
# their floors (float32 floors of a 128-row unit follow the summation order; PyTorch's memory-efficient float32
# kernel exceeded a unit's budget by 1-21% on an H100 with every tensor share <= 93%: docs/tolerances.md)
PAR_AMBIGUOUS = 2.0  # row-scale shares in (1, 2]: inconclusive, not failing. Rounding the normalised probabilities
# (PyTorch's eager FlexAttention on the CPU: 1.63-1.74x the production floor's row-scale error) and a running
# maximum kept in the dtype (1.44-1.51x on an H100) fall there; a running sum in the dtype (4.2-5.6x) above
HARMLESS = 1.05  # a precision bug whose twin errs less than this much more than the correct twin is no bug here


def tight(name, dtype):
    """True where the production floor and the row-scale criterion judge: out in bfloat16 or float16."""
    return name == "out" and dtype in ("bfloat16", "float16")


def arith_eps(dtype):
    """The unit roundoff of the arithmetic a kernel of ``dtype`` computes in."""
    return EPS["float64"] if dtype == "float64" else EPS["float32"]


def widen(count):
    """1 + NOISE_Z / sqrt(count): the rms budget's allowance for the spread of an rms over ``count`` values."""
    return 1.0 + NOISE_Z / onp.sqrt(onp.maximum(count, 1))


class Budget:
    """The budgets and floors of one tensor or unit (plain numbers)."""

    def __init__(self, b_max, b_rms, f_max, g_rms):
        self.b_max, self.b_rms, self.f_max, self.g_rms = b_max, b_rms, f_max, g_rms
        self.b_par = self.g_par = None  # the row-scale budget and floor, where they apply (out in bfloat16/float16)


def _budgets(name, dtype, f_max, g_sq, r_sq, r_max, count):
    """Element-wise over arrays of units: (B_max, B_rms, f_max, g_rms)."""
    scale = onp.sqrt(r_sq / onp.maximum(count, 1))
    eps, eps_a = EPS[dtype], arith_eps(dtype)
    absolute = onp.where(scale == 0, ZERO_ULPS * eps, FLOOR_ULPS * eps * scale)
    g_rms = onp.sqrt(g_sq / onp.maximum(count, 1))
    c = C_OUT if tight(name, dtype) else C_RMS
    b_max = onp.maximum(C_MAX * f_max, ARITH_ULPS * eps_a * r_max) + absolute
    b_rms = onp.maximum(c * g_rms * widen(count), ARITH_ULPS * eps_a * scale) + absolute
    return b_max, b_rms, f_max, g_rms


def par_of(par_sum, r_sq):
    """The row-parallel statistic sqrt(sum par / sum R^2) (0 for a zero reference)."""
    return float(onp.sqrt(par_sum / r_sq)) if r_sq > 0 else 0.0


def budget_of(name, dtype, floor, per_row):
    """The tensor's ``Budget`` from its floor statistics ``floor`` (5, h, rows) host array and the number of
    elements per row ``per_row`` (batch x head dim)."""
    f_max = float(floor[0].max()) if floor[0].size else 0.0
    g_sq, r_sq = float(floor[1].sum()), float(floor[3].sum())
    r_max = float(floor[4].max()) if floor[4].size else 0.0
    rows = floor.shape[1] * floor.shape[2]
    count = rows * per_row
    b_max, b_rms, f_max, g_rms = (float(x) for x in _budgets(name, dtype, f_max, g_sq, r_sq, r_max, count))
    budget = Budget(b_max, b_rms, f_max, g_rms)
    if tight(name, dtype):
        budget.g_par = par_of(float(floor[2].sum()), r_sq)
        budget.b_par = max(C_PAR * budget.g_par * float(widen(rows)), ARITH_ULPS * arith_eps(dtype))
    return budget


def units(groups):
    """The judging units of a tensor: every declared block (``groups``: [(label, head, row indices)]) split into
    consecutive pieces of at most ``TILE_ROWS`` rows, as a ``Units``."""
    labels, heads, pieces = [], [], []
    for label, head, rows in groups:
        rows = onp.asarray(rows, dtype=onp.int64).ravel()
        if len(rows) <= TILE_ROWS:
            labels.append(label)
            heads.append(head)
            pieces.append(rows)
            continue
        for i0 in range(0, len(rows), TILE_ROWS):
            piece = rows[i0 : i0 + TILE_ROWS]
            labels.append(f"{label} rows {int(piece[0])}..{int(piece[-1])}")
            heads.append(head)
            pieces.append(piece)
    return Units(labels, heads, pieces)


class Units:
    """Units as flat arrays: ``labels``, ``head`` (U,), ``sizes`` (U,), and the (head, row) of every member
    row, unit after unit (``heads``, ``rows``), with each unit's ``starts``; sums and maxima over the units
    of any (h, rows) statistic are then one gather and one ``reduceat``."""

    def __init__(self, labels, heads, pieces):
        self.labels = list(labels)
        self.head = onp.asarray(heads, dtype=onp.int64)
        self.sizes = onp.array([len(p) for p in pieces], dtype=onp.int64)
        self.rows = onp.concatenate(pieces) if pieces else onp.zeros(0, onp.int64)
        self.heads = onp.repeat(self.head, self.sizes)
        self.starts = onp.concatenate([[0], onp.cumsum(self.sizes)[:-1]]).astype(onp.int64)
        self.full = self.sizes > 0

    def __len__(self):
        return len(self.labels)

    def reduce(self, ufunc, stat):
        """``ufunc.reduceat`` of the (h, rows) array ``stat`` over every unit (0 for an empty unit)."""
        out = onp.zeros(len(self))
        if self.full.any():
            out[self.full] = ufunc.reduceat(stat[self.heads, self.rows], self.starts[self.full])
        return out


def unit_budgets(name, dtype, floor, units_, per_row):
    """Arrays (B_max, B_rms, f_max, g_rms, count) over ``units_`` (a ``Units``) from the floor statistics."""
    f_max, r_max = units_.reduce(onp.maximum, floor[0]), units_.reduce(onp.maximum, floor[4])
    g_sq, r_sq = units_.reduce(onp.add, floor[1]), units_.reduce(onp.add, floor[3])
    count = units_.sizes * per_row
    return (*_budgets(name, dtype, f_max, g_sq, r_sq, r_max, count), count)
