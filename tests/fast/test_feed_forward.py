"""The feed-forward sub-layer as one primitive (``minicp.fast.feed_forward``) against the reference.

The reference is ``x + minicp.nn.model.feed_forward(p, x, cfg)``: LayerNorm, Linear, exact GELU (erf) and
Linear as autograd.numpy ops, differentiated by autograd. The primitive is also checked on its own with
``check_grads``. float64: values and every gradient to 1e-12 relative; float32: within float32 rounding of the
float64 result (the fast float32 GELU is within a few units of the exact function); the untraced row-block
route (inference) and the traced route (whole arrays) agree.
"""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from minicp import ModelConfig
from minicp.fast import feed_forward as F
from minicp.nn import model as M

RNG = np.random.default_rng(7)
NAMES = ("ln_w", "ln_b", "w1", "b1", "w2", "b2")


def ff_args(shape=(2, 5, 6), hidden=11, dtype=np.float64):
    D = shape[-1]
    shapes = [shape, (D,), (D,), (hidden, D), (hidden,), (D, hidden), (D,)]
    return [RNG.standard_normal(s).astype(dtype) for s in shapes]


def reference(x, ln_w, ln_b, w1, b1, w2, b2):
    """The reference's block: x + FF(LN(x)) (``minicp.nn.model.feed_forward``)."""
    cfg = ModelConfig(arch="transformer", vocab=2, dim=x.shape[-1], heads=1, layers=1, seq_len=x.shape[-2])
    p = {
        "norm": {"weight": ln_w, "bias": ln_b},
        "fn": {"net": {"0": {"weight": w1, "bias": b1}, "3": {"weight": w2, "bias": b2}}},
    }
    return x + M.feed_forward(p, x, cfg)


def test_feed_forward_gradients_are_numerically_right():
    args = ff_args()
    for i in range(len(args)):

        def f(a, i=i):
            return anp.sum(anp.sin(F.feed_forward(*args[:i], a, *args[i + 1 :])))

        check_grads(f, modes=["rev"], order=1)(args[i])


def test_feed_forward_equals_the_reference_in_float64():
    args = ff_args()
    np.testing.assert_allclose(F.feed_forward(*args), reference(*args), rtol=1e-13, atol=1e-14)
    argnums = tuple(range(len(args)))
    fast = grad(lambda *a: anp.sum(anp.sin(F.feed_forward(*a))), argnums)(*args)
    slow = grad(lambda *a: anp.sum(anp.sin(reference(*a))), argnums)(*args)
    for name, f, s in zip(("x",) + NAMES, fast, slow):
        np.testing.assert_allclose(f, s, rtol=1e-12, atol=1e-13 * np.abs(s).max(), err_msg=name)
    assert not F._kept


def test_feed_forward_float32_within_rounding_and_on_threads():
    args = ff_args((4, 300, 64), 256, np.float32)  # above threads.MIN_ELEMENTS: the row ranges run in parallel
    y = F.feed_forward(*args)
    assert y.dtype == np.float32 and not F._kept  # untraced: nothing kept
    exact = reference(*[a.astype(np.float64) for a in args])
    scale = np.abs(exact).max()
    err = np.abs(y - exact).max() / scale
    ref32 = reference(*args)  # the reference's own float32 computation, for scale
    assert ref32.dtype == np.float32
    ref_err = np.abs(ref32 - exact).max() / scale
    assert err < 64 * np.finfo(np.float32).eps, (err, ref_err)
    g = grad(lambda w1: anp.sum(F.feed_forward(args[0], *args[1:3], w1, *args[4:])))(args[3])
    assert g.dtype == np.float32 and not F._kept


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("block_entries", [1, 7 * 37, 1 << 20])  # one row a block ... one block for all
def test_untraced_feed_forward_in_row_blocks_equals_the_reference(monkeypatch, dtype, tol, block_entries):
    monkeypatch.setattr(F, "BLOCK_ENTRIES", block_entries)
    args = ff_args((3, 41, 24), 37, dtype)  # 123 rows: blocks of 7 rows end in a partial one
    y = F.feed_forward(*args)
    assert y.dtype == dtype and y.shape == args[0].shape and not F._kept
    exact = reference(*[a.astype(np.float64) for a in args])
    np.testing.assert_allclose(y, exact, rtol=tol, atol=tol * np.abs(exact).max())
    traced = {}
    grad(lambda x: anp.sum(traced.setdefault("y", F.feed_forward(x, *args[1:]))))(args[0])
    np.testing.assert_allclose(y, traced["y"]._value, rtol=tol, atol=tol * np.abs(exact).max())  # the traced route
