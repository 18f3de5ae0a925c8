"""Checks on a GPU (CuPy): the rounding kernels, the counter-based draw, reading torch tensors through DLPack,
and a check on the GPU giving the host's verdict for the same inputs.

Run on a machine with an NVIDIA GPU, CuPy and PyTorch with CUDA:  ``python -m pytest -m gpu tests/testing``.
Elsewhere every test here is skipped; the same code paths run on the CPU with NumPy standing in for CuPy
(tests/testing/test_device_paths.py).
"""

import numpy as np
import pytest

import minicp.testing as mt
from minicp import backend as B
from minicp.analysis import kernel_pattern
from minicp.testing import arrays, device, reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not B.gpu_available(), reason="needs CuPy and a usable NVIDIA GPU")]


def test_rounding_kernels_equal_the_host_rounding():
    cp = arrays.cupy_module()
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(1 << 16), [0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-40]])
    x = x.astype(np.float32)
    for name in ("bfloat16", "float16"):
        got = arrays.rounder(name, cp)(cp.asarray(x)).get()
        want = arrays.rounder(name, np)(x)
        assert np.array_equal(got, want, equal_nan=True), name
    assert np.array_equal(arrays.operand_rounder("tf32", cp)(cp.asarray(x)).get(), arrays._round_tf32(np)(x), True)


def test_draw_3_is_the_same_on_the_gpu_and_the_host():
    cp = arrays.cupy_module()
    for t in range(4):
        host, gpu = device.draw_normals(np, 7, t, 1 << 20), device.draw_normals(cp, 7, t, 1 << 20).get()
        assert np.array_equal(host.astype(np.float32), gpu.astype(np.float32))
        assert np.max(np.abs(host - gpu)) < 1e-12


def test_torch_tensors_are_read_without_a_host_copy_bfloat16_included():
    torch = pytest.importorskip("torch")
    cp = arrays.cupy_module()
    t = torch.randn(2, 3, 5, device="cuda").to(torch.bfloat16)
    got = device.device_array(t, cp)
    assert isinstance(got, cp.ndarray) and got.dtype == cp.float32
    assert np.array_equal(got.get(), t.float().cpu().numpy())
    assert device.on_gpu(t) and not device.on_gpu(t.cpu())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("arch, pa", [("ecp", {"half_segment": 16}), ("transformer", {})])
def test_a_gpu_check_has_the_hosts_reference_and_budgets(dtype, arch, pa):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from minicp.testing import budgets
    from minicp.testing import torch as mtt

    case = dict(seq_len=128, heads=2, head_dim=16, dtype=dtype, grads=True, **pa)
    h = reference.reference_case(arch, draw=3, **case)
    g = reference.reference_case(arch, device="cuda", **case)
    for key in ("q", "out", "dq", "dk", "dv"):
        assert np.allclose(arrays.to_host(g[key]), h[key], rtol=1e-12, atol=1e-13), key
    for key in ("out", "dq", "dk", "dv"):  # the floors: the same model, other summation orders
        bh, bg = (budgets.budget_of(key, dtype, c["floor_" + key], 16) for c in (h, g))
        assert bg.b_max == pytest.approx(bh.b_max, rel=0.5) and bg.b_rms == pytest.approx(bh.b_rms, rel=0.25), key

    def kernel(q, k, v):
        with torch.nn.attention.sdpa_kernel([torch.nn.attention.SDPBackend.MATH]):
            mask = torch.from_numpy(kernel_pattern.dense_mask(arch, q.shape[-2], q.shape[1], **pa)).to(q.device)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    report = mt.assert_matches_reference(
        kernel, arch, seq_len=128, heads=2, head_dim=16, dtype=dtype, check_grads=True, inconclusive="ignore",
        **mtt.adapters(kernel, dtype, "cuda"), **pa,
    )  # fmt: skip
    assert report.status in ("pass", "inconclusive")
