"""ECP's core routes on CuPy (``minicp.fast.ecp``): "windows" (strided-batched cuBLAS over overlapping key
windows, inference) and "k2" (K2 concatenated, the fused softmax; what training takes) against the readable
ECP in float64 on the NumPy backend (independent: slices, concatenations, masked softmax) and against the
windows plan run on NumPy (the same plan through strided views). Skipped without a GPU."""

import numpy as np
import pytest
from autograd import grad

from minicp import backend as B
from minicp.fast import ecp as E
from minicp.fast import windows
from minicp.nn.attention import ecp

pytestmark = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not B.gpu_available(), reason="needs CuPy and a usable NVIDIA GPU")

SHAPES = [  # (b, h, n, d, m): the paper's head dims, an odd one, N = 2, one head, several batches
    (1, 8, 2048, 64, 128),
    (2, 3, 96, 17, 16),
    (1, 1, 64, 128, 32),
    (3, 2, 40, 5, 4),
]


def _reference(q, kv, m):
    with B.backend("numpy"):
        return ecp.attention(q, kv, kv, half_segment=m, scale=1.0)


@needs_gpu
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("dtype, tol", [("float32", 3e-5), ("float64", 1e-13)])
def test_routes_on_the_gpu_equal_the_readable_float64_ecp(shape, dtype, tol):
    b, h, n, d, m = shape
    rng = np.random.default_rng(sum(shape))
    q, kv = (rng.standard_normal((b, h, n, d)) * s for s in (d**-0.5 * 2, 1.0))  # scores of a few units
    q, kv = q.astype(dtype), kv.astype(dtype)
    expected = _reference(q.astype(np.float64), kv.astype(np.float64), m)
    with B.backend("numpy"):
        plan_on_numpy = E.core(q, kv, m, route="windows")
    with B.backend("cupy"):
        gq, gkv = B.asarray(q), B.asarray(kv)
        assert E.route_for(gq, gkv, m, keep=False) == "windows" and E.route_for(gq, gkv, m, keep=True) == "k2"
        got = {route: B.to_numpy(E.core(gq, gkv, m, route=route)) for route in ("windows", "k2")}
    scale = np.abs(expected).max()
    for route, out in got.items():
        assert np.abs(out - expected).max() <= tol * scale, route
    assert np.abs(got["windows"] - plan_on_numpy).max() <= tol * scale


@needs_gpu
@pytest.mark.parametrize("dtype, tol", [("float32", 1e-4), ("float64", 1e-12)])
def test_k2_route_gradients_on_the_gpu_equal_the_readable_float64_ecp(dtype, tol):
    b, h, n, d, m = 2, 3, 96, 17, 16
    rng = np.random.default_rng(4)
    q, kv, w = (rng.standard_normal((b, h, n, d)) for _ in range(3))
    q = q * d**-0.5
    with B.backend("numpy"):
        want = [
            grad(lambda q, kv: (ecp.attention(q, kv, kv, half_segment=m, scale=1.0) * w).sum(), i)(q, kv)
            for i in (0, 1)
        ]
    with B.backend("cupy", autograd_on_gpu=True):
        gq, gkv, gw = (B.asarray(a.astype(dtype)) for a in (q, kv, w))
        got = [B.to_numpy(grad(lambda q, kv: (E.core(q, kv, m) * gw).sum(), i)(gq, gkv)) for i in (0, 1)]
    for g, r in zip(got, want):
        assert np.linalg.norm(g - r) / np.linalg.norm(r) <= tol


@needs_gpu
def test_windows_plan_on_the_gpu_crosses_head_boundaries_like_numpy():
    rng = np.random.default_rng(0)
    q, kv = (rng.standard_normal((3, 4, 48, 8)) for _ in range(2))
    masks = E.masks(8)
    with B.backend("numpy"):
        host = windows.ecp_forward(q, kv, 8, *masks)
    with B.backend("cupy"):
        dev = B.to_numpy(windows.ecp_forward(B.asarray(q), B.asarray(kv), 8, *(B.constant(x) for x in masks)))
    np.testing.assert_allclose(dev, host, rtol=1e-12, atol=1e-13)
