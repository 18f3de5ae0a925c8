"""Forward time and peak memory of every architecture's attention sub-layer, on either engine and device.

    python benchmarks/attention.py [--sizes 1024 2048 4096 8192] [--repeat 3] [--engine fast|reference]
    python benchmarks/attention.py --device cuda --sizes 4096 8192 16384 32768    # CuPy against torch on CUDA

Setting: batch 1, D = 512, 8 heads, float32, ECP segment 512 (half segment 256),
latent L = n/2, Compressed p = n/4, s-Split c = 256, LongLoRA g = n/4. Each layer is the official
sub-layer (projections, RoPE, kv LayerNorm where used, attention, output projections).

Printed per architecture and n: best-of-repeat forward time, its ratio to full attention, the
attention-step ratio (computed score entries / n^2), the same two for the attention core alone
(head level, q/k/v given: the part the step count describes), peak NumPy memory (tracemalloc; CPU only),
and, when torch is installed, the time of the PyTorch twin's layer (minicp/torch_twin/) with the same weights
and the ratio minicp / torch (< 1 means minicp is faster). ``--engine``: the sub-layer and core of the fast
engine (``minicp.fast``: ECP's sub-layer primitive, the reference's code for the other architectures) or of
the readable reference (``minicp.nn``). On the GPU each timed call ends with a device synchronisation and both
sides run full FP32 matmuls (TF32 off).
"""

import argparse
import os
import time
import tracemalloc

import numpy as np

from minicp import backend as B
from minicp.config import sized_config
from minicp.fast import ecp as fast_ecp
from minicp.fast import model as fast_model
from minicp.nn.attention import module, patterns
from minicp.nn.model import flatten, unflatten

try:
    import torch

    from minicp import torch_twin
except ImportError:
    torch = None

ARCHS = ["transformer", "perceiver_ar", "double", "compressed", "s_split", "ecp", "longlora"]


def config(arch, n):
    """minicp's per-architecture sizes (``sized_config``) with the fixed widths of this benchmark: s-Split
    history segments of 256 and an ECP segment of 512 at every n, so their cost grows linearly."""
    fixed = {"s_split": dict(split=256), "ecp": dict(segment=512)}.get(arch, {})
    return sized_config(arch, n, vocab=256, dim=512, heads=8, layers=1, **fixed)


def synchronise():
    if B.name == "cupy":
        B.raw.cuda.Device().synchronize()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def best_time(fn, repeat):
    times = []
    for _ in range(repeat):
        synchronise()
        t0 = time.perf_counter()
        fn()
        synchronise()
        times.append(time.perf_counter() - t0)
    return min(times)


def layer_and_core(engine, cfg):
    """(sub-layer function, head-level core function) of ``engine`` for ``cfg``."""
    mod = module(cfg.arch)
    if engine == "reference":
        return mod.attention_layer, lambda q, k, v: mod.attention(q, k, v, **mod.pattern_kwargs(cfg, 0))

    def core(q, k, v):
        if cfg.arch == "ecp" and fast_ecp.applies(q, k, cfg.half_segment):
            return fast_ecp.core(q * cfg.head_dim**-0.5, k, cfg.half_segment)  # K = V, as the sub-layer
        return mod.attention(q, k, v, **mod.pattern_kwargs(cfg, 0))

    return fast_model.attention_layer, core


def layer_params(cfg, rng):
    """Random weights for one attention sub-layer (or the twin's, so both run the same layer)."""
    if torch is not None and cfg.arch != "longlora":
        twin = torch_twin.build_attention_layer(
            cfg.arch,
            dim=cfg.dim,
            heads=cfg.heads,
            seq_len=cfg.seq_len,
            dtype=torch.float32,
            latent=cfg.latent if cfg.arch not in ("ecp", "transformer") else None,
            compressed=cfg.compressed,
            split=cfg.split,
            half_segment=cfg.half_segment if cfg.arch == "ecp" else None,
        )
        state = {k: v.numpy() for k, v in twin.state_dict().items() if not k.endswith("freqs")}
        return unflatten(state), twin
    spec = module(cfg.arch).param_spec(cfg, 0)
    flat = {}
    for name, entry in spec.items():
        if entry[0] == "linear":
            flat[f"{name}.weight"] = (rng.standard_normal(entry[1:3]) / np.sqrt(entry[2])).astype(np.float32)
            if entry[3]:
                flat[f"{name}.bias"] = np.zeros(entry[1], np.float32)
        else:
            flat[f"{name}.weight"] = np.ones(entry[1], np.float32)
            flat[f"{name}.bias"] = np.zeros(entry[1], np.float32)
    return unflatten(flat), None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--archs", nargs="+", default=ARCHS)
    ap.add_argument("--engine", choices=("fast", "reference"), default="fast")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    cuda = args.device == "cuda"
    if cuda:
        B.use_backend("cupy", autograd_on_gpu=False)
        if torch is not None:
            torch.backends.cuda.matmul.allow_tf32 = False
    elif torch is not None:
        torch.set_num_threads(os.cpu_count())
    print(
        f"attention sub-layer forward, batch 1, D 512, 8 heads, float32, {args.engine} engine on {args.device}; "
        f"torch {f'{torch.__version__}' if torch else 'not installed'}"
    )
    head = (
        f"{'n':>6} {'arch':<13}{'ms':>9}{'time/full':>10}{'steps/full':>11}{'core ms':>9}{'core/full':>10}"
        f"{'peak MiB':>10}{'torch ms':>10}{'minicp/torch':>13}"
    )
    print(head + "\n" + "-" * len(head))
    results = []
    for n in args.sizes:
        full_ms = full_core_ms = None
        for arch in args.archs:
            cfg = config(arch, n)
            mod = module(arch)
            layer_fn, core_fn = layer_and_core(args.engine, cfg)
            params, twin = layer_params(cfg, rng)
            host_x = rng.standard_normal((1, n, cfg.dim)).astype(np.float32)
            x = B.asarray(host_x)
            dev_params = unflatten({k: B.asarray(v) for k, v in flatten(params).items()})
            run = lambda: layer_fn(dev_params, x, cfg, 0)
            run()  # warm-up
            ms = 1e3 * best_time(run, args.repeat)
            peak = float("nan")
            if not cuda:
                tracemalloc.start()
                run()
                peak = tracemalloc.get_traced_memory()[1] / 2**20
                tracemalloc.stop()
            # the attention core alone (head level, q/k/v given): what the step count measures
            q, k, v = (
                B.asarray(rng.standard_normal((1, cfg.heads, n, cfg.head_dim)).astype(np.float32)) for _ in range(3)
            )
            core = lambda: core_fn(q, k, v)
            core()
            core_ms = 1e3 * best_time(core, args.repeat)
            steps = sum(p.computed() for p in patterns(arch, n, cfg.heads, **mod.pattern_kwargs(cfg, 0))) / cfg.heads
            if arch == "transformer":
                full_ms, full_core_ms = ms, core_ms
            torch_ms = ratio = float("nan")
            if twin is not None:
                if cuda:
                    twin = twin.cuda()
                xt = torch.from_numpy(host_x).to("cuda" if cuda else "cpu")
                with torch.no_grad():
                    np.testing.assert_allclose(
                        twin(xt).cpu().numpy(), B.to_numpy(run()), rtol=2e-3, atol=2e-3
                    )  # same layer
                    torch_ms = 1e3 * best_time(lambda: twin(xt), args.repeat)
                ratio = ms / torch_ms
            row = dict(
                n=n,
                arch=arch,
                ms=ms,
                time_ratio=ms / full_ms if full_ms else float("nan"),
                core_ms=core_ms,
                core_ratio=core_ms / full_core_ms if full_ms else float("nan"),
                step_ratio=steps / n**2,
                peak_mib=peak,
                torch_ms=torch_ms,
                minicp_over_torch=ratio,
            )
            results.append(row)
            print(
                f"{n:>6} {arch:<13}{ms:>9.1f}{row['time_ratio']:>10.3f}{row['step_ratio']:>11.3f}"
                f"{core_ms:>9.1f}{row['core_ratio']:>10.3f}{peak:>10.1f}"
                f"{torch_ms:>10.1f}{ratio:>13.2f}",
                flush=True,
            )
    ecp = [r for r in results if r["arch"] == "ecp"]
    if ecp:
        last = ecp[-1]
        print(
            f"\nECP at n={last['n']}: time ratio {last['time_ratio']:.3f} vs step ratio {last['step_ratio']:.3f}"
            f" -> {last['time_ratio'] / last['step_ratio']:.2f}x (target <= 1.5x); attention core alone:"
            f" {last['core_ratio']:.3f} -> {last['core_ratio'] / last['step_ratio']:.2f}x"
        )
        if len(ecp) > 1:
            growth = [b["peak_mib"] / a["peak_mib"] for a, b in zip(ecp, ecp[1:])]
            print(
                "ECP peak memory growth per doubling of n: " + ", ".join(f"{g:.2f}x" for g in growth) + " (linear = 2x)"
            )
    return results


if __name__ == "__main__":
    main()
