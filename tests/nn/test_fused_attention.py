"""The fused ECP core (``minicp.nn.fused_attention``) against the readable ECP attention and finite
differences: values bit for bit, gradients to float64 rounding, and check_grads on the primitive itself.
A pair gradient sent back to the wrong half segment, a mask off by one or a missing dK + dV sum moves a
gradient by O(1)."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from minicp.nn import fused, fused_attention, fused_layers, ops
from minicp.nn.attention import ecp

SHAPES = [(2, 2, 8, 4, 3), (1, 3, 20, 4, 5), (1, 1, 6, 1, 2), (2, 1, 16, 8, 64)]  # (b, h, n, m, d); N >= 2


def _inputs(b, h, n, d, seed):
    rng = np.random.default_rng(seed)
    q, kv, w = (rng.standard_normal((b, h, n, d)) for _ in range(3))
    return q * d**-0.5, kv, w


@pytest.mark.parametrize("b, h, n, m, d", SHAPES)
def test_fused_core_equals_the_readable_attention(b, h, n, m, d):
    q, kv, w = _inputs(b, h, n, d, seed=n + d)
    with fused.use_fused(False):
        want = ecp.attention(q, kv, kv, half_segment=m, scale=1.0)
    np.testing.assert_array_equal(fused_attention.ecp_core(q, kv, m), want)

    def objective(q, kv, use):
        with fused.use_fused(use):
            return np.sum(ecp.attention(q, kv, kv, half_segment=m, scale=1.0) * w)

    for argnum in (0, 1):
        got = grad(objective, argnum)(q, kv, True)
        ref = grad(objective, argnum)(q, kv, False)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-13)
    assert not fused_attention._kept  # every kept probability was taken by its backward pass


@pytest.mark.parametrize("b, h, n, m, d", SHAPES[:3])
def test_fused_core_gradients_by_finite_differences(b, h, n, m, d):
    q, kv, w = _inputs(b, h, n, d, seed=1)
    check_grads(lambda q, kv: fused_attention.ecp_core(q, kv, m) * w, modes=["rev"], order=1)(q, kv)


def test_score_tensors_are_logged_as_on_the_readable_path():
    q, kv, _ = _inputs(1, 2, 12, 3, seed=0)
    with ops.record_scores() as fused_log:
        fused_attention.ecp_core(q, kv, 4)
    with fused.use_fused(False), ops.record_scores() as plain_log:
        ecp.attention(q, kv, kv, half_segment=4, scale=1.0)
    assert fused_log == plain_log == [(1, 2, 4, 4), (1, 2, 2, 4, 8)]


def _second_order_cases():
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))
    q, kv, _ = _inputs(1, 1, 8, 2, seed=2)
    ones, zeros = np.ones(4), np.zeros(4)
    return {
        "layer_norm": (lambda x: fused.layer_norm(x, ones, zeros), x),
        "gelu": (fused.gelu, x),
        "embedding": (lambda e: fused.embedding(e, np.array([[0, 2, 2]])), w),
        "cross_entropy": (lambda z: fused.cross_entropy(z, np.array([[1, 3, 0]])), x[None]),
        "feed_forward": (lambda x: fused_layers.feed_forward(x, ones, zeros, w, zeros, w, zeros), x),
        "ecp_core": (lambda q: fused_attention.ecp_core(q, kv, 4), q),
        "ecp_sublayer": (
            lambda x: fused_attention.ecp_sublayer(x[None], w, w, w, zeros, w, zeros, None, 2, 1, "halves"),
            x,
        ),
    }


@pytest.mark.parametrize("name", sorted(_second_order_cases()))
def test_higher_order_gradients_through_fused_primitives_fail_with_one_clear_error(name):
    f, x = _second_order_cases()[name]
    second = grad(lambda x: anp.sum(grad(lambda y: anp.sum(anp.tanh(f(y))))(x) ** 2))
    with pytest.raises(NotImplementedError, match=rf"{name}: the fused primitives give first-order gradients only"):
        second(x)
