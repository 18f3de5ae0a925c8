"""The GPU paths of a check, run on the CPU with NumPy standing in for CuPy (tests/testing/fakecupy.py), and the
verdict's newer rules: the counter-based draw, inconclusive verdicts, TF32 floors, errors confined to a few
rows, and floors of exactly zero."""

import warnings

import fakecupy
import numpy as np
import pytest

import minicp.testing as mt
from minicp.analysis import kernel_pattern
from minicp.testing import device, reference


def dense(arch, dtype, **pa):
    """A correct NumPy kernel: float32 arithmetic from the rounded inputs, the result rounded to the dtype."""

    def fn(q, k, v):
        q, k, v = (np.asarray(x, dtype=np.float32) for x in (q, k, v))
        n, d = q.shape[-2], q.shape[-1]
        mask = kernel_pattern.dense_mask(arch, n, q.shape[1], **pa)
        s = np.where(mask, (q @ np.swapaxes(k, -1, -2)) * np.float32(d**-0.5), -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out = (p / p.sum(-1, keepdims=True)) @ v
        return mt.round_to_bfloat16(out) if dtype == "bfloat16" else out.astype(np.dtype(mt.STORAGE[dtype]))

    return fn


@pytest.mark.parametrize("arch, pa", [("ecp", {"half_segment": 16}), ("transformer", {}), ("longlora", {"group": 32})])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_gpu_path_computes_what_the_host_computes(monkeypatch, arch, pa, dtype):
    fakecupy.install(monkeypatch)
    case = dict(seq_len=128, heads=3, head_dim=8, dtype=dtype, grads=True, **pa)
    host = reference.reference_case(arch, draw=3, **case)
    gpu = reference.reference_case(arch, device="cuda", **case)
    assert isinstance(gpu["out"], fakecupy.FakeArray) and gpu["case"]["device"] == "cuda:0"
    for key in ("q", "k", "v", "dout", "out", "dq", "dk", "dv"):
        assert np.allclose(np.asarray(gpu[key]), host[key], rtol=1e-12, atol=1e-14), key
    fn = dense(arch, dtype, **pa)
    a = mt.assert_matches_reference(
        fn, arch, seq_len=128, heads=3, head_dim=8, dtype=dtype, draw=3, inconclusive="ignore", **pa
    )
    b = mt.assert_matches_reference(
        fn, arch, seq_len=128, heads=3, head_dim=8, dtype=dtype, device="cuda", inconclusive="ignore", **pa
    )
    assert a.status == b.status and a["out"].max_err == pytest.approx(b["out"].max_err, rel=1e-9)


def test_draw_3_is_counter_based_and_standard_normal():
    x = device.draw_normals(np, 3, 0, 200_001)
    assert np.array_equal(x[:1000], device.draw_normals(np, 3, 0, 1000))  # a prefix of a longer draw
    assert not np.array_equal(x[:1000], device.draw_normals(np, 3, 1, 1000))  # another tensor
    assert not np.array_equal(x[:1000], device.draw_normals(np, 4, 0, 1000))  # another seed
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01 and abs(np.mean(x**4) - 3) < 0.05
    q = reference.seeded_inputs(3, 1, 2, 8, 4, 8, "bfloat16", draw=3)["q"]
    drawn = mt.round_to_bfloat16(device.draw_normals(np, 3, 0, 64).astype(np.float32))
    assert np.array_equal(q, drawn.reshape(q.shape))  # tensor 0 of seed 3, rounded to float32, then to bfloat16


def test_devices_are_named_or_refused():
    assert device.check_device(None) is None and device.check_device("cpu") is None
    assert device.check_device("cuda") == "cuda:0" and device.check_device("CUDA:2") == "cuda:2"
    for bad in ("tpu", "cuda:x", 3):
        with pytest.raises(ValueError, match="device must be None, 'cpu', 'cuda'"):
            device.check_device(bad)


def test_torch_results_are_read_into_the_gpu_module(monkeypatch):
    torch = pytest.importorskip("torch")
    fake = fakecupy.install(monkeypatch)
    t = torch.randn(2, 3).to(torch.bfloat16)
    got = device.device_array(t, fake)
    assert isinstance(got, fakecupy.FakeArray) and got.dtype == np.float32
    assert np.array_equal(np.asarray(got), t.float().numpy())


def test_an_inconclusive_check_warns_raises_or_passes_as_asked():
    fn = dense("ecp", "bfloat16", half_segment=16)
    case = dict(seq_len=64, heads=2, head_dim=8, half_segment=16, dtype="bfloat16")
    with pytest.warns(mt.InconclusiveWarning, match="inconclusive: a kernel keeping its P @ V accumulator"):
        report = mt.assert_matches_reference(fn, "ecp", **case)
    assert report.ok and report.status == "inconclusive" and "P @ V accumulator" in report.inconclusive[0]
    with pytest.raises(mt.InconclusiveError) as info:
        mt.assert_matches_reference(fn, "ecp", inconclusive="raise", **case)
    assert info.value.report.status == "inconclusive"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mt.assert_matches_reference(fn, "ecp", inconclusive="ignore", **case).ok
    with pytest.raises(ValueError, match="inconclusive"):
        mt.assert_matches_reference(fn, "ecp", inconclusive="maybe", **case)


def test_a_float32_kernel_on_tf32_products_passes_only_when_declared():
    def tf32(x):
        x = np.array(x, dtype=np.float32)
        x.view(np.uint32)[...] &= np.uint32(0xFFFFE000)  # the operands truncated to TF32
        return x

    def fn(q, k, v):
        n, d = q.shape[-2], q.shape[-1]
        s = np.where(
            np.tril(np.ones((n, n), bool)), (tf32(q) @ np.swapaxes(tf32(k), -1, -2)) * np.float32(d**-0.5), -np.inf
        )
        p = np.exp(s - s.max(-1, keepdims=True))
        return (tf32(p / p.sum(-1, keepdims=True)) @ tf32(v)).astype(np.float32)

    case = dict(seq_len=64, heads=2, head_dim=16, dtype="float32")
    with pytest.raises(mt.MismatchError, match="out: out of tolerance"):
        mt.assert_matches_reference(fn, "transformer", **case)
    assert mt.assert_matches_reference(fn, "transformer", precision="tf32", **case).ok
    with pytest.raises(ValueError, match="applies to dtype float32 only"):
        mt.assert_matches_reference(fn, "transformer", precision="tf32", **dict(case, dtype="bfloat16"))


def test_two_wrong_rows_fail_their_blocks_in_bfloat16():
    """Rows 128 and 640 of head 0 off by 3% (signs alternating along the row, no scale error): the tensor's
    rms dilutes them below its budget, the two blocks' own budgets do not."""
    good = dense("ecp", "bfloat16", half_segment=64)

    def fn(q, k, v):
        out = np.array(good(q, k, v))
        signs = np.where(np.arange(out.shape[-1]) % 2, 1.03, 0.97).astype(np.float32)
        out[:, 0, [128, 640]] = mt.round_to_bfloat16(out[:, 0, [128, 640]] * signs)
        return out

    with pytest.raises(mt.MismatchError) as info:
        mt.assert_matches_reference(
            fn, "ecp", seq_len=1024, heads=2, head_dim=32, half_segment=64, dtype="bfloat16", inconclusive="ignore"
        )
    out = info.value.report["out"]
    assert out.units_over == 2 and max(out.rms_share, out.max_share, out.par_share) < 1
    assert "h0 PAR 2" in out.message and "h0 PAR 10" in out.message


def test_a_zero_floor_does_not_turn_two_ulps_into_a_failure():
    """n = 1: the output is v itself, the plain implementation exact; a kernel 2 ulps off passes."""

    def fn(q, k, v):
        return np.nextafter(np.nextafter(v, np.inf), np.inf).astype(np.float32)

    report = mt.assert_matches_reference(fn, "transformer", seq_len=1, heads=2, head_dim=8, dtype="float32")
    assert report["out"].max_err > 0 and report["out"].max_share <= 1


def test_the_fixture_hands_the_device_to_adapters_and_the_pattern_to_the_kernel(monkeypatch):
    from minicp.testing.pytest_plugin import MinicpCheck

    fakecupy.install(monkeypatch)
    seen = {}

    def adapters(fn, dtype, device=None):
        seen["device"] = device
        return {"device": device}

    (case,) = [c for c in mt.cases("ecp", heads=2) if c.label == "two half segments"]
    assert case.pattern_args == {"half_segment": 8}
    kernel = dense("ecp", "float32", **case.pattern_args)
    check = MinicpCheck({}, None, None, "t", device="cuda")
    report = check(kernel, case, adapters=adapters, check_grads=False)
    assert seen["device"] == "cuda" and report.ok and "device cuda:0" in report.context


def test_rounding_the_normalised_probabilities_is_inconclusive_not_failing():
    """Rounding the normalised P to bfloat16 before P @ V (rows no longer weigh to 1) errs along the rows as a
    running maximum kept in bfloat16 does: the row-scale criterion cannot tell them apart."""

    def fn(q, k, v):
        q, k, v = (np.asarray(x, dtype=np.float32) for x in (q, k, v))
        n, d = q.shape[-2], q.shape[-1]
        mask = kernel_pattern.dense_mask("ecp", n, q.shape[1], half_segment=128)
        s = np.where(mask, (q @ np.swapaxes(k, -1, -2)) * np.float32(d**-0.5), -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        return mt.round_to_bfloat16(mt.round_to_bfloat16(p / p.sum(-1, keepdims=True)) @ v)

    case = dict(seq_len=1024, heads=4, head_dim=32, half_segment=128, dtype="bfloat16", inconclusive="ignore")
    report = mt.assert_matches_reference(fn, "ecp", **case)
    out = report["out"]
    assert report.status == "inconclusive" and 1 < out.par_share <= 2 and out.rms_share < 1
    assert "rounding the normalised probabilities" in report.inconclusive[0]


def test_a_complete_host_case_moved_to_the_gpu_keeps_no_host_reference(monkeypatch):
    """A golden file's case is complete on the host before its check (the file was verified): moved to the GPU
    that the kernel's results live on, it must not keep its host reference beside GPU results."""
    from minicp.testing.kernel_run import on_device

    fakecupy.install(monkeypatch)
    host = reference.shared_complete(reference.shared_inputs("ecp", seq_len=32, heads=2, head_dim=8, half_segment=8))
    assert "out" in host
    moved = on_device(host, "cuda:0")
    assert set(moved) == {"q", "k", "v", "dout", "rows", "plan", "case"}
    assert all(isinstance(moved[key], fakecupy.FakeArray) for key in reference.INPUTS)
    gpu = reference.shared_complete(moved)
    assert isinstance(gpu["out"], fakecupy.FakeArray) and np.allclose(np.asarray(gpu["out"]), host["out"], rtol=1e-12)


def test_a_cupy_array_is_seen_before_minicp_has_imported_cupy(monkeypatch):
    """judge() and the converters get CuPy arrays from users who imported CuPy themselves: the array's type
    says it, even before minicp.testing has asked for CuPy."""
    from minicp.testing import arrays

    sentinel = object()
    monkeypatch.setattr(arrays, "_CUPY", {})
    monkeypatch.setattr(arrays, "cupy_module", lambda: sentinel)
    Fake = type("ndarray", (), {"__module__": "cupy._core.core"})
    assert arrays.module_of(Fake()) is sentinel and arrays.module_of(np.zeros(2)) is np
