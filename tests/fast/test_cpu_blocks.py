"""ECP's core in groups of blocks on NumPy (minicp.backend.cpu_blocks) against a dense reference.

The reference is written out here from the rule of the paper's ECP layer: query i of half segment
t = i // m sees key j iff j <= i and j >= (t - 1) m (t = 0: every j <= i). It builds the n x n mask and
runs one float64 softmax over it, so it shares no code with the blocked path. Inputs are drawn in the
layout the attention sub-layer hands over, (b, n, h, d) in memory viewed as (b, h, n, d), and also
C-contiguous; groups are forced small so that heads end in partial groups.
"""

import numpy as np
import pytest

from minicp.fast import cpu_blocks
from minicp.nn import ops


def dense_ecp(q, kv, m):
    """(out, probabilities (b, h, n, n)) in float64 from the n x n mask."""
    n = q.shape[2]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    visible = (j <= i) & (j >= np.maximum(i // m - 1, 0) * m)
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), kv.astype(np.float64))
    s = np.where(visible, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return np.einsum("bhij,bhjd->bhid", p, kv.astype(np.float64)), p


def draw(rng, b, h, n, d, dtype, layout):
    def one():
        x = rng.standard_normal((b, n, h, d) if layout == "bnhd" else (b, h, n, d)).astype(dtype)
        return x.swapaxes(1, 2) if layout == "bnhd" else x

    return one() * d**-0.5, one()


CASES = [  # (b, h, N, m, d): the paper's head dims and odd ones
    (1, 2, 3, 8, 64),
    (2, 1, 4, 4, 128),
    (1, 3, 5, 3, 17),
    (2, 2, 2, 1, 5),
    (1, 1, 9, 6, 7),
]


@pytest.mark.parametrize("b, h, N, m, d", CASES)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("layout", ["bnhd", "bhnd"])
@pytest.mark.parametrize("keep", [False, True])
def test_blocked_core_equals_the_dense_reference(monkeypatch, b, h, N, m, d, dtype, tol, layout, keep):
    monkeypatch.setattr(cpu_blocks, "GROUP_ENTRIES", 2 * m * m * 2)  # groups of 2 blocks: partial ones too
    rng = np.random.default_rng(b * 1000 + h * 100 + N * 10 + m + d)
    q, kv = draw(rng, b, h, N * m, d, dtype, layout)
    assert cpu_blocks.applies(q, kv, m)
    out, saved = cpu_blocks.ecp_forward(q, kv, m, *ops.causal_mask(m, m)[None], ops.causal_mask(m, 2 * m, m), keep)
    want, probs = dense_ecp(q, kv, m)
    assert out.dtype == dtype and out.shape == q.shape
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
    if not keep:
        assert saved is None
        return
    P0, P, K2 = saved
    np.testing.assert_allclose(P0, probs[:, :, :m, :m], rtol=tol, atol=tol)
    for t in range(1, N):
        np.testing.assert_allclose(
            P[:, :, t - 1], probs[:, :, t * m : (t + 1) * m, (t - 1) * m : (t + 1) * m], rtol=tol, atol=tol
        )
        np.testing.assert_array_equal(K2[:, :, t - 1], kv[:, :, (t - 1) * m : (t + 1) * m])
    assert not K2.flags.writeable


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_key_reaches_no_block_whose_window_lacks_it(bad):
    """Key j of half segment 3 lies in the windows of blocks 3 and 4 only. Inside such a window a masked
    entry has probability exactly 0, but 0 * inf is NaN in P K2, as in every attention that multiplies P
    by V (the readable path, PyTorch's SDPA); the blocks before it never touch j."""
    rng = np.random.default_rng(3)
    m, N = 4, 5
    q, kv = draw(rng, 1, 2, N * m, 8, np.float64, "bnhd")
    kv = kv.copy()
    j = 3 * m + 1  # a key of half segment 3: seen by queries j .. 5m - 1 only
    kv[:, :, j] = bad
    clean = kv.copy()
    clean[:, :, j] = 0.0
    want, _ = dense_ecp(q, clean, m)
    with np.errstate(invalid="ignore"):
        out, _ = cpu_blocks.ecp_forward(q, kv, m, ops.causal_mask(m, m), ops.causal_mask(m, 2 * m, m), False)
    np.testing.assert_allclose(out[:, :, : 3 * m], want[:, :, : 3 * m], rtol=1e-12, atol=1e-12)
    assert np.isfinite(out[:, :, : 3 * m]).all()


def test_applies_only_to_what_it_computes():
    q = np.zeros((1, 2, 8, 4))
    assert cpu_blocks.applies(q, q, 4)
    assert not cpu_blocks.applies(q, q, 8)  # N = 1
    assert not cpu_blocks.applies(q, q, 3)  # 8 is not a multiple of 3
    assert not cpu_blocks.applies(q, q.astype(np.float32), 4)
    assert not cpu_blocks.applies(q[..., ::2], q[..., ::2], 4)  # last axis not contiguous
    assert not cpu_blocks.applies(q.astype(np.float16), q.astype(np.float16), 4)
