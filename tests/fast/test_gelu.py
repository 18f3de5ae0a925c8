"""The fast engine's GELU (``minicp.fast.gelu``) against float64 formulas through SciPy's erfc (an independent
routine), and its float64 route against the reference's formula.

Errors are counted in float32 units (the spacing of float32 numbers at the true value): GELU's at the value
itself, GELU''s at |Phi(h)| + |h phi(h)| (the derivative crosses zero near h = -0.75, where a relative error
means nothing). Entries whose true value is below float32's normal range are left out (their spacing is no
longer relative). The grid covers [-14, 14], where GELU and GELU' pass through every magnitude a float32 holds.
Measured worst cases: 2.3 and 1.9 units, everywhere, tail included; the bound is 3. A fit coefficient off by
1e-5 exceeds it by far.
"""

import numpy as np
import pytest
import scipy.special as sp

from minicp.fast import gelu as G
from minicp.nn import ops

GRID = np.concatenate(
    [
        np.linspace(-14.0, 14.0, 1_400_000).astype(np.float32),
        np.random.default_rng(0).normal(0.0, 3.0, 200_000).astype(np.float32),
        np.float32([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7]),
    ]
)
BOUND = 3.0  # float32 units


def exact(h):
    """(GELU(h), GELU'(h), the derivative's scale |Phi| + |h phi|) in float64."""
    x = h.astype(np.float64)
    phi = 0.5 * sp.erfc(-x / np.sqrt(2.0))
    density = x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    return x * phi, phi + density, np.abs(phi) + np.abs(density)


def units(got, want, scale):
    """|got - want| in float32 spacings at |scale|, where |scale| is a normal float32."""
    keep = np.abs(scale) >= np.finfo(np.float32).tiny
    spacing = np.spacing(np.abs(scale[keep]).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64)[keep] - want[keep]) / spacing


def fast(h):
    rows = h.reshape(-1, 100) if h.size % 100 == 0 else h.reshape(1, -1)
    a, d = np.empty_like(rows), np.empty_like(rows)
    G.gelu_rows(rows.copy(), a, d)
    return a.ravel(), d.ravel()


def worst_units(h):
    """(GELU's worst units, GELU''s worst units) over h."""
    a, d = fast(h)
    want_a, want_d, scale_d = exact(h)
    return units(a, want_a, want_a).max(), units(d, want_d, scale_d).max()


def test_float32_gelu_and_derivative_within_a_few_units_everywhere():
    worst = worst_units(GRID)
    assert max(worst) <= BOUND, worst


def test_the_bound_notices_a_coefficient_off_by_1e_5(monkeypatch):
    coeffs = list(G._COEFFS)
    coeffs[5] += 1e-5
    monkeypatch.setattr(G, "_COEFFS", tuple(coeffs))
    worst = worst_units(GRID)
    assert min(worst) > 10 * BOUND, worst


def test_negative_tail_keeps_relative_accuracy_where_the_reference_formula_cancels():
    h = np.float32([-3.0, -5.0, -8.0, -12.0])
    a, _ = fast(h)
    want, _, _ = exact(h)
    reference32 = ops.gelu(h)  # 0.5 h (1 + erf(h / sqrt 2)) in float32: 1 + erf cancels
    assert np.all(np.abs(a / want - 1.0) < 4e-7)
    assert np.all(np.abs(reference32[1:] / want[1:] - 1.0) > 1e-2)
    assert np.all(np.abs(reference32 - want) < 1e-6)  # ... but only by absolute amounts below float32 rounding of 1


def test_float64_route_is_the_reference_formula_bit_for_bit():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 3.0, (5, 400))
    a, d = np.empty_like(x), np.empty_like(x)
    G.gelu_rows(x.copy(), a, d)
    np.testing.assert_array_equal(a, ops.gelu(x))
    want_d = 0.5 * (1.0 + sp.erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    np.testing.assert_allclose(d, want_d, rtol=1e-14, atol=1e-15)  # GEL' crosses zero near h = -0.75


def test_pieces_bias_and_outputs(monkeypatch):
    rng = np.random.default_rng(1)
    h = rng.normal(0.0, 2.0, (37, 300)).astype(np.float32)  # 37 rows: pieces of several rows and a partial one
    bias = rng.normal(0.0, 1.0, 300).astype(np.float32)
    hb = h + bias
    a, d = np.empty_like(h), np.empty_like(h)
    G.gelu_rows(hb.copy(), a, d)
    for piece in (1, 299, 900, 1 << 20):  # one entry per piece ... the whole block in one piece
        monkeypatch.setattr(G, "PIECE", piece)
        h2, a2, d2 = h.copy(), np.empty_like(h), np.empty_like(h)
        G.gelu_rows(h2, a2, d2, bias=bias)
        only_a, only_d = np.empty_like(h), np.empty_like(h)
        G.gelu_rows(hb.copy(), a=only_a)
        G.gelu_rows(hb.copy(), deriv=only_d)
        np.testing.assert_array_equal(h2, hb)  # h became h + bias
        for got in (a2, only_a):
            np.testing.assert_array_equal(got, a)  # element-wise: the same bits for any piece size
        for got in (d2, only_d):
            np.testing.assert_array_equal(got, d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_inputs_follow_the_formula(dtype):
    with np.errstate(invalid="ignore", over="ignore"):
        a, d = np.empty(4, dtype), np.empty(4, dtype)
        G.gelu_rows(np.array([[np.inf, np.nan, 30.0, -30.0]], dtype), a[None], d[None])
    assert a[0] == np.inf and np.isnan(d[0])  # h phi(h) = inf * 0, as in the formula
    assert np.isnan(a[1]) and np.isnan(d[1])
    assert a[2] == 30.0 and d[2] == 1.0
    assert a[3] == 0.0 and abs(float(d[3])) < 1e-190  # underflows to 0 in float32; 30 phi(-30) ~ 1e-195 in float64
