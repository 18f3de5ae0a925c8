"""Whole-sub-layer primitives (minicp.nn.fused_layers) and attend's kept probabilities.

The feed-forward primitive is checked with autograd's ``check_grads`` (numerical derivatives, float64) and
against the readable composition of autograd.numpy ops written out here (LayerNorm, Linear, exact GELU
with scipy's erf): same values and gradients to float64 rounding. ``attend`` keeps its forward pass's
probabilities for the backward pass; its gradients must equal the recomputing ``attend_vjp`` and the
plain formula differentiated by autograd, and nothing may stay kept after a step or an untraced call.
"""

import autograd.numpy as anp
import autograd.scipy.special as asp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from minicp.backend import threads
from minicp.nn import fused_layers, ops

RNG = np.random.default_rng(7)


def readable_feed_forward(x, ln_w, ln_b, w1, b1, w2, b2, eps=1e-5):
    mean = anp.mean(x, axis=-1, keepdims=True)
    var = anp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    xn = (x - mean) / anp.sqrt(var + eps) * ln_w + ln_b
    h = anp.dot(xn, w1.T) + b1
    a = 0.5 * h * (1.0 + asp.erf(h / np.sqrt(2.0)))
    return x + anp.dot(a, w2.T) + b2


def ff_args(shape=(2, 5, 6), hidden=11, dtype=np.float64):
    D = shape[-1]
    shapes = [shape, (D,), (D,), (hidden, D), (hidden,), (D, hidden), (D,)]
    return [RNG.standard_normal(s).astype(dtype) for s in shapes]


def test_feed_forward_gradients_are_numerically_right():
    args = ff_args()
    for i in range(len(args)):

        def f(a, i=i):
            full = list(args)
            full[i] = a
            return anp.sum(anp.sin(fused_layers.feed_forward(*full)))

        check_grads(f, modes=["rev"], order=1)(args[i])


def test_feed_forward_equals_readable_composition():
    args = ff_args()
    np.testing.assert_allclose(fused_layers.feed_forward(*args), readable_feed_forward(*args), rtol=1e-12, atol=1e-13)
    argnums = tuple(range(len(args)))
    fast = grad(lambda *a: anp.sum(anp.sin(fused_layers.feed_forward(*a))), argnums)(*args)
    slow = grad(lambda *a: anp.sum(anp.sin(readable_feed_forward(*a))), argnums)(*args)
    for i, (f, s) in enumerate(zip(fast, slow)):
        np.testing.assert_allclose(f, s, rtol=1e-10, atol=1e-12, err_msg=f"argument {i}")
    assert not fused_layers._kept


def test_feed_forward_float32_and_threads():
    args = ff_args((4, 300, 64), 256, np.float32)  # above threads.MIN_ELEMENTS: the row ranges run in parallel
    y = fused_layers.feed_forward(*args)
    assert y.dtype == np.float32 and not fused_layers._kept  # untraced: nothing kept
    ref = readable_feed_forward(*[a.astype(np.float64) for a in args])
    np.testing.assert_allclose(y, ref, rtol=2e-4, atol=2e-4)
    g = grad(lambda w1: anp.sum(fused_layers.feed_forward(args[0], *args[1:3], w1, *args[4:])))(args[3])
    assert g.dtype == np.float32 and not fused_layers._kept


@pytest.mark.parametrize("shared_kv", [False, True])
def test_attend_kept_probabilities_give_the_same_gradients(shared_kv):
    q, k, v = RNG.standard_normal((3, 2, 3, 6, 4))
    if shared_kv:
        v = k
    g = RNG.standard_normal((2, 3, 6, 4))
    mask = ops.causal_mask(6, 6, 1)

    def plain(q, k, v):
        s = anp.where(mask, q @ anp.swapaxes(k, -1, -2), -anp.inf)
        p = anp.exp(s - anp.max(s, -1, keepdims=True))
        return anp.sum((p / anp.sum(p, -1, keepdims=True) @ v) * g)

    kept = grad(lambda q, k, v: anp.sum(ops.attend(q, k, v, mask) * g), (0, 1, 2))(q, k, v)
    assert not ops._kept  # handed over and released
    auto = grad(plain, (0, 1, 2))(q, k, v)
    recomputed = ops.attend_vjp(g, q, k, v, mask)
    for a, b, c in zip(kept, auto, recomputed):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(a, c)
    ops.attend(q, k, v, mask)
    assert not ops._kept  # untraced calls keep nothing


def test_stacked_products_on_the_pool_equal_numpy():
    a = RNG.standard_normal((2, 3, 128, 32)).astype(np.float32)
    b = RNG.standard_normal((2, 3, 32, 600)).astype(np.float32)  # 128 * 32 * 600 > threads.MIN_PRODUCT
    assert 128 * 32 * 600 >= threads.MIN_PRODUCT
    previous = threads.set_threads(2)
    try:
        np.testing.assert_allclose(threads.matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)  # BLAS blocking differs
        bt = np.swapaxes(RNG.standard_normal((2, 3, 600, 32)), -1, -2)  # a strided view, float64
        np.testing.assert_allclose(threads.matmul(a, bt), a @ bt, rtol=1e-12)
        assert threads.matmul(a[0, 0], b[0, 0]).shape == (128, 600)  # 2-D: plain a @ b
    finally:
        threads.set_threads(previous)


@pytest.mark.parametrize("count", [2, 3])
def test_row_split_products_equal_numpy(count):
    a = RNG.standard_normal((1001, 128))  # 1001 rows: ranges of unequal length
    b = RNG.standard_normal((128, 40))
    assert 1001 * 128 * 40 >= threads.MIN_PRODUCT
    previous = threads.set_threads(count)
    try:
        np.testing.assert_allclose(threads.matmul_rows(a, b), a @ b, rtol=1e-12, atol=1e-12)
        a32, bt = a.astype(np.float32), np.asarray(RNG.standard_normal((40, 128)), np.float32).T  # b a strided view
        got = threads.matmul_rows(a32, bt)
        assert got.dtype == np.float32 and got.shape == (1001, 40)
        np.testing.assert_allclose(got, a32 @ bt, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(threads.matmul_rows(a[:10], b), a[:10] @ b)  # small: plain a @ b
    finally:
        threads.set_threads(previous)


def test_weight_gradient_split_over_rows_equals_numpy():
    a = RNG.standard_normal((4096, 128)).astype(np.float32)
    b = RNG.standard_normal((4096, 96)).astype(np.float32)
    previous = threads.set_threads(3)
    try:
        np.testing.assert_allclose(threads.matmul_tn(a, b), a.T @ b, rtol=1e-4, atol=1e-3)  # float32 sums of 4096
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        np.testing.assert_allclose(threads.matmul_tn(a64, b64), a64.T @ b64, rtol=1e-12, atol=1e-10)
        assert threads.matmul_tn(a[:10], b[:10]).shape == (128, 96)  # small: plain a.T @ b
    finally:
        threads.set_threads(previous)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-4)])
@pytest.mark.parametrize("block_entries", [1, 7 * 37, 1 << 20])  # one row a block ... one block for all
def test_untraced_feed_forward_in_row_blocks_equals_the_readable_composition(monkeypatch, dtype, tol, block_entries):
    monkeypatch.setattr(fused_layers, "BLOCK_ENTRIES", block_entries)
    args = ff_args((3, 41, 24), 37, dtype)  # 123 rows: blocks of 7 rows end in a partial one
    y = fused_layers.feed_forward(*args)
    assert y.dtype == dtype and y.shape == args[0].shape and not fused_layers._kept
    ref = readable_feed_forward(*[a.astype(np.float64) for a in args])
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    traced = {}
    grad(lambda x: anp.sum(traced.setdefault("y", fused_layers.feed_forward(x, *args[1:]))))(args[0])
    np.testing.assert_allclose(y, traced["y"]._value, rtol=tol, atol=tol)  # the traced path (whole arrays)
