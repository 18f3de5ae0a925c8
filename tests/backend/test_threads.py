"""minicp's thread pool in a forked child: the child inherits the pool object but none of its threads, so
work queued there would wait forever (training under ``multiprocessing``'s fork did exactly that)."""

import multiprocessing
import os

import numpy as np
import pytest

from minicp.backend import threads


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
