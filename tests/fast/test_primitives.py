"""The fast engine's primitives (``minicp.fast.primitives``) against the reference's functions.

Each primitive is checked on its own with autograd's ``check_grads`` (central differences, float64, order 1
for its hand-written VJP), and against the reference's composition of autograd.numpy ops (``minicp.nn.ops``,
``minicp.nn.rope``, the model's log-softmax and indexing), differentiated by autograd: float64 values and
gradients to 1e-13 relative, float32 values within float32 rounding of the float64 result. The reference is an
independent computation (no shared code with the hand-written VJPs), so a wrong VJP fails here.
"""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from minicp.fast import primitives as P
from minicp.fast import threads
from minicp.nn import model as M
from minicp.nn import ops
from minicp.nn.rope import rope, rope_tables

RNG = np.random.default_rng(0)
IDS = np.array([[0, 3, 3], [1, 0, 4]])


def _tables(n, d, dtype):
    return rope_tables(np.arange(n), d, dtype)


# name: (fast primitive, the reference's function, argument shapes)
CASES = {
    "linear": (
        lambda x, w, b: P.linear(x, w, b),
        lambda x, w, b: ops.linear(x, {"weight": w, "bias": b}),
        [(2, 5, 6), (4, 6), (4,)],
    ),
    "linear_nobias": (lambda x, w: P.linear(x, w), lambda x, w: ops.linear(x, {"weight": w}), [(3, 6), (4, 6)]),
    "layer_norm": (
        lambda x, w, b: P.layer_norm(x, w, b),
        lambda x, w, b: ops.layer_norm(x, {"weight": w, "bias": b}),
        [(2, 3, 7), (7,), (7,)],
    ),
    "rope_interleaved": (
        lambda x: P.rope(x, *_tables(5, 7, x.dtype), "interleaved"),
        lambda x: rope(x, np.arange(5), "interleaved"),
        [(2, 5, 7)],
    ),
    "rope_halves": (
        lambda x: P.rope(x, *_tables(5, 8, x.dtype), "halves"),
        lambda x: rope(x, np.arange(5), "halves"),
        [(2, 5, 8)],
    ),
    "embedding": (lambda w: P.embedding(w, IDS), lambda w: w[IDS], [(5, 3)]),
}


def _scalar(fn, i, args):
    """A scalar function of argument i with a non-trivial upstream gradient."""
    return lambda a: anp.sum(anp.sin(fn(*args[:i], a, *args[i + 1 :])))


@pytest.mark.parametrize("name", sorted(CASES))
def test_primitive_equals_the_reference_in_float64(name):
    fast, reference, shapes = CASES[name]
    args = [RNG.standard_normal(s) for s in shapes]
    check_grads(fast, modes=["rev"], order=1)(*args)
    want = reference(*args)
    np.testing.assert_allclose(fast(*args), want, rtol=1e-13, atol=1e-15 * np.abs(want).max())
    for i in range(len(args)):
        got, want = grad(_scalar(fast, i, args))(args[i]), grad(_scalar(reference, i, args))(args[i])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14 * np.abs(want).max(), err_msg=f"argument {i}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_primitive_in_float32_is_within_float32_rounding(name):
    fast, reference, shapes = CASES[name]
    args = [RNG.standard_normal(s) for s in shapes]
    exact = reference(*args)  # float64
    got = fast(*[a.astype(np.float32) for a in args])
    assert got.dtype == np.float32
    inputs32 = reference(
        *[a.astype(np.float32).astype(np.float64) for a in args]
    )  # the exact result of the rounded inputs
    np.testing.assert_allclose(got, inputs32, rtol=0, atol=16 * np.finfo(np.float32).eps * np.abs(exact).max())


def test_cross_entropy_equals_the_reference_loss():
    z, t = RNG.standard_normal((2, 4, 6)), RNG.integers(0, 6, (2, 4))
    check_grads(lambda z: P.cross_entropy(z, t), modes=["rev"], order=1)(z)

    def reference(z):
        picked = M.log_softmax(z)[np.arange(2)[:, None], np.arange(4)[None, :], t]
        return -anp.sum(picked) / picked.size

    np.testing.assert_allclose(P.cross_entropy(z, t), reference(z), rtol=1e-14)
    np.testing.assert_allclose(grad(P.cross_entropy)(z, t), grad(reference)(z), rtol=1e-13, atol=1e-16)
    onehot = np.eye(6)[t]  # closed form: (softmax - onehot) / rows
    np.testing.assert_allclose(grad(P.cross_entropy)(z, t), (np.exp(M.log_softmax(z)) - onehot) / t.size, atol=1e-15)


def test_embedding_gradient_sums_repeated_ids():
    ids = np.array([2, 2, 0, 2])
    g = RNG.standard_normal((4, 3))
    dw = P.embedding_vjp(g, np.zeros((4, 3)), ids)
    np.testing.assert_allclose(dw, [g[2], np.zeros(3), g[0] + g[1] + g[3], np.zeros(3)])


def test_threaded_passes_equal_one_thread():
    x = RNG.standard_normal((600, 256)).astype(np.float32)  # above threads.MIN_ELEMENTS
    w, b = RNG.standard_normal(256).astype(np.float32), RNG.standard_normal(256).astype(np.float32)
    g = RNG.standard_normal((600, 256)).astype(np.float32)
    run = lambda: [P.layer_norm(x, w, b), P.layer_norm_vjp(g, x, w, 1e-5)[0], P.cross_entropy(x, np.arange(600) % 256)]  # noqa: E731
    previous = threads.set_threads(3)
    try:
        many = run()
        threads.set_threads(1)
        one = run()
    finally:
        threads.set_threads(previous)
    for a, c in zip(many, one):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, c)


def test_set_threads_validates():
    with pytest.raises(ValueError, match="count"):
        threads.set_threads(0)
