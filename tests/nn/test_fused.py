"""The fused primitives (minicp.nn.fused) against the readable compositions of autograd.numpy ops.

Both paths are checked on their own with autograd's ``check_grads`` (numerical derivatives, float64,
orders 1 for the primitives' hand-written VJPs), and against each other: same values and gradients to
float64 rounding (rtol 1e-10) for every primitive and for the whole model's loss. The readable path is
an independent computation (no shared code with the fused VJPs), so a wrong VJP fails here.
"""

import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from minicp import ModelConfig, init_params
from minicp.backend import threads
from minicp.nn import fused, ops
from minicp.nn import model as M

RNG = np.random.default_rng(0)


def both(fn, *args):
    """fn(*args) with the fused primitives on and off."""
    out = []
    for flag in (True, False):
        with fused.use_fused(flag):
            out.append(fn(*args))
    return out


CASES = {
    "linear": (lambda x, w, b: ops.linear(x, {"weight": w, "bias": b}), [(2, 5, 6), (4, 6), (4,)]),
    "linear_nobias": (lambda x, w: ops.linear(x, {"weight": w}), [(3, 6), (4, 6)]),
    "layer_norm": (lambda x, w, b: ops.layer_norm(x, {"weight": w, "bias": b}), [(2, 3, 7), (7,), (7,)]),
    "gelu": (ops.gelu, [(3, 9)]),
    "rope_interleaved": (lambda x: ops.rope(x, np.arange(5), "interleaved"), [(2, 5, 7)]),
    "rope_halves": (lambda x: ops.rope(x, np.arange(5), "halves"), [(2, 5, 8)]),
    "embedding": (lambda w: fused.embedding(w, np.array([[0, 3, 3], [1, 0, 4]])), [(5, 3)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_primitive_matches_readable_path(name):
    fn, shapes = CASES[name]
    args = [RNG.standard_normal(s) for s in shapes]
    for flag in (True, False):
        with fused.use_fused(flag):
            check_grads(fn, modes=["rev"], order=1)(*args)
    fast, slow = both(fn, *args)
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-14)
    for i in range(len(args)):
        scalar = lambda *a: np.sum(np.sin(fn(*a)))  # noqa: E731
        gf, gs = both(grad(scalar, i), *args)
        np.testing.assert_allclose(gf, gs, rtol=1e-10, atol=1e-12, err_msg=f"{name} argument {i}")


def test_cross_entropy_matches_log_softmax():
    z, t = RNG.standard_normal((2, 4, 6)), RNG.integers(0, 6, (2, 4))
    check_grads(lambda z: fused.cross_entropy(z, t), modes=["rev"], order=1)(z)
    logp = M.log_softmax(z)
    ref = -np.mean(np.take_along_axis(logp, t[..., None], axis=-1))
    np.testing.assert_allclose(fused.cross_entropy(z, t), ref, rtol=1e-13)
    onehot = np.eye(6)[t]
    np.testing.assert_allclose(grad(fused.cross_entropy)(z, t), (np.exp(logp) - onehot) / t.size, atol=1e-15)


def test_embedding_gradient_sums_repeated_ids():
    ids = np.array([2, 2, 0, 2])
    g = RNG.standard_normal((4, 3))
    dw = fused.embedding_vjp(g, np.zeros((4, 3)), ids)
    np.testing.assert_allclose(dw, [g[2], np.zeros(3), g[0] + g[1] + g[3], np.zeros(3)])


@pytest.mark.parametrize("arch", ["ecp", "transformer", "compressed"])
def test_model_loss_and_gradients_equal_on_both_paths(arch):
    extra = dict(half_segment=8) if arch == "ecp" else dict(latent=16, compressed=8) if arch == "compressed" else {}
    cfg = ModelConfig(arch=arch, vocab=32, dim=16, heads=2, layers=2, seq_len=32, **extra)
    params = init_params(cfg, seed=1, dtype="float64")
    tokens = RNG.integers(0, 32, (2, 33))
    (lf, gf), (ls, gs) = both(lambda: (M.loss(params, tokens, cfg), grad(M.loss)(params, tokens, cfg)))
    np.testing.assert_allclose(lf, ls, rtol=1e-12)
    flat_f, flat_s = M.flatten(gf), M.flatten(gs)
    for name in flat_s:
        np.testing.assert_allclose(flat_f[name], flat_s[name], rtol=1e-9, atol=1e-13, err_msg=name)


def test_threaded_passes_equal_one_thread():
    x = RNG.standard_normal((600, 256)).astype(np.float32)  # above threads.MIN_ELEMENTS
    w, b = np.ones(256, np.float32), np.zeros(256, np.float32)
    previous = threads.set_threads(3)
    try:
        many = [fused.gelu(x), fused.layer_norm(x, w, b), fused.gelu_vjp(x, x)]
        threads.set_threads(1)
        one = [fused.gelu(x), fused.layer_norm(x, w, b), fused.gelu_vjp(x, x)]
    finally:
        threads.set_threads(previous)
    for a, c in zip(many, one):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, c)


def test_switch_validates():
    with pytest.raises(TypeError, match="flag"):
        with fused.use_fused(1):
            pass
    with pytest.raises(ValueError, match="count"):
        threads.set_threads(0)
