"""A small thread pool for large element-wise passes on the CPU.

NumPy (and SciPy's ufuncs such as ``erf``) release the GIL inside their inner loops, so one big
element-wise pass split into a few contiguous row ranges runs on several cores at once. BLAS already
uses its own threads for the matrix products; everything else (GELU, LayerNorm, the softmax of the
score blocks, the cross-entropy) goes through ``parallel_rows`` here. The fast engine's matrix products are
split by hand too, each part one single-threaded BLAS call on the pool (``threadpoolctl`` holds BLAS to one
thread meanwhile): large stacks of attention blocks (``matmul``), weight gradients with their long sum over
rows (``matmul_tn``), and the activations' products with the weights (``matmul_rows``). Then BLAS's own
threads never run beside the pool's, which measured faster on 2 cores than mixing the two, and BLAS's barriers
no longer stall whenever another process holds a core (docs/engines.md has the numbers).

``threads``: how many workers (default: the CPUs this process may run on, capped at 8; the
environment variable ``MINICP_THREADS`` overrides it). Passes smaller than ``MIN_ELEMENTS`` run inline:
below that the hand-off costs more than it saves. With ``threads = 1`` nothing is ever threaded.
"""

import concurrent.futures
import os

import numpy as np
import threadpoolctl

MIN_ELEMENTS = 1 << 16  # elements below which a pass runs in the calling thread
MIN_PRODUCT = 1 << 21  # i * j * d of one matrix product in a stack, from which stacks are split over the pool


def _default_threads():
    env = os.environ.get("MINICP_THREADS")
    if env:
        return max(1, int(env))
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        count = os.cpu_count() or 1
    return max(1, min(8, count))


threads = _default_threads()
_pool = None
_pool_size = 0


def set_threads(count):
    """Use ``count`` (a positive int) worker threads for element-wise passes; returns the previous count."""
    global threads
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    previous, threads = threads, count
    return previous


def _forget_pool_after_fork():
    """A forked child has none of its parent's worker threads: the pool object it inherits would queue work
    that nobody runs. The child starts a pool of its own on first use."""
    global _pool, _pool_size, _blas
    _pool, _pool_size, _blas = None, 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _executor():
    global _pool, _pool_size
    if _pool is None or _pool_size != threads - 1:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="minicp")
        _pool_size = threads - 1
    return _pool


def parallel_rows(rows, work, fn):
    """Call ``fn(lo, hi)`` on contiguous ranges covering ``range(rows)``, in parallel when ``work``
    (elements touched) is large. The calling thread takes the first range; ``fn`` must only write
    rows lo..hi-1 of its outputs. Returns nothing; exceptions of any range are re-raised."""
    k = min(threads, rows) if work >= MIN_ELEMENTS else 1
    if k <= 1:
        fn(0, rows)
        return
    bounds = [rows * i // k for i in range(k + 1)]
    futures = [_executor().submit(fn, bounds[i], bounds[i + 1]) for i in range(1, k)]
    try:
        fn(bounds[0], bounds[1])
    finally:
        for f in futures:
            f.result()


_blas = None


def _one_blas_thread():
    """A context in which BLAS runs single-threaded (threadpoolctl)."""
    global _blas
    if _blas is None:
        _blas = threadpoolctl.ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def parallel_products(rows, work, fn):
    """``parallel_rows`` for work whose ranges run matrix products: BLAS is held to one thread while the
    ranges run on the pool, so its threads never run beside the pool's. With one
    thread, or when ``work`` is small, one call ``fn(0, rows)`` in the calling thread (BLAS threads as usual)."""
    if threads < 2 or rows < 2 or work < MIN_ELEMENTS:
        fn(0, rows)
        return
    with _one_blas_thread():
        parallel_rows(rows, work, fn)


def _splits_rows(a, b):
    """True when the 2-D product over the rows of a and b is large enough to split (and can be split)."""
    r = a.shape[0]
    return (
        threads >= 2
        and a.ndim == 2
        and b.ndim == 2
        and r >= 64 * threads
        and r * a.shape[1] * b.shape[-1] >= MIN_PRODUCT
    )


def matmul(a, b):
    """a @ b for NumPy stacks a (..., i, d), b (..., d, j) with the same leading shape.

    BLAS threads every product of a stack separately, and for products of a few million multiply-adds
    (attention blocks) its start-up and barriers cost more than the product, several times more on a
    busy machine. Large stacks of such products therefore run as contiguous ranges of the stack on the
    pool, each product single-threaded: ``a @ b`` up to rounding (single-threaded BLAS may block the sums
    differently). Anything else is ``a @ b``.
    """
    lead = a.shape[:-2]
    stack = int(np.prod(lead)) if lead else 1
    work = a.shape[-2] * a.shape[-1] * b.shape[-1]
    if threads < 2 or a.ndim < 3 or b.shape[:-2] != lead or stack < threads or work < MIN_PRODUCT:
        return a @ b
    a3, b3 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])  # views where the layout allows
    out = np.empty((stack, a.shape[-2], b.shape[-1]), dtype=np.result_type(a, b))
    parallel_products(stack, MIN_ELEMENTS, lambda lo, hi: np.matmul(a3[lo:hi], b3[lo:hi], out=out[lo:hi]))
    return out.reshape(*lead, *out.shape[-2:])


def matmul_rows(a, b):
    """a @ b for a 2-D NumPy a (r, k) and b (k, o): contiguous row ranges of a on the pool, each one
    single-threaded product, so that BLAS's own threads never run beside the pool's. a @ b up to the
    rounding of single-threaded BLAS; small products and everything else are ``a @ b``."""
    if not _splits_rows(a, b):
        return a @ b
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    parallel_products(a.shape[0], MIN_ELEMENTS, lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]))
    return out


def matmul_tn(a, b):
    """a^T b for 2-D NumPy arrays a (r, o), b (r, i) -> (o, i): a weight gradient, a long sum over rows r.

    BLAS threads such products over the small output, with a barrier per block of the long sum, which
    stalls whenever another process holds a core. Here each of ``threads`` contiguous row ranges is one
    single-threaded product on the pool and the partial sums are added in range order: a^T b up to
    rounding. Small products, and everything but 2-D NumPy arrays, are ``a.T @ b``.
    """
    if not _splits_rows(a, b):
        return a.T @ b
    parts = {}

    def part(lo, hi):
        parts[lo] = a[lo:hi].T @ b[lo:hi]

    parallel_products(a.shape[0], MIN_ELEMENTS, part)
    keys = sorted(parts)
    total = parts[keys[0]]
    for k in keys[1:]:
        total += parts[k]
    return total
