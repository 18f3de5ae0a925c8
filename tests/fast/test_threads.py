"""The fast engine's thread pool: split products equal NumPy's, and a forked child gets a working pool (it
inherits the pool object but none of its threads, so work queued there would wait forever; training under
``multiprocessing``'s fork did exactly that)."""

import multiprocessing
import os

import numpy as np
import pytest

from minicp.fast import threads

RNG = np.random.default_rng(7)


def _child(conn):
    out = np.zeros(1 << 18)
    threads.parallel_rows(out.size, out.size, lambda lo, hi: out[lo:hi].__iadd__(1.0))
    conn.send(float(out.sum()))
    os._exit(0)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_gets_a_working_pool():
    previous = threads.set_threads(2)
    try:
        warm = np.zeros(1 << 18)
        threads.parallel_rows(warm.size, warm.size, lambda lo, hi: warm[lo:hi].__iadd__(1.0))  # the parent's pool
        assert threads._pool is not None
        ctx = multiprocessing.get_context("fork")
        parent, child_end = ctx.Pipe()
        child = ctx.Process(target=_child, args=(child_end,))
        child.start()
        assert parent.poll(30), "the child's parallel pass never finished"
        assert parent.recv() == float(1 << 18)
        child.join(30)
        assert child.exitcode == 0
    finally:
        threads.set_threads(previous)


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
