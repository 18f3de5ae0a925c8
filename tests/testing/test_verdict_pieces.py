"""The verdict's pieces against plain full-array formulas: floor statistics and budgets, row statistics taken
head by head (the host) or all at once (a GPU), and the verdicts of passing, failing and non-finite tensors."""

import numpy as np
import pytest

from minicp.testing import budgets, rowstats, verdict
from minicp.testing.dtypes import EPS

SHAPES = [(1, 4, 300, 64), (2, 3, 17, 5), (1, 1, 1, 1)]


def _arrays(shape, seed):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(shape)
    noisy = lambda s: (r + rng.standard_normal(shape) * s).astype(np.float32)
    return r, noisy(1e-7), noisy(5e-8)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", ["out", "dq"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_budgets_from_row_statistics_equal_the_full_array_formulas(shape, name, dtype):
    r, plain, production = _arrays(shape, 1)
    floor = rowstats.floor_stats(r, plain, production)
    b = budgets.budget_of(name, dtype, floor, shape[0] * shape[3])
    e_f, e_g = np.abs(plain - r), production - r
    scale = np.sqrt(np.mean(r**2))
    eps, eps_a = EPS[dtype], EPS["float32"]
    c = budgets.C_OUT if name == "out" and dtype == "bfloat16" else budgets.C_RMS
    assert b.f_max == pytest.approx(e_f.max(), rel=1e-12)
    assert b.g_rms == pytest.approx(np.sqrt(np.mean(e_g**2)), rel=1e-12)
    arith = budgets.ARITH_ULPS * eps_a
    assert b.b_max == pytest.approx(
        max(budgets.C_MAX * e_f.max(), arith * np.abs(r).max()) + budgets.FLOOR_ULPS * eps * scale
    )
    widen = 1 + budgets.NOISE_Z / np.sqrt(r.size)
    assert b.b_rms == pytest.approx(
        max(c * np.sqrt(np.mean(e_g**2)) * widen, arith * scale) + budgets.FLOOR_ULPS * eps * scale
    )
    if name == "out" and dtype == "bfloat16":  # the row-scale statistic: the errors' parts along each row of R
        along = np.einsum("bhrd,bhrd->bhr", e_g, r) ** 2 / np.einsum("bhrd,bhrd->bhr", r, r)
        assert b.g_par == pytest.approx(np.sqrt(along.sum() / (r**2).sum()), rel=1e-10)
    else:
        assert b.b_par is None


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_row_statistics_head_by_head_equal_all_heads_at_once(shape):
    r, plain, _ = _arrays(shape, 2)
    heads = rowstats.error_stats(plain, r, parallel=True)
    whole = rowstats._stats(np, plain, r, True)
    for key in ("max", "sq", "par"):
        assert np.allclose(heads[key], whole[key], rtol=1e-12, atol=0), key


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", ["passing", "over the max budget", "nan", "inf reference"])
def test_verdicts_of_passing_failing_and_non_finite_tensors(shape, case):
    r, plain, production = _arrays(shape, 3)
    floor = rowstats.floor_stats(r, plain, production)
    actual = production.copy()  # the production floor's own errors: within every budget
    if case == "over the max budget":
        actual.flat[-1] += 1e-3
    elif case == "nan":
        actual.flat[0] = np.nan
    elif case == "inf reference":
        r = r.copy()
        r.flat[0] = actual.flat[0] = np.inf
        floor = rowstats.floor_stats(r, plain, production)
    v = verdict.judge("dq", actual, r, None, "float32", stats=floor)
    assert v.ok == (case in ("passing", "inf reference")), v.message
    if case == "nan":
        assert v.worst_index == (0, 0, 0, 0) and "rows over budget: 0" in v.message
