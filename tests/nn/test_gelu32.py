"""The float32 GELU of minicp.nn.gelu32 against float64 formulas through SciPy's erfc (an independent routine).

Errors are counted in float32 units (the spacing of float32 numbers at the true value): GELU's at the
value itself, GELU''s at |Phi(h)| + |h phi(h)| (the derivative crosses zero near h = -0.75, where a
relative error means nothing). Measured worst cases on an AVX-512 machine: 10.5 and 7.3 units on
[-3, 14]; 125 and 81 units in the negative tail down to -14, where one float32 rounding of h^2 / 2 (up
to 98) moves exp(-h^2 / 2) by that many units. The bounds leave room for other machines' exp: 16 and
256 units. A coefficient off by 1e-5 exceeds them.
"""

import numpy as np
import pytest
import scipy.special as sp

from minicp.nn import fused, gelu32

GRID = np.concatenate(
    [
        np.linspace(-14.0, 14.0, 1_400_000).astype(np.float32),
        np.random.default_rng(0).normal(0.0, 3.0, 200_000).astype(np.float32),
        np.float32([0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7]),
    ]
)


def exact(h):
    """(GELU(h), GELU'(h), the derivative's scale |Phi| + |h phi|) in float64."""
    x = h.astype(np.float64)
    phi = 0.5 * sp.erfc(-x / np.sqrt(2.0))
    density = x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    return x * phi, phi + density, np.abs(phi) + np.abs(density)


def units(got, want, scale):
    """|got - want| in float32 spacings at |scale|; entries whose scale is below float32's normal range are
    left out (there the spacing is no longer relative)."""
    keep = np.abs(scale) >= np.finfo(np.float32).tiny
    spacing = np.spacing(np.abs(scale[keep]).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64)[keep] - want[keep]) / spacing, keep


def fast(h):
    rows = h.reshape(-1, 100) if h.size % 100 == 0 else h.reshape(1, -1)
    a, d = np.empty_like(rows), np.empty_like(rows)
    gelu32.gelu_rows(rows.copy(), a, d)
    return a.ravel(), d.ravel()


def worst_units(h):
    """{region: (GELU's worst units, GELU''s worst units)} for the two regions of the bounds."""
    a, d = fast(h)
    want_a, want_d, scale_d = exact(h)
    ea, keep_a = units(a, want_a, want_a)
    ed, keep_d = units(d, want_d, scale_d)
    out = {}
    for name, lo, hi in (("main", -3.0, np.inf), ("tail", -np.inf, -3.0)):
        ia = (h[keep_a] >= lo) & (h[keep_a] < hi)
        id_ = (h[keep_d] >= lo) & (h[keep_d] < hi)
        out[name] = (ea[ia].max(), ed[id_].max())
    return out


def test_float32_gelu_and_derivative_within_a_few_units_of_float64():
    w = worst_units(GRID)
    assert w["main"][0] <= 16 and w["main"][1] <= 16, w
    assert w["tail"][0] <= 256 and w["tail"][1] <= 256, w


def test_the_bound_notices_a_coefficient_off_by_1e_5(monkeypatch):
    coeffs = list(gelu32._COEFFS)
    coeffs[5] = np.float32(coeffs[5] + 1e-5)
    monkeypatch.setattr(gelu32, "_COEFFS", tuple(coeffs))
    w = worst_units(GRID)
    assert w["main"][0] > 16 or w["main"][1] > 16, w


def test_negative_tail_keeps_relative_accuracy_the_direct_float32_route_loses():
    h = np.float32([-3.0, -5.0, -8.0])
    a, _ = fast(h)
    want, _, _ = exact(h)
    direct = 0.5 * h * (1.0 + sp.erf(h * np.float32(1.0 / np.sqrt(2.0))))  # float32 throughout
    assert np.all(np.abs(a / want - 1.0) < 1e-5)
    assert np.all(np.abs(direct[1:] / want[1:] - 1.0) > 1e-2)  # 1 + erf cancels: a few units of 1e-7, or 0


def test_pieces_bias_and_outputs():
    rng = np.random.default_rng(1)
    h = rng.normal(0.0, 2.0, (37, 300)).astype(np.float32)  # 37 rows, pieces of several rows and a partial one
    bias = rng.normal(0.0, 1.0, 300).astype(np.float32)
    a, d = np.empty_like(h), np.empty_like(h)
    hb = h + bias
    gelu32.gelu_rows(hb.copy(), a, d)
    for piece in (1, 299, 900, 1 << 20):  # one row per piece ... the whole block in one piece
        old = gelu32.PIECE
        gelu32.PIECE = piece
        try:
            h2, a2, d2 = h.copy(), np.empty_like(h), np.empty_like(h)
            gelu32.gelu_rows(h2, a2, d2, bias=bias)
            only_a, only_d = np.empty_like(h), np.empty_like(h)
            gelu32.gelu_rows(hb.copy(), a=only_a)
            gelu32.gelu_rows(hb.copy(), deriv=only_d)
        finally:
            gelu32.PIECE = old
        np.testing.assert_array_equal(h2, hb)  # h became h + bias
        for got in (a2, only_a):
            np.testing.assert_array_equal(got, a)  # element-wise: the same bits for any piece size
        for got in (d2, only_d):
            np.testing.assert_array_equal(got, d)


def test_non_finite_inputs_follow_the_formula():
    with np.errstate(invalid="ignore"):
        a, d = fast(np.float32([np.inf, np.nan, 30.0, -30.0]))
    assert a[0] == np.inf and np.isnan(d[0])  # h phi(h) = inf * 0, as in the direct formula
    assert np.isnan(a[1]) and np.isnan(d[1])
    assert a[2] == 30.0 and d[2] == 1.0
    assert a[3] == 0.0 and d[3] == 0.0


@pytest.mark.parametrize(
    "h, a, message",
    [
        (np.zeros((2, 3)), None, "h must be a C-contiguous float32"),
        (np.zeros((3, 2), np.float32).T, None, "h must be a C-contiguous float32"),
        (np.zeros(3, np.float32), None, "h must be 2-D"),
        (np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), "a has shape"),
        (np.zeros((2, 3), np.float32), np.zeros((2, 3)), "a must be a C-contiguous float32"),
    ],
)
def test_bad_arguments_are_named(h, a, message):
    with pytest.raises(ValueError, match=message):
        gelu32.gelu_rows(h, a)


def test_fused_gelu_primitives_use_it_for_float32_and_scipy_for_float64():
    rng = np.random.default_rng(2)
    x64 = rng.normal(0.0, 2.0, (5, 40))
    g64 = rng.normal(0.0, 1.0, (5, 40))
    x32, g32 = x64.astype(np.float32), g64.astype(np.float32)
    a, d = np.empty_like(x32), np.empty_like(x32)
    gelu32.gelu_rows(x32.copy(), a, d)
    np.testing.assert_array_equal(fused.gelu(x32), a)
    np.testing.assert_array_equal(fused.gelu_vjp(g32, x32), d * g32)
    phi = 0.5 * (1.0 + sp.erf(x64 / np.sqrt(2.0)))  # float64: SciPy's erf, the readable formula
    np.testing.assert_allclose(fused.gelu(x64), x64 * phi, rtol=1e-14, atol=1e-300)
    want_d = phi + x64 * np.exp(-0.5 * x64 * x64) / np.sqrt(2.0 * np.pi)
    np.testing.assert_allclose(fused.gelu_vjp(g64, x64), want_d * g64, rtol=1e-13, atol=1e-300)
