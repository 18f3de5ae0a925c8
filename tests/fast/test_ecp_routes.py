"""ECP's core in the fast engine (``minicp.fast.ecp``), every route forced on NumPy, against the readable
reference ``minicp.nn.attention.ecp.attention`` and against the declared pattern.

* "cpu-blocks" (NumPy's default), "k2" (the route CuPy training takes) and "windows" (CuPy inference's plan,
  here through strided views): float64 outputs equal the reference to 1e-14 relative; the two routes that keep
  probabilities give gradients equal to autograd's through the reference to 1e-14, and pass ``check_grads``.
* float32: within float32 rounding of the float64 result, as close as the reference's own float32.
* Coverage: perturbing one key (or one query) changes exactly the output rows the declared pattern says can
  see it (``minicp.attention_mask``), on every route: the route's blocks cover the pattern, no more, no less.

Head dims 64 and 128 (the paper's) and odd ones, several batches and heads (the windows route crosses head
boundaries), two to six half segments. A pair gradient sent to the wrong half segment, a mask off by one or a
missing dK + dV sum moves a result by O(1).
"""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

import minicp
from minicp.fast import ecp as E
from minicp.fast import feed_forward, primitives
from minicp.nn.attention import ecp

SHAPES = [(2, 2, 8, 4, 3), (1, 3, 20, 4, 5), (1, 1, 6, 3, 2), (2, 1, 16, 8, 64), (1, 2, 24, 6, 128), (3, 2, 12, 2, 7)]
KEEPING = ("cpu-blocks", "k2")  # the routes that keep probabilities for a backward pass


def _inputs(b, h, n, d, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    q, kv, w = (rng.standard_normal((b, h, n, d)) for _ in range(3))
    return (q * d**-0.5).astype(dtype), kv.astype(dtype), w


def _reference(q, kv, m):
    return ecp.attention(q, kv, kv, half_segment=m, scale=1.0)


def _rel(got, want):
    return np.abs(got - want).max() / np.abs(want).max()


@pytest.mark.parametrize("route", E.ROUTES)
@pytest.mark.parametrize("b, h, n, m, d", SHAPES)
def test_route_equals_the_reference_in_float64(route, b, h, n, m, d):
    q, kv, w = _inputs(b, h, n, d, seed=n + d)
    want = _reference(q, kv, m)
    assert _rel(E.core(q, kv, m, route=route), want) <= 1e-14
    if route not in KEEPING:
        return
    for argnum in (0, 1):
        got = grad(lambda q, kv: anp.sum(E.core(q, kv, m, route=route) * w), argnum)(q, kv)
        ref = grad(lambda q, kv: anp.sum(_reference(q, kv, m) * w), argnum)(q, kv)
        assert _rel(got, ref) <= 1e-14, argnum
    assert not E._kept  # every kept probability was taken by its backward pass


@pytest.mark.parametrize("route", KEEPING)
@pytest.mark.parametrize("b, h, n, m, d", SHAPES[:3])
def test_route_gradients_by_finite_differences(route, b, h, n, m, d):
    q, kv, w = _inputs(b, h, n, d, seed=1)
    check_grads(lambda q, kv: E.core(q, kv, m, route=route) * w, modes=["rev"], order=1)(q, kv)


@pytest.mark.parametrize("route", E.ROUTES)
@pytest.mark.parametrize("b, h, n, m, d", [(2, 2, 64, 16, 64), (1, 2, 48, 8, 128), (2, 3, 30, 5, 13)])
def test_route_in_float32_is_within_float32_rounding(route, b, h, n, m, d):
    q, kv, _ = _inputs(b, h, n, d, seed=3, dtype=np.float32)
    exact = _reference(q.astype(np.float64), kv.astype(np.float64), m)
    got = E.core(q, kv, m, route=route)
    assert got.dtype == np.float32
    own = _reference(q, kv, m)  # the reference's own float32 result
    assert own.dtype == np.float32
    assert _rel(got, exact) <= max(4 * _rel(own, exact), 16 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("route", E.ROUTES)
@pytest.mark.parametrize("n, m", [(24, 4), (12, 6), (18, 3)])
def test_route_covers_exactly_the_declared_pattern(route, n, m):
    visible = minicp.attention_mask("ecp", n, half_segment=m)  # (n, n), True: query i may see key j
    q, kv, _ = _inputs(1, 2, n, 5, seed=n)
    base = E.core(q, kv, m, route=route)
    for j in range(n):
        moved = kv.copy()
        moved[:, :, j] += 0.5  # key j (and its value: K = V)
        changed = np.abs(E.core(q, moved, m, route=route) - base).max(axis=(0, 1, 3)) > 0  # (n,) rows
        np.testing.assert_array_equal(changed, visible[:, j], err_msg=f"key {j}")
    for i in range(n):
        moved = q.copy()
        moved[:, :, i] += 0.5
        changed = np.abs(E.core(moved, kv, m, route=route) - base).max(axis=(0, 1, 3)) > 0
        expected = (np.arange(n) == i) & (visible[i].sum() > 1)  # a row that sees one key ignores its query
        np.testing.assert_array_equal(changed, expected, err_msg=f"query {i}")


def test_default_routes_and_bad_requests():
    q, kv, _ = _inputs(1, 1, 8, 4, seed=0)
    assert E.route_for(q, kv, 2, keep=False) == E.route_for(q, kv, 2, keep=True) == "cpu-blocks"
    assert E.route_for(q.astype(np.float16), kv.astype(np.float16), 2, keep=False) == "k2"
    with pytest.raises(ValueError, match="route 'flash' is not one of"):
        E.core(q, kv, 2, route="flash")
    with pytest.raises(ValueError, match="keeps nothing for a backward pass"):
        grad(lambda q: anp.sum(E.core(q, kv, 2, route="windows")))(q)


def _second_order_cases():
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((4, 4))
    q, kv, _ = _inputs(1, 1, 8, 2, seed=2)
    ones, zeros = np.ones(4), np.zeros(4)
    return {
        "layer_norm": (lambda x: primitives.layer_norm(x, ones, zeros), x),
        "embedding": (lambda e: primitives.embedding(e, np.array([[0, 2, 2]])), w),
        "cross_entropy": (lambda z: primitives.cross_entropy(z, np.array([[1, 3, 0]])), x[None]),
        "feed_forward": (lambda x: feed_forward.feed_forward(x, ones, zeros, w, zeros, w, zeros), x),
        "ecp_core": (lambda q: E.core(q, kv, 4), q),
        "ecp_sublayer": (lambda x: E.sublayer(x[None], w, w, w, zeros, w, zeros, None, 2, 1, "halves"), x),
    }


@pytest.mark.parametrize("name", sorted(_second_order_cases()))
def test_higher_order_gradients_fail_with_one_clear_error(name):
    f, x = _second_order_cases()[name]
    second = grad(lambda x: anp.sum(grad(lambda y: anp.sum(anp.tanh(f(y))))(x) ** 2))
    with pytest.raises(NotImplementedError, match=rf"{name}: the fast engine gives first-order gradients only"):
        second(x)
