"""A check runs the kernel on the drawn inputs before it computes the reference, and refuses a kernel that
writes into its inputs (they are the values the reference is then computed from, and the cache keeps them)."""

import numpy as np
import pytest

import minicp
import minicp.testing as mt
from minicp import golden
from minicp.testing import check, guards, reference

CASE = dict(seq_len=48, heads=2, head_dim=8, half_segment=8, seed=3)


def _ecp(q, k, v):
    """A correct NumPy kernel: minicp's own ECP attention, (b, h, n, d) in and out."""
    return np.asarray(minicp.attention("ecp", q, k, v, half_segment=8))


def test_the_kernel_runs_before_the_reference_is_computed(monkeypatch, tmp_path):
    order = []
    monkeypatch.setattr(
        check,
        "shared_complete",
        lambda case, cache_dir=None: order.append("reference") or reference.shared_complete(case),
    )

    def kernel(q, k, v):
        order.append("kernel")
        return _ecp(q, k, v)

    mt.clear_cache()
    assert mt.assert_matches_reference(kernel, "ecp", **CASE).ok
    assert order == ["kernel", "reference"]
    path = str(tmp_path / "ecp.npz")
    golden.save_golden(golden.make_golden("ecp", **CASE), path)
    for verify in (False, True):  # verifying the file (check=True) computes the reference before the kernel
        mt.clear_cache()  # runs; the check's own completion then finds it in the cache
        order.clear()
        assert golden.assert_matches_golden(kernel, path, check=verify).ok
        assert order == ["kernel", "reference"]


def test_inputs_then_completion_equal_reference_case(tmp_path):
    mt.clear_cache()
    whole = reference.reference_case("ecp", grads=True, dtype="bfloat16", **CASE)
    mt.clear_cache()
    first = reference.case_inputs("ecp", grads=True, dtype="bfloat16", **CASE)
    assert "out" not in first and {"q", "k", "v", "dout", "rows", "plan", "case"} <= set(first)
    done = reference.complete_case(first, str(tmp_path))
    for key, value in whole.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(done[key], value), key
    cached = reference.case_inputs("ecp", grads=True, dtype="bfloat16", **CASE)  # complete from memory
    assert np.array_equal(cached["dv"], whole["dv"])
    mt.clear_cache()
    inputs = reference.case_inputs("ecp", grads=True, dtype="bfloat16", **CASE)  # drawn again: the disk entry
    assert "out" not in inputs  # is read on completion, after the kernel, and checked against these inputs
    from_disk = reference.complete_case(inputs, str(tmp_path))
    assert np.array_equal(from_disk["floor_dq"], whole["floor_dq"])
    with pytest.raises(ValueError, match="case_inputs or reference_case"):
        reference.complete_case({"q": 1})


@pytest.mark.parametrize("target", ["q", "v"])
def test_a_kernel_writing_into_its_inputs_is_refused_and_the_cache_forgets_them(target):
    mt.clear_cache()
    draw = {key: value.copy() for key, value in reference.case_inputs("ecp", **CASE).items() if key in "qkv"}

    def in_place(q, k, v):
        out = _ecp(q, k, v)
        {"q": q, "v": v}[target][0, 0, 5, 1] += 1.0  # e.g. a RoPE or scaling done in place
        return out

    with pytest.raises(ValueError, match=rf"changed its input\(s\) {target} in place"):  # shared, as from_numpy
        mt.assert_matches_reference(in_place, "ecp", array_fn=lambda a: a, **CASE)
    assert mt.assert_matches_reference(in_place, "ecp", **CASE).ok  # the default array_fn hands over copies
    again = reference.case_inputs("ecp", **CASE)  # drawn anew, not the damaged arrays
    assert all(np.array_equal(again[key], draw[key]) for key in draw)


def test_digest_sees_a_changed_value_a_permutation_and_a_reshape_of_any_dtype():
    for dtype in (np.float64, np.float32, np.float16):
        a = np.random.default_rng(0).standard_normal((3, 5, 7)).astype(dtype)
        b = a.copy()
        b[2, 4, 6] = np.nextafter(b[2, 4, 6], np.inf)  # one unit in the last place
        swapped = a.copy()
        swapped[0, 0, [0, 1]] = swapped[0, 0, [1, 0]]  # the same words, so the same 32-bit sum
        assert guards.digest({"x": a}) == guards.digest({"x": a.copy()})
        for other in (b, swapped, a.reshape(5, 3, 7), a[::-1].copy(), np.asfortranarray(a)[:, :, :6]):
            assert guards.digest({"x": a}) != guards.digest({"x": other})
            assert guards.combined_digest({"x": a, "y": b}) != guards.combined_digest({"x": other, "y": b})
        assert guards.combined_digest({"x": a, "y": b}) != guards.combined_digest({"x": b, "y": a})


@pytest.mark.parametrize("layout", ["bhnd", "bnhd"])
@pytest.mark.parametrize("shared", [True, False])
def test_the_kernel_gets_64_byte_aligned_contiguous_inputs(layout, shared, tmp_path):
    seen = []

    def kernel(q, k, v):
        seen.extend((x.ctypes.data % 64, x.flags.c_contiguous) for x in (q, k, v))
        swap = (lambda a: np.swapaxes(a, 1, 2)) if layout == "bnhd" else (lambda a: a)
        return swap(_ecp(swap(q), swap(k), swap(v)))

    for cache in (None, str(tmp_path), str(tmp_path)):  # drawn, drawn and stored, loaded from the disk cache
        mt.clear_cache()
        kwargs = {"array_fn": (lambda a: a)} if shared else {}
        assert mt.assert_matches_reference(kernel, "ecp", layout=layout, cache_dir=cache, **kwargs, **CASE).ok
    assert seen and all(offset == 0 and contiguous for offset, contiguous in seen)


def test_aligned_arrays_of_any_shape_and_dtype():
    from minicp.testing.convert import aligned_copy, aligned_empty

    for shape, dtype in (((3, 5, 7), np.float32), ((0,), np.float64), ((), np.float16), ((2, 9), np.uint8)):
        a = aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous
        assert a.size == 0 or a.ctypes.data % 64 == 0  # an empty array has no data to align
    x = np.random.default_rng(1).standard_normal((4, 6))[:, ::2]  # not contiguous
    y = aligned_copy(x)
    assert np.array_equal(x, y) and y.flags.c_contiguous and y.ctypes.data % 64 == 0
