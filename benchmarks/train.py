"""Training throughput of minicp (NumPy + autograd) against a PyTorch implementation of the same model.

    python benchmarks/train.py                 # tiny-ecp: D 128, 4 layers, 4 heads, n 512, m 64, V 256, batch 8
    python benchmarks/train.py --profile       # plus a cProfile of one minicp step (top 25 by own time)
    python benchmarks/train.py --no-torch --steps 3

Both sides do complete optimiser steps on the same shapes in float32: forward, backward, gradient
clipping and an AdamW update with the official parameter groups. minicp's step is ``minicp.lm.train.train``
itself (timed per step through its callback); the PyTorch side is ``minicp.torch_twin`` (an independent
re-implementation of the official modules, eval semantics, no dropout) with ``torch.optim.AdamW``.
Tokens per second = batch * grad_accum * n / (median seconds per step after ``--warmup`` steps). Both
libraries use their default thread counts (printed); pass ``--threads`` to pin both.
"""

import argparse
import os
import platform
import statistics
import time


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ecp")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--half-segment", type=int, default=64)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--grad-accum", type=int, default=1, help="micro-batches per step (official: 2; tokens/s barely changes)"
    )
    p.add_argument("--steps", type=int, default=6, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--threads", type=int, default=None, help="pin BLAS / torch threads (set before NumPy loads)")
    p.add_argument("--profile", action="store_true", help="cProfile one minicp step")
    p.add_argument("--no-torch", action="store_true")
    return p.parse_args(argv)


def bench_minicp(cfg, args):
    import numpy as np

    from minicp.lm import train as T

    rng = np.random.default_rng(0)
    data = rng.integers(0, cfg.vocab, size=(64, cfg.seq_len + 1))
    stamps = []
    tc = T.TrainConfig(steps=args.warmup + args.steps, batch=args.batch, grad_accum=args.grad_accum)
    stamps.append(time.perf_counter())
    T.train(cfg, data, tc, progress=False, callback=lambda step, info, p: stamps.append(time.perf_counter()))
    per_step = [b - a for a, b in zip(stamps[:-1], stamps[1:])][args.warmup :]
    if args.profile:
        import cProfile
        import pstats

        from minicp import init_params

        params = init_params(cfg, seed=0)
        micro = [data[: args.batch]] * args.grad_accum
        T.accumulated_loss_and_grad(params, micro, cfg)
        prof = cProfile.Profile()
        prof.enable()
        T.accumulated_loss_and_grad(params, micro, cfg)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return statistics.median(per_step)


def bench_torch(cfg, args):
    import torch

    from minicp.lm import train as T
    from minicp.torch_twin import build, wrapper_loss

    model = build(
        cfg.arch,
        vocab=cfg.vocab,
        dim=cfg.dim,
        heads=cfg.heads,
        layers=cfg.layers,
        seq_len=cfg.seq_len,
        half_segment=cfg.half_segment if cfg.arch == "ecp" else None,
        dtype=torch.float32,
    )
    model.train()
    named = dict(model.named_parameters())
    groups = [
        {"params": [p for k, p in named.items() if T.decays(k, tuple(p.shape))], "weight_decay": 0.1},
        {"params": [p for k, p in named.items() if not T.decays(k, tuple(p.shape))], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=2e-4, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.vocab, (64, cfg.seq_len + 1), generator=gen)
    per_step = []
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        for j in range(args.grad_accum):
            rows = data[(step * args.grad_accum + j) * args.batch % 64 :][: args.batch]
            wrapper_loss(model, rows, cfg.latent).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        per_step.append(time.perf_counter() - t0)
    return statistics.median(per_step[args.warmup :]), torch.get_num_threads(), torch.__version__


def main(argv=None):
    args = parse(argv)
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    import numpy as np

    from minicp import ModelConfig, count_params

    kw = dict(half_segment=args.half_segment) if args.arch == "ecp" else {}
    cfg = ModelConfig(
        arch=args.arch, vocab=args.vocab, dim=args.dim, heads=args.heads, layers=args.layers, seq_len=args.seq_len, **kw
    )
    tokens = args.batch * args.grad_accum * cfg.seq_len
    print(
        f"model: {cfg.arch} D={cfg.dim} layers={cfg.layers} heads={cfg.heads} n={cfg.seq_len} "
        f"m={cfg.half_segment} V={cfg.vocab}, {count_params(cfg):,} parameters; batch {args.batch} x "
        f"{args.grad_accum} micro-batches = {tokens} tokens/step, float32"
    )
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; numpy {np.__version__}; "
        f"threads: {args.threads or 'library defaults'}"
    )
    sec = bench_minicp(cfg, args)
    print(f"minicp : {sec * 1000:8.1f} ms/step  {tokens / sec:9.0f} tokens/s  (median of {args.steps} steps)")
    if args.no_torch:
        return
    try:
        import torch
    except ImportError:
        print("torch  : not installed, no ratio")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    tsec, threads, version = bench_torch(cfg, args)
    print(f"torch  : {tsec * 1000:8.1f} ms/step  {tokens / tsec:9.0f} tokens/s  (torch {version}, {threads} threads)")
    print(f"ratio  : minicp / torch = {tsec / sec:.2f}")


if __name__ == "__main__":
    main()
