"""The shared ops, each against an independent formula."""

import math

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st

from minicp.nn import ops
from minicp.nn.rope import rope


def test_linear_and_layer_norm_match_their_definitions():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5))
    p = {"weight": rng.standard_normal((4, 5)), "bias": rng.standard_normal(4)}
    expected = np.array(
        [[sum(x[r, i] * p["weight"][o, i] for i in range(5)) + p["bias"][o] for o in range(4)] for r in range(3)]
    )
    np.testing.assert_allclose(ops.linear(x, p), expected, rtol=1e-12)
    ln = {"weight": rng.standard_normal(5), "bias": rng.standard_normal(5)}
    for r in range(3):
        mu = sum(x[r]) / 5
        var = sum((x[r] - mu) ** 2) / 5  # biased variance, as torch
        np.testing.assert_allclose(
            ops.layer_norm(x, ln)[r], (x[r] - mu) / math.sqrt(var + 1e-5) * ln["weight"] + ln["bias"], rtol=1e-12
        )


def test_gelu_is_exact_erf():
    xs = np.linspace(-6, 6, 41)
    expected = [x * 0.5 * (1 + math.erf(x / math.sqrt(2))) for x in xs]
    np.testing.assert_allclose(ops.gelu(xs), expected, rtol=1e-14, atol=1e-300)


@given(st.integers(1, 9), st.integers(1, 7), st.sampled_from(["interleaved", "halves"]))
def test_rope_is_complex_rotation(d, n, style):
    """Pair (a, b) -> (a + ib) e^{i p theta}: interleaved pairs (2i, 2i+1), halves pairs (i, i + d/2)."""
    if style == "halves" and d % 2:
        d += 1
    rng = np.random.default_rng(d * 10 + n)
    x = rng.standard_normal((2, n, d))
    pos = rng.integers(0, 64, n)  # theta is float32 (as official): angle error <= 64 * 6e-8
    y = rope(x, pos, style)
    half = d // 2
    for i in range(half):
        theta = 10000.0 ** (-2 * i / d)
        a_idx, b_idx = (2 * i, 2 * i + 1) if style == "interleaved" else (i, i + half)
        z = (x[..., a_idx] + 1j * x[..., b_idx]) * np.exp(1j * pos * theta)
        np.testing.assert_allclose(y[..., a_idx], z.real, atol=1e-5)
        np.testing.assert_allclose(y[..., b_idx], z.imag, atol=1e-5)
    if d % 2 and style == "interleaved":
        np.testing.assert_array_equal(y[..., -1], x[..., -1])  # odd channel passes through


def test_rope_scores_depend_on_relative_position_only():
    rng = np.random.default_rng(1)
    q, k = rng.standard_normal((2, 1, 8))
    for style in ("interleaved", "halves"):
        s = lambda a, b: float((rope(q, [a], style) @ rope(k, [b], style).T)[0, 0])
        assert s(10, 3) == pytest.approx(s(107, 100), rel=1e-10)


def _naive_attention(q, k, v, mask):
    out = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for idx in np.ndindex(q.shape[:-2]):
        for i in range(q.shape[-2]):
            scores = [float(q[idx][i] @ k[idx][j]) for j in range(k.shape[-2]) if mask[i, j]]
            weights = np.exp(np.array(scores) - max(scores))
            weights /= weights.sum()
            visible = [j for j in range(k.shape[-2]) if mask[i, j]]
            out[idx][i] = sum(w * v[idx][j] for w, j in zip(weights, visible))
    return out


@pytest.mark.parametrize("diagonal", [0, 2, -1])
def test_attend_matches_naive_loops(diagonal):
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal((2, 2, 3, 5, 4))
    v = rng.standard_normal((2, 3, 7, 3))
    k = np.concatenate([k, rng.standard_normal((2, 3, 2, 4))], axis=2)
    mask = ops.causal_mask(5, 7, diagonal=diagonal + 2)
    np.testing.assert_allclose(ops.attend(q, k, v, mask), _naive_attention(q, k, v, mask), rtol=1e-12)


def test_attend_vjp_second_order_and_shared_kv():
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((3, 2, 2, 5, 3))
    mask = ops.causal_mask(5, 5)
    check_grads(lambda q, k, v: anp.sum(anp.tanh(ops.attend(q, k, v, mask))), modes=["rev"], order=2)(q, k, v)
    check_grads(lambda q, kv: anp.sum(anp.tanh(ops.attend(q, kv, kv, mask))), modes=["rev"], order=1)(q, k)
    # a mask broadcast over a batch of blocks
    check_grads(lambda q, k: anp.sum(ops.attend(q, k, k, ops.causal_mask(5, 5, 1)) ** 2), modes=["rev"])(q, k)


def test_attend_vjp_equals_automatic_differentiation():
    """The hand-written VJP against autograd differentiating the plain formula."""
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((3, 2, 6, 4))
    g = rng.standard_normal((2, 6, 4))
    mask = ops.causal_mask(6, 6)

    def plain(q, k, v):
        s = anp.where(mask, q @ anp.swapaxes(k, -1, -2), -anp.inf)
        p = anp.exp(s - anp.max(s, -1, keepdims=True))
        return anp.sum((p / anp.sum(p, -1, keepdims=True) @ v) * g)

    auto = grad(plain, argnum=(0, 1, 2))(q, k, v)
    hand = ops.attend_vjp(g, q, k, v, mask)
    for a, h in zip(auto, hand):
        np.testing.assert_allclose(h, a, rtol=1e-10, atol=1e-12)


def test_record_scores_sees_every_score_matrix():
    q = np.ones((2, 3, 4, 5))
    with ops.record_scores() as shapes:
        ops.attend(q, q, q)
        ops.attend(q[:, :, :2], q, q, ops.causal_mask(2, 4, 2))
    assert shapes == [(2, 3, 4, 4), (2, 3, 2, 4)]


def test_float32_stays_float32():
    q = np.ones((1, 1, 4, 8), dtype=np.float32)
    assert ops.attend(q, q, q, ops.causal_mask(4, 4)).dtype == np.float32
    assert rope(q, np.arange(4)).dtype == np.float32
    assert ops.gelu(q).dtype == np.float32
