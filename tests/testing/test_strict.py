"""Wrong outputs that used to pass, each refused with a message naming why: complex values, another dtype
(wider or narrower than the case's), the other layout, an infinite tolerance, a kernel that permutes its
inputs in place (their 32-bit word sum unchanged)."""

import warnings

import numpy as np
import pytest

import minicp
import minicp.testing as mt
from minicp.testing import check, reference

CASE = dict(seq_len=32, heads=2, head_dim=8, half_segment=8)


def ecp(q, k, v):
    """Correct ECP, computed in float64 and returned in the inputs' dtype."""
    wide = [x.astype(np.float64) for x in (q, k, v)]
    return np.asarray(minicp.attention("ecp", *wide, half_segment=8)).astype(q.dtype)


def failure(fn, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning (or any other) on the way to the verdict
        with pytest.raises(mt.MismatchError) as info:
            mt.assert_matches_reference(fn, "ecp", **{**CASE, **kwargs})
    return str(info.value)


def test_a_correct_kernel_passes_in_every_dtype():
    for dtype in ("float64", "float32", "float16"):
        assert mt.assert_matches_reference(ecp, "ecp", dtype=dtype, **CASE).ok
    bf16 = lambda q, k, v: mt.round_to_bfloat16(ecp(q, k, v))  # float32 holding bfloat16 values
    assert mt.assert_matches_reference(bf16, "ecp", dtype="bfloat16", **CASE).ok


@pytest.mark.parametrize("fixed", [False, True], ids=["budgets", "rtol"])
def test_a_complex_output_fails(fixed):
    msg = failure(lambda q, k, v: ecp(q, k, v) + 5j, **(dict(rtol=1e-4) if fixed else {}))
    assert msg.startswith("out: dtype complex64 is complex; a kernel returns real float32 values")


@pytest.mark.parametrize(
    "dtype, returned, words",
    [
        ("bfloat16", np.float64, "dtype float64 is wider than the case's bfloat16"),
        ("bfloat16", np.float32, "dtype float32 holding values that are not bfloat16 numbers is wider than"),
        ("bfloat16", np.float16, "dtype float16 is not the case's bfloat16"),
        ("float32", np.float64, "dtype float64 is wider than the case's float32"),
        ("float32", np.float16, "dtype float16 is narrower than the case's float32"),
        ("float64", np.float32, "dtype float32 is narrower than the case's float64"),
        ("float16", np.float32, "dtype float32 is wider than the case's float16"),
        ("float32", np.int64, "dtype int64 is not a floating-point dtype"),
    ],
)
def test_an_output_of_another_dtype_fails(dtype, returned, words):
    msg = failure(lambda q, k, v: ecp(q, k, v).astype(returned), dtype=dtype)
    assert msg.startswith("out: " + words), msg
    assert failure(lambda q, k, v: ecp(q, k, v).astype(returned), dtype=dtype, atol=1e-2).startswith("out: " + words)


def test_a_gradient_of_another_dtype_fails_by_name():
    def grad_fn(q, k, v, dout):
        g = mt.reference_case("ecp", grads=True, **CASE)  # the exact gradients, but in float64
        return g["out"].astype(np.float32), g["dq"], g["dk"].astype(np.float32), g["dv"].astype(np.float32)

    msg = failure(ecp, check_grads=True, grad_fn=grad_fn)
    assert msg.startswith("dq: dtype float64 is wider than the case's float32") and "1 of 4 tensors failed" in msg


def test_the_other_layout_fails_with_a_hint():
    bnhd = lambda q, k, v: np.swapaxes(ecp(q, k, v), 1, 2)
    assert failure(bnhd).startswith(
        "out: shape (1, 32, 2, 8) is the bnhd layout of the expected (1, 2, 32, 8): pass layout='bnhd'"
    )
    bhnd = lambda q, k, v: np.swapaxes(ecp(*(np.swapaxes(x, 1, 2) for x in (q, k, v))), 1, 2).swapaxes(1, 2)
    assert failure(bhnd, layout="bnhd").startswith(
        "out: shape (1, 2, 32, 8) is the bhnd layout of the expected (1, 32, 2, 8): pass layout='bhnd'"
    )
    assert failure(lambda q, k, v: ecp(q, k, v)[..., :4]).startswith(
        "out: shape mismatch: actual (1, 2, 32, 4) vs expected (1, 2, 32, 8)"
    )


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan, 1e400])
def test_infinite_or_nan_tolerances_are_refused(bad, tmp_path):
    a = np.ones(3)
    for call in (
        lambda: mt.compare(a, a, name="x", rtol=bad),
        lambda: mt.assert_close(a, a + 100, name="x", atol=bad),
        lambda: mt.assert_matches_reference(ecp, "ecp", rtol=bad, **CASE),
    ):
        with pytest.raises(ValueError, match="must be a finite non-negative number"):
            call()
    path = minicp.golden.save_golden(minicp.golden.make_golden("ecp", **CASE), tmp_path / "g.npz")
    with pytest.raises(ValueError, match="atol must be a finite non-negative number"):
        minicp.golden.assert_matches_golden(lambda q, k, v: 0 * q, path, atol=bad)


def test_a_kernel_permuting_its_inputs_is_caught_before_the_reference_is_computed(monkeypatch):
    """Swapping two values keeps the 32-bit word sum the old fingerprint used; the sha256 digest sees it."""
    mt.clear_cache()
    completed = []
    monkeypatch.setattr(
        check, "shared_complete", lambda *a, **k: completed.append(1) or reference.shared_complete(*a, **k)
    )

    def permuting(q, k, v):
        out = ecp(q, k, v)
        k[0, 1, [3, 17]] = k[0, 1, [17, 3]]  # rows swapped in place: the same words
        return out

    with pytest.raises(ValueError, match=r"changed its input\(s\) k in place"):
        mt.assert_matches_reference(permuting, "ecp", array_fn=lambda a: a, **CASE)  # shares the case's memory
    assert completed == []  # refused before any reference was computed from the permuted inputs
    fresh = reference.seeded_inputs(0, 1, 2, 32, 8, 32, "float32")
    assert np.array_equal(reference.case_inputs("ecp", **CASE)["k"], fresh["k"])  # the cache forgot them


def test_judge_refuses_a_complex_array_by_itself():
    r = np.ones((1, 1, 2, 2))
    v = mt.judge("out", r + 1j, r, r, "float32")
    assert not v.ok and v.message == "out: dtype complex128 is complex; compare real values"
