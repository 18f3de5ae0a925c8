"""minicp.testing: array conversion, tolerances, failure messages, and the whole-kernel check."""

import re

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from strategies import HEAD_CASES

import minicp.testing as mt
from minicp.analysis import kernel_pattern as kp
from minicp.nn.reference import dense_attention

# one small, valid pattern per architecture (head-level arguments)
CASES = HEAD_CASES


def dense_kernel(arch, **pattern_args):
    """A correct 'kernel': dense NumPy attention with the exported mask, computed in the input dtype."""

    def fn(q, k, v):
        n, h = q.shape[2], q.shape[1]
        return np.asarray(dense_attention(q, k, v, kp.dense_mask(arch, n, h, **pattern_args)))

    return fn


def autograd_grad_fn(fn):
    def grad_fn(q, k, v, dout):
        dt = q.dtype
        g = autograd.grad(lambda a, b, c: anp.sum(fn(a, b, c) * dout), argnum=(0, 1, 2))
        return tuple(
            np.asarray(x, dtype=dt) for x in g(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
        )

    return grad_fn


def split_case(arch):
    case = dict(CASES[arch])
    sizes = {key: case.pop(key) for key in ("seq_len", "heads")}
    return sizes, case


# ----------------------------------------------------------------------------------------------------
# dtypes, tolerances, conversion
# ----------------------------------------------------------------------------------------------------


def test_default_tolerances_documented():
    assert mt.TOLERANCES == {
        "float64": (1e-10, 1e-12),
        "float32": (1e-4, 1e-5),
        "bfloat16": (2e-2, 2e-2),
        "float16": (2e-3, 2e-3),
    }
    for name, (rtol, atol) in mt.TOLERANCES.items():
        assert re.search(rf"{name}\s+{rtol:.0e}".replace("e-0", "e-"), mt.__doc__), name
    assert mt.default_tolerances(np.float32) == (1e-4, 1e-5)
    assert mt.default_tolerances("bf16") == (2e-2, 2e-2)
    with pytest.raises(ValueError, match="no default tolerance"):
        mt.default_tolerances("int8")


def test_dtype_name():
    assert mt.dtype_name(np.zeros(2, np.float16)) == "float16"
    assert mt.dtype_name("fp32") == "float32"
    assert mt.dtype_name(np.float64) == "float64"

    class FakeTorchDtype:  # str() like torch.bfloat16, not a NumPy dtype
        def __str__(self):
            return "torch.bfloat16"

    assert mt.dtype_name(FakeTorchDtype()) == "bfloat16"


def test_to_numpy_any_plain_and_duck_types():
    a = np.arange(6.0).reshape(2, 3)
    out = mt.to_numpy_any(a)
    assert np.array_equal(out, a) and out is not a  # a copy
    assert mt.to_numpy_any(3.5) == 3.5
    assert np.array_equal(mt.to_numpy_any([[1, 2]]), [[1, 2]])

    class OnlyArray:
        def __array__(self, dtype=None, copy=None):
            return np.ones(3)

    assert np.array_equal(mt.to_numpy_any(OnlyArray()), np.ones(3))

    class OnlyDlpack:
        def __init__(self):
            self.a = np.full(4, 2.0)

        def __dlpack__(self, **kw):
            return self.a.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.a.__dlpack_device__()

    assert np.array_equal(mt.to_numpy_any(OnlyDlpack()), np.full(4, 2.0))

    FakeCupy = type("ndarray", (), {"__module__": "cupy._core.core", "get": lambda self: np.arange(3)})
    assert np.array_equal(mt.to_numpy_any(FakeCupy()), np.arange(3))

    with pytest.raises(ValueError, match="cannot convert"):
        mt.to_numpy_any(object())


def test_to_numpy_any_torch():
    torch = pytest.importorskip("torch")
    t = torch.randn(3, 4, requires_grad=True)
    assert np.allclose(mt.to_numpy_any(t), t.detach().numpy())
    b = torch.randn(5).to(torch.bfloat16)
    got = mt.to_numpy_any(b)
    assert got.dtype == np.float32 and np.array_equal(got, b.float().numpy())
    assert mt.dtype_name(b) == "bfloat16"
    assert mt.to_numpy_any(torch.ones(2, dtype=torch.float16)).dtype == np.float16


# ----------------------------------------------------------------------------------------------------
# compare / assert_close
# ----------------------------------------------------------------------------------------------------


def test_assert_close_passes_and_returns_comparison():
    e = np.random.default_rng(0).standard_normal((3, 4))
    c = mt.assert_close(e.astype(np.float32), e, name="out")
    assert c.ok and c.dtype == "float32" and c.max_abs < 1e-6 and "OK" in c.message


def test_failure_message_names_everything():
    e = np.random.default_rng(0).standard_normal((2, 3, 8, 4))
    a = e.astype(np.float32).copy()
    a[1, 2, 5, 3] += 0.5
    a[0, 1, 6, 0] -= 0.01
    with pytest.raises(mt.MismatchError) as info:
        mt.assert_close(a, e, name="dk")
    msg, c = str(info.value), info.value.comparison
    assert isinstance(info.value, AssertionError)
    assert msg.startswith("dk: 2 of 192 elements (1.042%) are out of tolerance")
    assert "shape (2, 3, 8, 4)" in msg and "actual dtype float32" in msg
    assert "rtol=1.0e-04, atol=1.0e-05 (dtype float32)" in msg
    assert "max abs err 0.5 at (1, 2, 5, 3)" in msg
    assert f"worst element (1, 2, 5, 3): expected {e[1, 2, 5, 3]:.8g}" in msg
    assert "bad elements lie in [0..1] x [1..2] x [5..6] x [0..3]" in msg
    assert c.n_bad == 2 and c.worst_index == (1, 2, 5, 3) and c.max_rel > 0


def test_compare_tolerance_overrides_and_dtype_choice():
    e = np.ones(10)
    a = e + 1e-3
    assert not mt.compare(a, e, name="x", dtype="float32").ok
    assert mt.compare(a, e, name="x", dtype="float16").ok
    assert mt.compare(a, e, name="x", rtol=0, atol=2e-3).ok
    assert not mt.compare(a, e, name="x", dtype="bfloat16", atol=0, rtol=1e-4).ok


def test_nan_shape_and_validation():
    e = np.zeros(4)
    a = e.copy()
    a[2] = np.nan
    c = mt.compare(a, e, name="out", dtype="float64")
    assert not c.ok and c.n_nan == 1 and "1 NaN(s) in actual" in c.message and c.worst_index == (2,)
    assert mt.compare(np.array([np.nan, 1.0]), np.array([np.nan, 1.0]), name="same nan").ok
    s = mt.compare(np.zeros(3), np.zeros(4), name="out")
    assert not s.ok and "shape mismatch: actual (3,) vs expected (4,)" in s.message
    with pytest.raises(ValueError, match="name"):
        mt.assert_close(e, e, name="")
    with pytest.raises(ValueError, match="rtol"):
        mt.assert_close(e, e, name="x", rtol=-1)
    with pytest.raises(ValueError, match="atol"):
        mt.assert_close(e, e, name="x", atol="big")
    with pytest.raises(ValueError, match="no default tolerance"):
        mt.assert_close(np.zeros(2, int), np.zeros(2, int), name="ints")
    assert mt.assert_close(np.zeros(2, int), np.zeros(2, int), name="ints", rtol=0, atol=0).ok


# ----------------------------------------------------------------------------------------------------
# assert_matches_reference
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", sorted(CASES))
def test_correct_kernel_passes_every_arch(arch):
    sizes, args = split_case(arch)
    fn = dense_kernel(arch, **args)
    res = mt.assert_matches_reference(
        fn, arch, head_dim=4, batch=2, dtype="float64", check_grads=True, grad_fn=autograd_grad_fn(fn), **sizes, **args
    )
    assert set(res) == {"out", "dq", "dk", "dv"} and all(c.ok for c in res.values())


def test_full_row_output_is_accepted_for_perceiver_ar():
    """A dense-mask kernel returns all n rows; only the computed (latent) rows are compared."""

    def fn(q, k, v):
        full = np.zeros_like(q)
        full[:, :, 7:] = dense_kernel("perceiver_ar", latent=5)(q, k, v)
        return full

    res = mt.assert_matches_reference(fn, "perceiver_ar", seq_len=12, heads=2, head_dim=4, latent=5)
    assert res["out"].shape == (1, 2, 5, 4)


def test_low_precision_inputs_are_rounded_and_pass():
    for dtype in ("bfloat16", "float16"):
        seen = {}

        def fn(q, k, v):  # computes in float32 from the rounded inputs, rounds the result (as fused kernels do)
            seen["q"] = q
            out = dense_kernel("ecp", half_segment=8)(*(x.astype(np.float32) for x in (q, k, v)))
            return mt.round_to_bfloat16(out) if dtype == "bfloat16" else out.astype(np.float16)

        mt.assert_matches_reference(
            fn, "ecp", seq_len=32, heads=2, head_dim=8, dtype=dtype, half_segment=8, inconclusive="ignore"
        )
        if dtype == "bfloat16":
            assert seen["q"].dtype == np.float32 and not (seen["q"].view(np.uint32) & 0xFFFF).any()
        else:
            assert seen["q"].dtype == np.float16


def test_wrong_gradient_is_named():
    fn = dense_kernel("ecp", half_segment=4)
    good = autograd_grad_fn(fn)

    def bad_grad(q, k, v, dout):
        dq, dk, dv = good(q, k, v, dout)
        return dq, dk * 1.01, dv

    with pytest.raises(mt.MismatchError, match=r"^dk: .*out of tolerance") as info:
        mt.assert_matches_reference(
            fn, "ecp", seq_len=16, heads=2, head_dim=4, check_grads=True, grad_fn=bad_grad, half_segment=4
        )
    assert "gradients of sum(out * dout)" in str(info.value)
    assert "reference: minicp ecp(half_segment=4)" in str(info.value)


def test_wrong_pattern_is_caught_with_rows():
    """A causal kernel is not ECP: rows of the third half segment on (8..15) differ."""
    with pytest.raises(mt.MismatchError) as info:
        mt.assert_matches_reference(dense_kernel("transformer"), "ecp", seq_len=16, heads=1, head_dim=4, half_segment=4)
    c = info.value.comparison
    assert c.name == "out" and c.bad_ranges[2] == (8, 15)


def test_torch_kernel_with_array_fn():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def fn(q, k, v):
        assert isinstance(q, torch.Tensor)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def grad_fn(q, k, v, dout):
        q, k, v = (t.detach().requires_grad_(True) for t in (q, k, v))
        return torch.autograd.grad(fn(q, k, v), (q, k, v), grad_outputs=dout)

    res = mt.assert_matches_reference(
        fn,
        "transformer",
        seq_len=32,
        heads=2,
        head_dim=8,
        dtype="bfloat16",
        array_fn=lambda a: torch.from_numpy(a).to(torch.bfloat16),
        check_grads=True,
        grad_fn=grad_fn,
    )
    assert res["out"].actual_dtype == "bfloat16" and res["dv"].ok


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(fn=None), "fn must be callable"),
        (dict(check_grads=True), "needs grad_fn"),
        (dict(check_grads="yes"), "check_grads"),
        (dict(grad_fn=3), "grad_fn must be callable"),
        (dict(array_fn="torch"), "array_fn must be callable"),
        (dict(dtype="int8"), "dtype must be one of"),
        (dict(rtol=-1.0), "rtol"),
        (dict(seq_len=0), "seq_len"),
        (dict(heads=1.5), "heads"),
        (dict(head_dim=-2), "head_dim"),
        (dict(batch=0), "batch"),
        (dict(seed=-1), "seed"),
        (dict(half_segment=None, latent=3), "unknown pattern argument"),
        (dict(half_segment=None), "needs the pattern argument"),
        (dict(half_segment=5), "not divisible by half_segment"),
    ],
)
def test_argument_validation(kwargs, match):
    base = dict(fn=dense_kernel("ecp", half_segment=4), arch="ecp", seq_len=16, heads=1, head_dim=4, half_segment=4)
    base.update(kwargs)
    base = {key: val for key, val in base.items() if val is not None or key == "fn"}
    fn, arch = base.pop("fn"), base.pop("arch")
    with pytest.raises(ValueError, match=match):
        mt.assert_matches_reference(fn, arch, **base)


def test_unknown_arch():
    with pytest.raises(ValueError, match="arch"):
        mt.assert_matches_reference(dense_kernel("transformer"), "flash", seq_len=8, heads=1, head_dim=4)


@pytest.mark.parametrize("name, checks", [("test_my_kernel.py", 6), ("test_my_ecp_kernel.py", 10)])
def test_readme_examples_run(name, checks):
    """examples/test_my_kernel.py and test_my_ecp_kernel.py (the README's pytest files) pass: 3 causal edge
    cases x 2 dtypes, 5 ECP edge cases x 2 dtypes, the ECP kernel given each case's pattern arguments."""
    pytest.importorskip("torch")
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    plugin = ["-p", "minicp.testing.pytest_plugin"]  # loaded by name: an installed entry point is not needed
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # (nor loaded a second time when present)
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, str(root / "examples" / name)],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
    )
    assert r.returncode == 0 and f"{checks} passed" in r.stdout, r.stdout + r.stderr


def test_cases_cover_the_edges():
    labels = {c.label for c in mt.cases("ecp")}
    assert {"one half segment (n = m)", "two half segments", "partial last block", "odd head dim"} <= labels
    assert any(c.kwargs["rope"] == "halves" for c in mt.cases("longlora", rope=True))
    assert any(c.kwargs.get("latent") == 1 for c in mt.cases("perceiver_ar"))


def test_bnhd_layout_and_segment_spelling():
    def fn(q, k, v):  # (b, n, h, d)
        return np.swapaxes(dense_kernel("ecp", half_segment=4)(*(np.swapaxes(x, 1, 2) for x in (q, k, v))), 1, 2)

    mt.assert_matches_reference(fn, "ecp", seq_len=16, heads=2, head_dim=4, segment=8, layout="bnhd")
