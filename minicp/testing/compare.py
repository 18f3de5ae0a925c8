"""Element-wise comparison with fixed per-dtype tolerances (``compare``, ``assert_close``).

Test: ``|actual - expected| <= atol + rtol * |expected|`` for every element whose expected value is
finite; where the expected value is +inf, -inf or NaN the actual value must be the same (same sign of
infinity, NaN for NaN), otherwise the element fails. A non-finite reference never passes anything.
"""

from dataclasses import dataclass, field

import numpy as onp

from minicp.testing.convert import to_numpy_any
from minicp.testing.dtypes import dtype_name
from minicp.testing.where import describe_positions, fmt_index, percent

__all__ = [
    "TOLERANCES",
    "MismatchError",
    "Comparison",
    "default_tolerances",
    "compare",
    "assert_close",
    "check_tolerance",
    "nonfinite_mismatch",
]

# dtype name -> (rtol, atol)
TOLERANCES = {
    "float64": (1e-10, 1e-12),
    "float32": (1e-4, 1e-5),
    "bfloat16": (2e-2, 2e-2),
    "float16": (2e-3, 2e-3),
}


class MismatchError(AssertionError):
    """A tensor differs from the reference. ``.comparison`` holds the numbers (a ``Comparison`` or a
    ``Report``)."""

    def __init__(self, message, comparison=None):
        super().__init__(message)
        self.comparison = comparison


def default_tolerances(dtype):
    """(rtol, atol) for a dtype name or dtype object; ValueError for a dtype with no default."""
    name = dtype_name(dtype)
    if name not in TOLERANCES:
        raise ValueError(
            f"dtype {dtype!r} has no default tolerance; pass rtol and atol, or one of {sorted(TOLERANCES)}"
        )
    return TOLERANCES[name]


@dataclass
class Comparison:
    """Everything ``compare`` measured. ``ok`` is True when every element is within tolerance."""

    name: str
    shape: tuple
    actual_dtype: str
    dtype: str
    rtol: float
    atol: float
    ok: bool
    size: int = 0
    n_bad: int = 0
    n_nan: int = 0
    n_nonfinite_bad: int = 0
    max_abs: float = 0.0
    max_abs_index: tuple = ()
    max_rel: float = 0.0
    worst_index: tuple = ()
    worst_expected: float = 0.0
    worst_actual: float = 0.0
    worst_ratio: float = 0.0
    bad_ranges: list = field(default_factory=list)
    bad_where: list = field(default_factory=list)
    note: str = ""
    message: str = ""

    @property
    def bad_fraction(self):
        return self.n_bad / self.size if self.size else 0.0


def _check_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string naming the tensor, got {name!r}")


def check_tolerance(label, value):
    """None, or ``value`` as a finite float >= 0 (ValueError naming ``label`` otherwise: an infinite or NaN
    tolerance would pass anything)."""
    if value is None:
        return None
    numeric = isinstance(value, (int, float, onp.floating, onp.integer)) and not isinstance(value, bool)
    if not numeric or not 0 <= value < onp.inf:
        raise ValueError(f"{label} must be a finite non-negative number, got {value!r}")
    return float(value)


def nonfinite_mismatch(a64, e64):
    """Boolean array: where ``expected`` is +-inf or NaN and ``actual`` is not the same non-finite value."""
    e_nan, e_inf = onp.isnan(e64), onp.isinf(e64)
    return (e_nan & ~onp.isnan(a64)) | (e_inf & (a64 != e64))


def _tolerances(name, tol_dtype, rtol, atol):
    if rtol is None or atol is None:
        if tol_dtype not in TOLERANCES:
            raise ValueError(f"dtype {tol_dtype!r} (of {name}) has no default tolerance; pass dtype=, or rtol and atol")
        d_rtol, d_atol = TOLERANCES[tol_dtype]
        rtol = d_rtol if rtol is None else rtol
        atol = d_atol if atol is None else atol
    return rtol, atol


def compare(actual, expected, *, name="tensor", dtype=None, rtol=None, atol=None, note="", actual_dtype=None):
    """Compare ``actual`` with ``expected`` elementwise; returns a ``Comparison`` (never raises on mismatch).

    ``dtype`` picks the default tolerances (default: the dtype of ``actual`` as given, so a torch
    bfloat16 tensor gets the bfloat16 tolerances); ``rtol``/``atol`` override them. ``note`` is appended
    to the message (e.g. how atol was scaled). Where ``expected`` is non-finite, ``actual`` must hold the
    same value (NaN for NaN, the same infinity) or the element fails.
    ``actual_dtype`` labels actual's dtype in the message when it was converted before the call.
    """
    _check_name(name)
    rtol, atol = check_tolerance("rtol", rtol), check_tolerance("atol", atol)
    actual_dtype = dtype_name(actual) if actual_dtype is None else dtype_name(actual_dtype)
    tol_dtype = dtype_name(dtype) if dtype is not None else actual_dtype
    rtol, atol = _tolerances(name, tol_dtype, rtol, atol)
    a, e = to_numpy_any(actual), to_numpy_any(expected)
    if a.shape != e.shape:
        msg = (
            f"{name}: shape mismatch: actual {tuple(a.shape)} vs expected {tuple(e.shape)}"
            f" (actual dtype {actual_dtype})" + (f"\n  {note}" if note else "")
        )
        return Comparison(
            name, tuple(e.shape), actual_dtype, tol_dtype, rtol, atol, False, size=int(e.size), note=note, message=msg
        )
    if a.dtype.kind not in "biuf" or e.dtype.kind not in "biuf":
        raise ValueError(f"{name}: only real numeric arrays can be compared, got {a.dtype} and {e.dtype}")
    a64, e64 = a.astype(onp.float64), e.astype(onp.float64)
    diff, allowed, bad, nonfinite_bad = _elementwise(a64, e64, rtol, atol)
    c = Comparison(
        name,
        tuple(e.shape),
        actual_dtype,
        tol_dtype,
        rtol,
        atol,
        not bool(bad.any()),
        size=int(a.size),
        n_bad=int(bad.sum()),
        n_nan=int((onp.isnan(a64) & ~onp.isnan(e64)).sum()),
        n_nonfinite_bad=int(nonfinite_bad.sum()),
        note=note,
    )
    if c.size:
        _worst(c, a64, e64, diff, allowed, rtol, atol)
        if c.n_bad:
            where = onp.nonzero(bad)
            c.bad_ranges = [(int(ax.min()), int(ax.max())) for ax in where]
            c.bad_where = [describe_positions(ax) for ax in where]
    c.message = _message(c, e.dtype.name, note)
    return c


def _elementwise(a64, e64, rtol, atol):
    with onp.errstate(invalid="ignore", over="ignore", divide="ignore"):
        finite = onp.isfinite(e64)
        diff = onp.where(finite, onp.abs(a64 - e64), 0.0)
        diff = onp.where(onp.isnan(diff), onp.inf, diff)  # NaN or inf in actual only: infinitely wrong
        allowed = onp.where(finite, atol + rtol * onp.abs(onp.where(finite, e64, 0.0)), 0.0)
        nonfinite_bad = nonfinite_mismatch(a64, e64)
        diff = onp.where(nonfinite_bad, onp.inf, diff)
        bad = (diff > allowed) | nonfinite_bad
    return diff, allowed, bad, nonfinite_bad


def _worst(c, a64, e64, diff, allowed, rtol, atol):
    with onp.errstate(invalid="ignore", over="ignore", divide="ignore"):
        ratio = onp.where(allowed > 0, diff / onp.where(allowed > 0, allowed, 1.0), onp.where(diff > 0, onp.inf, 0.0))
        mag = onp.where(onp.isfinite(e64), onp.abs(e64), 0.0)
        rel = onp.where(mag > 0, diff / onp.where(mag > 0, mag, 1.0), onp.where(diff > 0, onp.inf, 0.0))
    i_abs = onp.unravel_index(int(onp.argmax(diff)), diff.shape)
    i_worst = onp.unravel_index(int(onp.argmax(ratio)), ratio.shape)
    big = rtol * mag >= atol  # where rtol, not atol, decides
    if not big.any():
        big = mag > 0
    c.max_abs, c.max_abs_index = float(diff[i_abs]), tuple(int(i) for i in i_abs)
    c.max_rel = float(rel[big].max()) if big.any() else 0.0
    c.worst_index = tuple(int(i) for i in i_worst)
    c.worst_expected, c.worst_actual = float(e64[i_worst]), float(a64[i_worst])
    c.worst_ratio = float(ratio[i_worst])


def _message(c, expected_dtype, note):
    head = f"{c.name}: "
    tol_text = f"rtol={c.rtol:.1e}, atol={c.atol:.1e} (dtype {c.dtype})"
    shape_text = f"shape {c.shape}, actual dtype {c.actual_dtype}, expected dtype {expected_dtype}"
    if c.ok:
        return f"{head}OK, {shape_text}; max abs err {c.max_abs:.3e}, max rel err {c.max_rel:.3e} within {tol_text}"
    allowed = c.atol + c.rtol * abs(c.worst_expected) if onp.isfinite(c.worst_expected) else 0.0
    lines = [
        f"{head}{c.n_bad} of {c.size} elements ({percent(c.bad_fraction)}) are out of tolerance",
        f"  {shape_text}",
        f"  tolerance: |actual - expected| <= atol + rtol * |expected| with {tol_text}",
        f"  max abs err {c.max_abs:.4g} at {fmt_index(c.max_abs_index)}; "
        f"max rel err {c.max_rel:.4g} (over elements where rtol * |expected| >= atol)",
        f"  worst element {fmt_index(c.worst_index)}: expected {c.worst_expected:.8g}, actual {c.worst_actual:.8g} "
        f"(error {c.worst_ratio:.3g}x the allowed {allowed:.3g})",
        "  bad elements lie in " + " x ".join(f"[{lo}..{hi}]" for lo, hi in c.bad_ranges) + " (index range per axis)",
        "  bad indices per axis: " + "; ".join(f"axis {i}: {w}" for i, w in enumerate(c.bad_where)),
    ]
    if c.n_nan:
        lines.append(f"  {c.n_nan} NaN(s) in actual where expected is not NaN")
    if c.n_nonfinite_bad:
        lines.append(f"  {c.n_nonfinite_bad} element(s) where expected is +-inf or NaN and actual differs")
    if note:
        lines.append(f"  {note}")
    return "\n".join(lines)


def assert_close(actual, expected, *, name, dtype=None, rtol=None, atol=None):
    """Raise ``MismatchError`` (an AssertionError) with a readable report unless actual ~= expected.

    ``name`` names the tensor in the message. ``dtype`` selects default tolerances (``TOLERANCES``;
    default: actual's own dtype); ``rtol``/``atol`` override them. Accepts NumPy, CuPy, PyTorch, JAX
    arrays (see ``to_numpy_any``). Where expected is non-finite, actual must match it exactly.
    Returns the ``Comparison`` when it passes.
    """
    __tracebackhide__ = True  # pytest shows the message, not these frames
    c = compare(actual, expected, name=name, dtype=dtype, rtol=rtol, atol=atol)
    if not c.ok:
        raise MismatchError(c.message, c)
    return c
