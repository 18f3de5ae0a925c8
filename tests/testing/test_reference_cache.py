"""The reference cache (memory and disk) gives what a fresh computation gives; a kernel runs once per check."""

import os

import numpy as np
import pytest

import minicp.testing as mt
from minicp.testing import reference

CASE = dict(seq_len=48, heads=2, head_dim=8, half_segment=8, dtype="bfloat16", seed=4, grads=True)


def test_disk_cache_equals_a_fresh_computation_and_damage_is_recomputed(tmp_path):
    mt.clear_cache()
    fresh = mt.reference_case("ecp", **CASE)
    mt.clear_cache()
    mt.reference_case("ecp", cache_dir=str(tmp_path), **CASE)
    (entry,) = os.listdir(tmp_path)
    mt.clear_cache()
    loaded = mt.reference_case("ecp", cache_dir=str(tmp_path), **CASE)
    arrays = [k for k, x in fresh.items() if isinstance(x, np.ndarray)]
    assert {"q", "dout", "out", "dk", "floor_out", "floor_dv", "twin_out"} <= set(arrays)
    assert not any(k.startswith("accurate_") for k in fresh)  # only the floors' row statistics are kept
    for key in arrays:
        assert loaded[key].dtype == fresh[key].dtype and np.array_equal(loaded[key], fresh[key]), key
    floor = fresh["floor_out"]
    assert floor.shape == (5, 2, 48) and (floor[:2] > 0).any()  # F's row maxima, G's squares and parallel parts
    assert (floor[0] <= floor[4]).all() and (floor[2] <= floor[1]).all() and (floor[1] <= floor[3]).all()
    (tmp_path / entry).write_bytes(b"not an npz")  # damaged: recomputed, the same values
    mt.clear_cache()
    again = mt.reference_case("ecp", cache_dir=str(tmp_path), **CASE)
    assert np.array_equal(again["dq"], fresh["dq"]) and np.array_equal(again["floor_dq"], fresh["floor_dq"])


def test_foreign_entry_of_the_wrong_shape_is_not_used(tmp_path):
    mt.clear_cache()
    fresh = mt.reference_case("ecp", cache_dir=str(tmp_path), **CASE)
    (entry,) = os.listdir(tmp_path)
    with np.load(tmp_path / entry) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["out"] = arrays["out"][:, :, :5]
    np.savez(tmp_path / entry, **arrays)
    mt.clear_cache()
    assert np.array_equal(mt.reference_case("ecp", cache_dir=str(tmp_path), **CASE)["out"], fresh["out"])


def test_threads_split_over_heads_give_the_same_floors():
    plan, rows = reference.block_plan("ecp", 64, 3, {"half_segment": 8, "partial": False})
    x = reference.seeded_inputs(1, 1, 3, 64, 8, len(rows), "bfloat16")
    one, three = (
        reference.attention_blocks(x["q"], x["k"], x["v"], plan, rows, dtype="bfloat16", dout=x["dout"], workers=w)
        for w in (1, 3)
    )
    assert all(np.array_equal(one[key], three[key]) for key in one)


def test_grad_fn_returning_out_runs_the_kernel_once():
    torch = pytest.importorskip("torch")
    from minicp.testing import torch as mtt

    calls = []

    def kernel(q, k, v):
        calls.append(1)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    report = mt.assert_matches_reference(
        kernel, "transformer", seq_len=32, heads=2, head_dim=8, check_grads=True, **mtt.adapters(kernel)
    )
    assert report.ok and set(report) == {"out", "dq", "dk", "dv"} and len(calls) == 1
    calls.clear()
    mt.assert_matches_reference(
        kernel,
        "transformer",
        seq_len=32,
        heads=2,
        head_dim=8,
        check_grads=True,
        grad_fn=mtt.grad_fn(kernel),
        array_fn=mtt.arrays(),
    )
    assert len(calls) == 2  # a grad_fn returning (dq, dk, dv) only: fn is called for out
    with pytest.raises(ValueError, match=r"\(dq, dk, dv\) or \(out, dq, dk, dv\)"):
        mt.assert_matches_reference(
            kernel, "transformer", seq_len=32, heads=2, head_dim=8, check_grads=True, grad_fn=lambda *a: (1, 2)
        )
