"""The tiny preset trained on the GPU (CuPy, float32) and on the CPU (NumPy, float32) from the same weights and
data: the two loss curves side by side, step by step, and their largest relative difference.

    python benchmarks/gpu_train.py [--steps 30] [--preset tiny-ecp] [--out F]

Both runs call ``minicp.train`` with the same ``TrainConfig`` (batch 2, one micro-batch, the official AdamW,
clipping and learning rate). The GPU run is ``use_backend("cupy")``, whose default traces CuPy arrays with
autograd. float32 rounding differs between the two (cuBLAS and the CPU BLAS sum in different orders, the GPU
uses fused multiply-adds), so the curves agree to float32 rounding at first and drift apart slowly, as two
float32 runs on different hardware do. The time per step is printed too (it includes copying the parameters
to the device and the gradients back each step, which ``minicp.train`` does so that its optimiser and
checkpoints stay on the host).
"""

import argparse
import sys
import time

import numpy as np

from minicp import ModelConfig
from minicp import backend as B
from minicp.files import atomic_write_text
from minicp.lm import train as T


def curve(which, cfg, data, tcfg):
    with B.backend(which):
        t0 = time.perf_counter()
        result = T.train(cfg, data, tcfg, progress=False)
        seconds = time.perf_counter() - t0
    return [h["loss"] for h in result.history], seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--preset", default="tiny-ecp")
    p.add_argument("--out", default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    cfg = ModelConfig.preset(args.preset)
    data = np.random.default_rng(0).integers(0, cfg.vocab, (64, cfg.seq_len + 1))
    tcfg = T.TrainConfig(steps=args.steps, batch=2, grad_accum=1)
    cpu, t_cpu = curve("numpy", cfg, data, tcfg)
    gpu, t_gpu = curve("cupy", cfg, data, tcfg)
    rel = [abs(g - c) / abs(c) for g, c in zip(gpu, cpu)]
    lines = [f"{args.preset}: {cfg}", f"TrainConfig: {tcfg}", "step  cpu loss    gpu loss    relative difference"]
    lines += [f"{i + 1:4d}  {c:.7f}  {g:.7f}  {r:.1e}" for i, (c, g, r) in enumerate(zip(cpu, gpu, rel))]
    lines.append(
        f"largest relative difference, first 5 steps: {max(rel[:5]):.1e}; all {len(rel)} steps: {max(rel):.1e}"
    )
    lines.append(f"time per step: CPU {t_cpu / args.steps * 1e3:.1f} ms, GPU {t_gpu / args.steps * 1e3:.1f} ms")
    text = "\n".join(lines)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
