"""Cost of a check against the kernel's own cost: ECP, n = 16384, 8 heads, d 64, float32, with gradients.

    python benchmarks/golden.py [--seq-len 16384] [--repeats 3] [--stages]

Times, in one process, alternated over repeats (medians reported): the kernel's forward + backward
(PyTorch SDPA over ECP's blocks, CPU), then ``assert_matches_reference`` cold (no cache: reference and
floors computed), warm (the in-process cache), and from the disk cache with the in-process cache cleared.
The check runs the kernel once (``mtt.adapters``: its grad_fn returns the forward's output too), on the
drawn inputs, before it computes the reference.
``--stages`` first times each stage of a cold check on its own. Results: benchmarks/results/golden-cpu.txt.
"""

import argparse
import os
import statistics
import tempfile
import time

import numpy as onp
import torch
import torch.nn.functional as F
from machine import cpu_name

import minicp.testing as mt
from minicp.testing import blockwise, check, guards, kernel_run, reference, rowstats
from minicp.testing import cache as memory
from minicp.testing import torch as mtt

try:
    from threadpoolctl import threadpool_limits  # optional: the BLAS threads, set to the cores used
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


def stages(case, fn):
    """Seconds of each stage of a cold check, run one after the other (what the check does, in its order)."""
    n, pa = case["seq_len"], {"half_segment": case["segment"] // 2, "partial": False}
    t, out = {}, {}

    def timed(name, f):
        start = time.perf_counter()
        result = f()
        t[name] = time.perf_counter() - start
        return result

    x = timed("draw the seeded inputs", lambda: reference.seeded_inputs(0, 1, 8, n, 64, n, "float32"))
    plan, rows = timed("block plan", lambda: blockwise.block_plan("ecp", n, 8, pa))
    case_dict = reference.shared_inputs(
        grads=True, **{k: v for k, v in case.items() if k != "segment"}, half_segment=pa["half_segment"]
    )
    results, _ = timed(
        "kernel f+b (once, in the check)",
        lambda: check.run_kernel(
            fn, mtt.grad_fn(fn, with_out=True), case_dict, check_grads=True, array_fn=mtt.arrays()
        ),
    )  # noqa: E501
    workers = os.cpu_count() or 1
    passes = (("reference float64 f+b", "float64", "plain"), ("plain float32 floor f+b", "float32", "plain"))
    for label, dt, kind in passes + (("production float32 floor f+b", "float32", "production"),):
        out[label] = timed(
            label,
            lambda: blockwise.attention_blocks(
                *(x[k] for k in "qkv"), plan, rows, dtype=dt, dout=x["dout"], workers=workers,
                intermediates=kind == "plain", production=kind == "production",
            ),
        )  # fmt: skip
    keys = ("out", "dq", "dk", "dv")
    ref, plain, prod = (out[label] for label, _, _ in passes + (("production float32 floor f+b", 0, 0),))
    timed("floor statistics (4 tensors)", lambda: [rowstats.floor_stats(ref[k], plain[k], prod[k]) for k in keys])
    case_dict = reference.complete_case(case_dict)
    timed("judging (4 tensors)", lambda: check.judge_case(case_dict, kernel_run.results_in(results, case_dict, "bhnd")))
    folder = tempfile.mkdtemp(prefix="minicp-ref-")
    computed = {k: v for k, v in case_dict.items() if isinstance(v, onp.ndarray) and k != "rows"}
    sha = guards.combined_digest(case_dict, ("q", "k", "v", "dout"))
    timed("disk cache save", lambda: memory.store_entry(folder, "0" * 64, computed, sha))
    shapes = {k: (v.shape, v.dtype.name) for k, v in computed.items()}
    timed("disk cache load", lambda: memory.load_entry(folder, "0" * 64, shapes, sha, "float32"))
    for name, seconds in t.items():
        print(f"  stage {name:<34} {seconds:6.2f} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seq-len", type=int, default=16384)
    p.add_argument("--segment", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="alternated repeats; medians are reported")
    p.add_argument("--stages", action="store_true", help="first time each stage of a cold check on its own")
    args = p.parse_args()
    m = args.segment // 2
    case = dict(arch="ecp", seq_len=args.seq_len, heads=8, head_dim=64, segment=args.segment, dtype="float32")
    fn = lambda q, k, v: ecp_sdpa(q, k, v, m)
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(1, 8, args.seq_len, 64, generator=g) for _ in range(4))
    print(
        f"ECP n={args.seq_len}, 8 heads, d 64, float32, torch {torch.__version__}, {torch.get_num_threads()} torch "
        f"threads; minicp: {os.cpu_count()} threads over the 8 heads (at most 8 busy); CPU: {cpu_name()}"
    )
    check = lambda cache: mt.assert_matches_reference(fn, check_grads=True, cache_dir=cache, **case, **mtt.adapters(fn))
    if args.stages:
        mtt.grad_fn(fn)(q, k, v, dout)  # PyTorch's first call (warm-up) is not a stage
        stages(case, fn)
        memory.clear_cache()
    times = {key: [] for key in ("kernel", "cold", "warm", "disk")}
    for r in range(args.repeats):  # alternated, so that the machine's load falls on every column alike
        cache = tempfile.mkdtemp(prefix="minicp-ref-")
        memory.clear_cache()
        times["kernel"].append(_timed(lambda: mtt.grad_fn(fn)(q, k, v, dout)))
        times["cold"].append(_timed(lambda: check(None)))  # no cache at all
        times["warm"].append(_timed(lambda: check(None)))  # the in-process cache
        memory.clear_cache()  # else the fill is served from memory and writes nothing
        check(cache)  # fill the disk cache (not timed)
        memory.clear_cache()
        times["disk"].append(_timed(lambda: check(cache)))
        size = sum(os.path.getsize(os.path.join(cache, f)) for f in os.listdir(cache))
        print(f"repeat {r}: " + ", ".join(f"{key} {t[-1]:.2f} s" for key, t in times.items()))
    med = {key: statistics.median(t) for key, t in times.items()}
    print(f"medians of {args.repeats}: kernel forward + backward {med['kernel']:.2f} s")
    for key, label in (("cold", "cold (no cache)"), ("warm", "warm (in-process cache)"), ("disk", "disk cache")):
        print(f"  check {label:<24} {med[key]:6.2f} s = {med[key] / med['kernel']:4.2f}x the kernel (runs it once)")
    print(f"disk cache entry: {size / 2**20:.0f} MiB")


if __name__ == "__main__":
    cores = os.cpu_count() or 1  # both sides get every core: PyTorch's threads, and minicp's threads over heads
    torch.set_num_threads(cores)
    if threadpool_limits is not None:
        with threadpool_limits(limits=cores):
            main()
    else:
        main()
