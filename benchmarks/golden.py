"""Cost of a check against the kernel's own cost: ECP, n = 16384, 8 heads, d 64, float32, with gradients.

    python benchmarks/golden.py [--seq-len 16384] [--repeats 3]

Times, in one process, alternated over repeats (medians reported): the kernel's forward + backward
(PyTorch SDPA over ECP's blocks, CPU), then ``assert_matches_reference`` cold (no cache: reference and
floors computed), warm (the in-process cache), and from the disk cache with the in-process cache cleared.
Results: benchmarks/results/golden-cpu.txt.
"""

import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import minicp.testing as mt
from minicp.testing import reference
from minicp.testing import torch as mtt

try:
    from threadpoolctl import threadpool_limits  # optional: NumPy's BLAS threads on a shared machine
except ImportError:  # pragma: no cover
    threadpool_limits = None


def ecp_sdpa(q, k, v, m):
    """ECP with two SDPA calls (half segment 0 causal; every later one against the pair (t-1, t))."""
    b, h, n, d = q.shape
    N = n // m
    Q, K, V = (x.reshape(b, h, N, m, d) for x in (q, k, v))
    first = F.scaled_dot_product_attention(Q[:, :, 0], K[:, :, 0], V[:, :, 0], is_causal=True)
    K2, V2 = (torch.cat([X[:, :, :-1], X[:, :, 1:]], dim=3) for X in (K, V))
    mask = torch.ones(m, 2 * m, dtype=torch.bool).tril(diagonal=m)
    rest = F.scaled_dot_product_attention(Q[:, :, 1:], K2, V2, attn_mask=mask)
    return torch.cat([first[:, :, None], rest], dim=2).reshape(b, h, n, d)


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq-len", type=int, default=16384)
    p.add_argument("--segment", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="alternated repeats; medians are reported")
    args = p.parse_args()
    m = args.segment // 2
    case = dict(arch="ecp", seq_len=args.seq_len, heads=8, head_dim=64, segment=args.segment, dtype="float32")
    fn = lambda q, k, v: ecp_sdpa(q, k, v, m)
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(1, 8, args.seq_len, 64, generator=g) for _ in range(4))
    print(f"ECP n={args.seq_len}, 8 heads, d 64, float32, torch {torch.__version__}, {torch.get_num_threads()} threads")
    check = lambda cache: mt.assert_matches_reference(fn, check_grads=True, cache_dir=cache, **case, **mtt.adapters(fn))
    times = {key: [] for key in ("kernel", "cold", "warm", "disk")}
    for r in range(args.repeats):  # alternated, so that the machine's load falls on every column alike
        cache = tempfile.mkdtemp(prefix="minicp-ref-")
        reference.clear_cache()
        times["kernel"].append(_timed(lambda: mtt.grad_fn(fn)(q, k, v, dout)))
        times["cold"].append(_timed(lambda: check(None)))  # no cache at all
        times["warm"].append(_timed(lambda: check(None)))  # the in-process cache
        check(cache)  # fill the disk cache (not timed)
        reference.clear_cache()
        times["disk"].append(_timed(lambda: check(cache)))
        size = sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache))
        print(f"repeat {r}: " + ", ".join(f"{key} {t[-1]:.2f} s" for key, t in times.items()))
    med = {key: statistics.median(t) for key, t in times.items()}
    print(f"medians of {args.repeats}: kernel forward + backward {med['kernel']:.2f} s")
    for key, label in (("cold", "cold (no cache)"), ("warm", "warm (in-process cache)"), ("disk", "disk cache")):
        print(f"  check {label:<24} {med[key]:6.2f} s = {med[key] / med['kernel']:4.2f}x the kernel (runs it once)")
    print(f"disk cache entry: {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    if threadpool_limits is not None:
        with threadpool_limits(limits=2):
            main()
    else:
        main()
