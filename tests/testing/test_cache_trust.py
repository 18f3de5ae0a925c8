"""A cache that is verified, not believed: disk entries with poisoned floors or reference values, or made for
other inputs, are recomputed; arrays handed to callers are read-only; pytest-xdist workers share a cache
folder safely."""

import multiprocessing
import os

import numpy as np
import pytest

import minicp.testing as mt
from minicp import golden
from minicp.testing import cache, guards, reference

CASE = dict(seq_len=48, heads=2, head_dim=8, half_segment=8, dtype="float32", seed=4)


def constant(q, k, v):
    """A wrong kernel: the same value everywhere."""
    return np.full(q.shape, 0.1, q.dtype)


def entry_of(folder, grads=False):
    mt.clear_cache()
    fresh = mt.reference_case("ecp", cache_dir=str(folder), grads=grads, **CASE)
    (path,) = folder.glob("minicp-ref-*.npz")
    mt.clear_cache()
    return fresh, path


def rewrite(path, redigest=False, **changes):
    """Edit an entry's members; with ``redigest`` its digest is made to match again (a deliberate forgery)."""
    with np.load(path) as z:
        arrays = {key: z[key] for key in z.files}
    arrays.update(changes)
    if redigest:
        values = {k: v for k, v in arrays.items() if k not in cache.STRINGS}
        key, inputs = str(arrays["key"]), str(arrays["inputs_sha256"])
        arrays["digest"] = np.asarray(cache._entry_digest(key, inputs, values))
    np.savez(path, **arrays)


def forged_floor(fresh, value=1e3):
    """Floor statistics whose reference rows are right and whose floors are ``value``: what a forger who read
    the format would write."""
    floor = np.array(fresh["floor_out"])
    floor[:3] = value
    return floor


@pytest.mark.parametrize("redigest", [False, True], ids=["edited", "edited and re-digested"])
def test_floors_set_to_1e30_are_not_believed(tmp_path, redigest):
    fresh, path = entry_of(tmp_path)
    rewrite(path, redigest, floor_out=np.full_like(fresh["floor_out"], 1e30))
    with pytest.raises(mt.MismatchError, match="out: out of tolerance"):
        mt.assert_matches_reference(constant, "ecp", cache_dir=str(tmp_path), **CASE)
    with np.load(path) as z:  # recomputed and rewritten
        assert np.array_equal(z["floor_out"], fresh["floor_out"])
    rewrite(path, True, floor_out=forged_floor(fresh))  # the reference's rows kept, floors > the values
    mt.clear_cache()
    with pytest.raises(mt.MismatchError, match="out: out of tolerance"):
        mt.assert_matches_reference(constant, "ecp", cache_dir=str(tmp_path), **CASE)


def test_a_replaced_reference_or_an_entry_of_other_inputs_is_not_used(tmp_path):
    fresh, path = entry_of(tmp_path, grads=True)
    rewrite(path, out=np.full_like(fresh["out"], 0.1))  # the constant kernel's values, digest not updated
    with pytest.raises(mt.MismatchError, match="out: out of tolerance"):
        mt.assert_matches_reference(constant, "ecp", cache_dir=str(tmp_path), **CASE)
    assert np.array_equal(mt.reference_case("ecp", cache_dir=str(tmp_path), grads=True, **CASE)["out"], fresh["out"])
    for forged in (dict(inputs_sha256=np.asarray("0" * 64)), dict(key=np.asarray("0" * 64))):
        rewrite(path, True, dq=fresh["dq"] * 2, **forged)  # consistent with itself, not with this case's inputs
        mt.clear_cache()
        again = mt.reference_case("ecp", cache_dir=str(tmp_path), grads=True, **CASE)
        assert np.array_equal(again["dq"], fresh["dq"])


def test_entries_hold_no_inputs_and_name_their_digests(tmp_path):
    fresh, path = entry_of(tmp_path, grads=True)
    with np.load(path) as z:
        assert set(z.files) == {"out", "dq", "dk", "dv", "floor_out", "floor_dq", "floor_dk", "floor_dv"} | set(
            cache.STRINGS
        )
        assert str(z["inputs_sha256"]) == guards.combined_digest(fresh, ("q", "k", "v", "dout"))
    loaded = mt.reference_case("ecp", cache_dir=str(tmp_path), grads=True, **CASE)
    assert all(np.array_equal(loaded[key], fresh[key]) for key in ("q", "out", "dv", "floor_dk"))
    assert not loaded["out"].flags.writeable and loaded["q"].ctypes.data % 64 == 0


def test_arrays_handed_to_callers_are_read_only(tmp_path):
    mt.clear_cache()
    ref = mt.reference_case("ecp", grads=True, **CASE)
    g = golden.make_golden("ecp", **CASE)
    arrays = mt.reference_arrays("ecp", **CASE)
    for a in (ref["out"], ref["q"], ref["floor_out"], g["q"], g["dout"], arrays["dk"], arrays["rows"]):
        with pytest.raises(ValueError, match="read-only"):
            a[..., 0] = 0
    for a in (ref["out"], ref["floor_out"], arrays["dk"]):  # the reference's own memory is read-only too
        with pytest.raises(ValueError, match="WRITEABLE"):
            a.flags.writeable = True
    ref["case"]["seed"] = 99  # a copy of the case dict
    with pytest.raises(mt.MismatchError):  # zeros do not pass, and the next golden file is the same
        mt.assert_matches_reference(lambda q, k, v: np.zeros_like(q), "ecp", **CASE)
    again = golden.make_golden("ecp", **CASE)
    assert all(np.array_equal(g[key], again[key]) for key in g.keys())


def _worker(folder, expected, rounds, errors):
    try:
        for i in range(rounds):
            cache.clear_cache()
            case = dict(CASE, seed=CASE["seed"] + i % 2)
            got = mt.reference_case("ecp", cache_dir=folder, grads=True, **case)
            if guards.digest(got, ("out", "dq", "dk", "dv")) != expected[i % 2]:
                errors.put(f"round {i}: wrong values")
            if i % 3 == 0:  # and rewrite the entry while the others read it
                computed = {k: got[k] for k in reference._shapes(got)}
                inputs = guards.combined_digest(got, ("q", "k", "v", "dout"))
                cache.store_entry(folder, reference._key_of(got["case"]), computed, inputs)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        errors.put(f"{type(e).__name__}: {e}")


def test_workers_sharing_a_cache_folder_read_complete_verified_entries(tmp_path):
    expected = []
    for seed in (CASE["seed"], CASE["seed"] + 1):
        mt.clear_cache()
        expected.append(
            guards.digest(mt.reference_case("ecp", grads=True, **dict(CASE, seed=seed)), ("out", "dq", "dk", "dv"))
        )
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(tmp_path), expected, 12, errors)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0] * 4
    assert errors.empty(), errors.get()
    assert len(list(tmp_path.glob("minicp-ref-*.npz"))) == 2  # one entry per case, no temporaries left
    assert not [p for p in os.listdir(tmp_path) if not p.startswith("minicp-ref-")]


def test_the_trust_model_a_kernel_that_reads_the_in_process_cache_passes():
    """docs/tolerances.md says it plainly: a check cannot tell computing from looking up."""
    mt.clear_cache()

    def looks_up(q, k, v):
        return mt.reference_case("ecp", **CASE)["out"].astype(np.float32)

    assert mt.assert_matches_reference(looks_up, "ecp", **CASE).ok
