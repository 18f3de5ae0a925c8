"""The verdict's memory-light paths against plain full-array formulas: budgets taken in pieces, and the
judging of a passing tensor one head at a time (no full-size error array)."""

import dataclasses

import numpy as np
import pytest

from minicp.testing import verdict

SHAPES = [(1, 4, 300, 64), (2, 3, 17, 5), (1, 1, 1, 1)]


def _arrays(shape, seed):
    rng = np.random.default_rng(seed)
    r = rng.standard_normal(shape)
    noisy = lambda s: (r + rng.standard_normal(shape) * s).astype(np.float32)
    return r, noisy(1e-7), noisy(5e-8), noisy(1e-7)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_accurate", [False, True])
def test_budgets_in_pieces_equal_the_full_array_formulas(shape, with_accurate, monkeypatch):
    monkeypatch.setattr(verdict, "PIECE", 1000)  # several pieces, the last one partial
    r, floor, accurate, _ = _arrays(shape, 1)
    floor.flat[len(floor.flat) // 2] = np.nan  # a non-finite floor error counts as 0
    e_f = np.abs(floor.astype(np.float64) - r)
    e_f[~np.isfinite(e_f)] = 0.0
    e_g = np.abs(accurate.astype(np.float64) - r) if with_accurate else e_f
    b_max, b_rms, f_max, g_rms = verdict.budgets(r, floor, "float32", accurate if with_accurate else None)
    assert f_max == e_f.max()
    assert g_rms == pytest.approx(np.sqrt(np.mean(e_g**2)), rel=1e-12)
    absolute = verdict.FLOOR_ULPS * verdict.EPS["float32"] * np.sqrt(np.mean(r**2))
    assert b_max == pytest.approx(verdict.C_MAX * f_max + absolute, rel=1e-12)
    assert b_rms == pytest.approx(verdict.C_RMS * g_rms + absolute, rel=1e-12)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", ["passing", "over the max budget", "nan", "inf reference"])
def test_lean_judging_gives_the_full_paths_verdict(shape, case, monkeypatch):
    r, floor, _, _ = _arrays(shape, 2)
    actual = floor.copy()  # the floor's own errors: within both budgets by construction
    if case == "over the max budget":
        actual.flat[-1] += 1e-3
    elif case == "nan":
        actual.flat[0] = np.nan
    elif case == "inf reference":
        r = r.copy()
        r.flat[0] = actual.flat[0] = np.inf
    groups = [("block 0", 0, np.arange(min(3, shape[2])))]
    lean = verdict.judge("out", actual, r, floor, "float32", groups=groups)
    monkeypatch.setattr(verdict, "_lean_stats", lambda *a: None)  # the full path only
    full = verdict.judge("out", actual, r, floor, "float32", groups=groups)
    assert repr(dataclasses.asdict(lean)) == repr(dataclasses.asdict(full))
    assert lean.ok == (case in ("passing", "inf reference"))
