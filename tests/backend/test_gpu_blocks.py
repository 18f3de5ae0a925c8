"""ECP's core on CuPy through strided-batched cuBLAS (minicp.backend.cuda_blocks) against two references:
the readable head-level ECP in float64 on the NumPy backend (independent: slices, concatenations, masked
softmax), and the CuPy path that builds K2 (the one the autograd path uses). Skipped without a GPU."""

import numpy as np
import pytest
from autograd import grad

from minicp import backend as B
from minicp.nn import fused, fused_attention
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
    with B.backend("numpy"), fused.use_fused(False):
        return ecp.attention(q, kv, kv, half_segment=m, scale=1.0)


@needs_gpu
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("dtype, tol", [("float32", 3e-5), ("float64", 1e-12)])
def test_strided_windows_equal_the_readable_float64_ecp(shape, dtype, tol):
    b, h, n, d, m = shape
    rng = np.random.default_rng(sum(shape))
    q, kv = (rng.standard_normal((b, h, n, d)) * s for s in (d**-0.5 * 2, 1.0))  # scores of a few units
    q, kv = q.astype(dtype), kv.astype(dtype)
    expected = _reference(q.astype(np.float64), kv.astype(np.float64), m)
    with B.backend("cupy"):
        gq, gkv = B.asarray(q), B.asarray(kv)
        assert fused_attention.cuda_blocks.applies(gq, gkv)
        fast, none = fused_attention._core_forward(gq, gkv, m, keep=False)
        plain, saved = fused_attention._core_forward(gq, gkv, m, keep=True)
        assert none is None and saved is not None
        fast, plain = B.to_numpy(fast), B.to_numpy(plain)
    scale = np.abs(expected).max()
    assert np.abs(fast - expected).max() <= tol * scale
    assert np.abs(plain - expected).max() <= tol * scale
    assert np.abs(fast - plain).max() <= tol * scale


@needs_gpu
def test_inference_takes_the_strided_route_and_autograd_the_kept_one(monkeypatch):
    calls = []
    real = fused_attention.cuda_blocks.ecp_forward
    monkeypatch.setattr(fused_attention.cuda_blocks, "ecp_forward", lambda *a: calls.append(1) or real(*a))
    rng = np.random.default_rng(0)
    q, kv = (rng.standard_normal((1, 2, 64, 8)).astype(np.float32) for _ in range(2))
    with B.backend("cupy", autograd_on_gpu=True):
        out = fused_attention.ecp_core(B.asarray(q), B.asarray(kv), 16)
        assert calls == [1]
        grad(lambda x: (fused_attention.ecp_core(x, B.asarray(kv), 16) ** 2).sum())(B.asarray(q))
        assert calls == [1]  # the traced call builds K2 and keeps it for the backward pass
    assert np.allclose(B.to_numpy(out), _reference(q.astype(np.float64), kv.astype(np.float64), 16), atol=3e-5)
