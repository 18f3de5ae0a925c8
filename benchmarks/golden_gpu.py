"""Cost of a check on a GPU against the kernel's own forward + backward: ECP and causal, bfloat16, 8 heads, d 64.

    python benchmarks/golden_gpu.py [--sizes 16384 65536] [--repeats 3] [--suite 200] [--flex]

For each case the kernel (ECP: two SDPA calls on the flash backend, the lower-right causal mask for the
pairs of half segments; with --flex also compiled FlexAttention; causal: SDPA flash, ``is_causal``) runs
forward + backward (medians of ``--repeats``, synchronised); then ``assert_matches_reference(...,
device="cuda")`` is timed cold (a seed not checked before: inputs drawn on the GPU, the kernel run once,
float64 reference, floors, twins, judging) and warm (the same case again: the in-process cache). A first,
untimed check of another seed builds CuPy's kernels. ``--suite N``: N distinct cases (seeds) of ECP at
n = 16384, each checked once, timed in all. Results: benchmarks/results/golden-gpu-*.txt.
"""

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

import minicp.testing as mt
from minicp.testing import torch as mtt

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "testing"))
import gpu_kernels as G  # noqa: E402

HEADS, HEAD_DIM, M = 8, 64, 128


def _sync_time(f):
    torch.cuda.synchronize()
    t = time.perf_counter()
    f()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def kernel_time(fn, n, repeats):
    """Median seconds of the kernel's forward + backward on bfloat16 inputs of the case's shape."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v, dout = (
        torch.randn(1, HEADS, n, HEAD_DIM, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(4)
    )
    grads = mtt.grad_fn(fn, with_out=True)
    for _ in range(2):  # warm-up (and compilation)
        grads(q, k, v, dout)
    return statistics.median(_sync_time(lambda: grads(q, k, v, dout)) for _ in range(repeats))


def check(fn, arch, n, seed, pa):
    return mt.assert_matches_reference(
        fn, arch, seq_len=n, heads=HEADS, head_dim=HEAD_DIM, dtype="bfloat16", seed=seed, check_grads=True,
        inconclusive="ignore", **mtt.adapters(fn, "bfloat16", "cuda"), **pa,
    )  # fmt: skip


def measure(label, fn, arch, n, repeats, pa, say, first=True):
    kernel = kernel_time(fn, n, max(5, repeats))
    first_check = _sync_time(lambda: check(fn, arch, n, 10_000, pa)) if first else float("nan")
    # the first check of a shape also builds its block plan (and, first in the process, CuPy's kernels)
    cold, warm = [], []
    for seed in range(repeats):
        cold.append(_sync_time(lambda: check(fn, arch, n, seed, pa)))
        warm.append(_sync_time(lambda: check(fn, arch, n, seed, pa)))
    c, w = statistics.median(cold), statistics.median(warm)
    say(
        f"{label:<34} n={n:<6} kernel f+b {1e3 * kernel:8.2f} ms   check cold {1e3 * c:9.1f} ms = {c / kernel:6.1f}x   "
        f"warm {1e3 * w:8.1f} ms = {w / kernel:5.1f}x   (cold {', '.join(f'{1e3 * x:.0f}' for x in cold)} ms; "
        f"first check of the shape {1e3 * first_check:.0f} ms)"
    )
    mt.clear_cache()
    return kernel, c, w


def suite(fn, arch, n, count, pa, say, limit):
    """``count`` distinct cases (seeds) checked once each; stops after ``limit`` seconds."""
    mt.clear_cache()
    start, done = time.perf_counter(), 0
    for seed in range(1000, 1000 + count):
        check(fn, arch, n, seed, pa)
        done += 1
        if time.perf_counter() - start > limit:
            break
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    say(f"suite {arch} n={n}: {done} distinct cases in {total:.1f} s ({total / max(done, 1):.3f} s each)")
    mt.clear_cache()


def stages(arch, n, pa, say):
    """Seconds of each stage of a cold check's reference side, synchronised, on the GPU."""
    from minicp.testing import reference, rowstats, twins
    from minicp.testing.blockwise import block_plan
    from minicp.testing.device import device_module
    from minicp.testing.patterns import resolved_pattern_args

    cp = device_module("cuda:0")
    pa = resolved_pattern_args(arch, n, HEADS, pa)
    t = {}

    def timed(name, f):
        cp.cuda.Device().synchronize()
        start = time.perf_counter()
        out = f()
        cp.cuda.Device().synchronize()
        t[name] = t.get(name, 0.0) + time.perf_counter() - start
        return out

    plan, rows = timed("plan", lambda: block_plan(arch, n, HEADS, pa))
    x = timed("draw", lambda: reference.seeded_inputs(5, 1, HEADS, n, HEAD_DIM, len(rows), "bfloat16", 3, cp))
    res = {}
    for label, dt, kind in (
        ("", "float64", "plain"),
        ("floor_", "bfloat16", "plain"),
        ("accurate_", "bfloat16", "production"),
    ):
        res.update(
            timed(
                f"pass {kind} {dt}",
                lambda: reference._one_pass(x["q"], x["k"], x["v"], x["dout"], plan, rows, None, label, dt, kind, 1),
            )
        )
    for key in ("out", "dq", "dk", "dv"):
        timed("floor stats", lambda: rowstats.floor_stats(res[key], res["floor_" + key], res["accurate_" + key]))
    timed("twins", lambda: twins.twin_stats(x["q"], x["k"], x["v"], plan, "bfloat16"))
    for key in ("out", "dq", "dk", "dv"):
        timed("kernel's row stats", lambda: rowstats.error_stats(res["floor_" + key], res[key], parallel=key == "out"))
    say(f"stages {arch} n={n}: " + ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in t.items()))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16384, 65536])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--suite", type=int, default=200)
    p.add_argument("--suite-limit", type=float, default=150.0, help="seconds at most for each suite")
    p.add_argument("--flex", action="store_true", help="also time compiled FlexAttention for ECP")
    p.add_argument("--causal-suite", action="store_true", help="also run the suite on causal attention")
    p.add_argument("--stages", action="store_true", help="first time the stages of a cold check at n = 16384")
    p.add_argument("--causal-max", type=int, default=65536, help="the largest n of causal attention to time")
    args = p.parse_args()
    say = lambda text: print(text, flush=True)
    say(
        f"# {torch.cuda.get_device_name()}, torch {torch.__version__}; bfloat16, {HEADS} heads, d {HEAD_DIM}, ECP m={M}"
    )
    ecp = {"half_segment": M}
    if args.stages:
        for arch, pa in (("ecp", ecp), ("transformer", {})):
            stages(arch, 16384, pa, say)  # the first builds CuPy's kernels
            stages(arch, 16384, pa, say)
    for n in args.sizes:
        measure("ecp sdpa flash (two calls)", G.ecp_sdpa(M, "flash"), "ecp", n, args.repeats, ecp, say)
        if args.flex:
            measure("ecp flex compiled", G.flex("ecp", n, HEADS, ecp), "ecp", n, args.repeats, ecp, say)
        if n <= args.causal_max:
            measure("causal sdpa flash", G.causal_sdpa("flash"), "transformer", n, args.repeats, {}, say)
    if args.suite:
        suite(G.ecp_sdpa(M, "flash"), "ecp", 16384, args.suite, ecp, say, args.suite_limit)
        if args.causal_suite:
            suite(G.causal_sdpa("flash"), "transformer", 16384, args.suite, {}, say, args.suite_limit)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    main()
