"""minicp against a PyTorch model of the same architecture with the same weights, in one process.

    python benchmarks/compare.py --threads 2                 # CPU: inference, forward+backward, training step
    python benchmarks/compare.py --device cuda               # GPU (CuPy backend vs PyTorch on CUDA)
    python benchmarks/compare.py --only train --repeat 5     # one workload
    python benchmarks/compare.py --engine reference          # minicp's readable reference (default: fast)

"PyTorch" is ``minicp.torch_twin`` (the project's twin of the official modules), eager mode; minicp gets the
twin's weights through ``load_official_state_dict``. Both sides run float32; on the GPU both use full FP32
matmuls (TF32 off: CuPy's default, and ``torch.backends.cuda.matmul.allow_tf32 = False``). The two sides
alternate, one call each per repetition, after ``--warmup`` untimed calls each; the medians and the ratio
minicp / PyTorch are printed (below 1: minicp is faster). Before every timed call the process sleeps
``--gap`` seconds: after a multi-threaded product, OpenBLAS's worker threads keep spinning on their cores
for a while (and OpenMP's do after PyTorch's parallel regions), so whichever side ran second lost a core to
the first side's idle threads. Measured on 2 cores: PyTorch's forward + backward took a median 195.4 ms
alone and 248.8 ms right after one 2-thread NumPy product. Records made before ``--gap`` existed
(``compare-cpu.json``, ``compare-cpu-xeon.json``) timed PyTorch in that disturbed state. On the GPU each call ends with a device
synchronisation before the clock stops, and the peak memory of one training step is read (CuPy: bytes its
memory pool holds, from an emptied pool; PyTorch: ``max_memory_reserved``, and ``max_memory_allocated``).

Workloads (defaults follow the measurements they are compared with):
    infer   forward of the whole model to the logits        CPU: D 512, h 8, 2 layers, n 8192, m 256, batch 1
                                                             GPU: D 512, h 8, 1 layer, n 32768, m 256, batch 1
    fwdbwd  forward + backward of the loss                  CPU: D 128, h 4, 4 layers, n 512, m 64, batch 8
    train   fwdbwd + gradient clipping + AdamW              CPU: as fwdbwd;  GPU: D 512, h 8, 4 layers, n 8192,
                                                                 m 256, batch 1
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

from machine import cpu_name

WORKLOADS = {
    "cpu": {
        "infer": dict(dim=512, heads=8, layers=2, seq_len=8192, half_segment=256, batch=1),
        "fwdbwd": dict(dim=128, heads=4, layers=4, seq_len=512, half_segment=64, batch=8),
        "train": dict(dim=128, heads=4, layers=4, seq_len=512, half_segment=64, batch=8),
    },
    "cuda": {
        "infer": dict(dim=512, heads=8, layers=1, seq_len=32768, half_segment=256, batch=1),
        "fwdbwd": dict(dim=512, heads=8, layers=4, seq_len=8192, half_segment=256, batch=1),
        "train": dict(dim=512, heads=8, layers=4, seq_len=8192, half_segment=256, batch=1),
    },
}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--only", choices=["infer", "fwdbwd", "train"], nargs="*", default=None)
    p.add_argument("--repeat", type=int, default=7, help="timed calls per side (alternating)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="pin NumPy/BLAS, minicp and torch threads")
    p.add_argument("--gap", type=float, default=0.25, help="seconds of sleep before each timed call (see above)")
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument(
        "--engine", choices=("fast", "reference"), default="fast", help="minicp's engine (see minicp.engines)"
    )
    p.add_argument("--out-json", default=None)
    return p.parse_args(argv)


def pin_threads(count):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MINICP_THREADS"):
        os.environ[var] = str(count)


class Side:
    """One workload on one side: ``call()`` runs it once; ``sync()`` waits for the device."""

    def __init__(self, call, sync):
        self.call, self.sync = call, sync

    def timed(self, gap=0.0):
        if gap:
            time.sleep(gap)  # the other side's idle worker threads stop spinning
        t0 = time.perf_counter()
        self.call()
        self.sync()
        return time.perf_counter() - t0


def build_pair(kind, shape, vocab, device, engine="fast"):
    """(minicp Side, torch Side, cfg) for one workload, same weights and tokens on both sides."""
    import numpy as np
    import torch

    from minicp import ModelConfig, engines, load_official_state_dict
    from minicp import backend as B
    from minicp.lm.optim import adamw_init, adamw_step, clip_grad_norm, decays
    from minicp.nn import model as M
    from minicp.torch_twin import build, wrapper_loss

    batch = shape["batch"]
    kw = {k: shape[k] for k in ("dim", "heads", "layers", "seq_len", "half_segment")}
    cfg = ModelConfig(arch="ecp", vocab=vocab, **kw)
    twin = build("ecp", vocab=vocab, dtype=torch.float32, **kw).to(device)
    state = {k: v.detach().cpu().numpy() for k, v in twin.state_dict().items()}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = load_official_state_dict(state, cfg, dtype="float32")
    params = M.unflatten({k: B.asarray(v) for k, v in M.flatten(params).items()})
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, (batch, cfg.seq_len + 1))
    ttokens = torch.as_tensor(tokens, device=device)
    sync_t = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync_m = (lambda: B.raw.cuda.Device().synchronize()) if B.name == "cupy" else (lambda: None)

    model = engines.module(engine)  # minicp.fast.model or minicp.nn.model
    vg = model.value_and_grad
    if kind == "infer":
        twin.eval()

        def m_call():
            return model.forward(params, tokens[:, :-1], cfg)

        def t_call():
            with torch.no_grad():
                return twin(ttokens[:, :-1])

        return Side(m_call, sync_m), Side(t_call, sync_t), cfg
    if kind == "fwdbwd":

        def m_call():
            return vg(params, tokens, cfg)

        def t_call():
            twin.zero_grad(set_to_none=True)
            wrapper_loss(twin, ttokens, cfg.latent).backward()

        return Side(m_call, sync_m), Side(t_call, sync_t), cfg
    flat = M.flatten(params)
    opt = adamw_init(flat)
    named = dict(twin.named_parameters())
    groups = [
        {"params": [p for k, p in named.items() if decays(k, tuple(p.shape))], "weight_decay": 0.1},
        {"params": [p for k, p in named.items() if not decays(k, tuple(p.shape))], "weight_decay": 0.0},
    ]
    topt = torch.optim.AdamW(groups, lr=2e-4, betas=(0.9, 0.95), foreach=False)

    def m_step():
        _, grads = vg(M.unflatten(flat), tokens, cfg)
        grads = M.flatten(grads)
        clip_grad_norm(grads, 1.0, engine=engine)
        adamw_step(flat, grads, opt, lr=2e-4, engine=engine)

    def t_step():
        wrapper_loss(twin, ttokens, cfg.latent).backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0, foreach=False)
        topt.step()
        topt.zero_grad(set_to_none=True)

    return Side(m_step, sync_m), Side(t_step, sync_t), cfg


def peak_memory(mside, tside):
    """(CuPy pool bytes, torch reserved, torch allocated) of one call each, from emptied pools."""
    import cupy
    import torch

    pool = cupy.get_default_memory_pool()
    mside.sync()
    pool.free_all_blocks()
    base = pool.used_bytes()
    mside.call()
    mside.sync()
    cupy_bytes = pool.total_bytes() - base
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base_t = torch.cuda.memory_allocated()
    tside.call()
    tside.sync()
    return cupy_bytes, torch.cuda.max_memory_reserved() - base_t, torch.cuda.max_memory_allocated() - base_t


def machine(device):
    import numpy as np
    import torch

    from minicp.fast import threads

    info = {
        "python": platform.python_version(),
        "cpus_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "minicp_threads": threads.threads,
        "env_threads": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }
    info["cpu"] = cpu_name()
    info["load_average"] = os.getloadavg()
    if device == "cuda":
        import cupy

        info["gpu"] = torch.cuda.get_device_name()
        info["cupy"] = cupy.__version__
        info["tf32"] = {"torch": torch.backends.cuda.matmul.allow_tf32, "cupy": os.environ.get("CUPY_TF32", "0")}
    return info


def run(args):
    if args.threads:
        pin_threads(args.threads)
    import torch

    from minicp import backend as B

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        B.use_backend("cupy", autograd_on_gpu=True)  # grad(loss) on the device for fwdbwd and train
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    report = {"device": args.device, "engine": args.engine, "machine": machine(args.device), "results": {}}
    print(json.dumps(report["machine"]))
    for kind in args.only or ["infer", "fwdbwd", "train"]:
        shape = WORKLOADS[args.device][kind]
        mside, tside, cfg = build_pair(kind, shape, args.vocab, args.device, args.engine)
        for _ in range(args.warmup):
            mside.timed(), tside.timed()
        times = {"minicp": [], "torch": []}
        for _ in range(args.repeat):  # alternate the two sides
            times["minicp"].append(mside.timed(args.gap))
            times["torch"].append(tside.timed(args.gap))
        med = {k: statistics.median(v) for k, v in times.items()}
        row = dict(shape=shape, gap_s=args.gap, median_s=med, ratio=med["minicp"] / med["torch"], times_s=times)
        row["tokens_per_s"] = {k: shape["batch"] * shape["seq_len"] / v for k, v in med.items()}
        if args.device == "cuda" and kind == "train":
            cp_bytes, t_reserved, t_alloc = peak_memory(mside, tside)
            row["peak_bytes"] = dict(cupy_pool=cp_bytes, torch_reserved=t_reserved, torch_allocated=t_alloc)
            row["memory_ratio"] = cp_bytes / t_reserved
        report["results"][kind] = row
        print(
            f"{args.device} {args.engine} {kind:7s} {shape}: minicp {med['minicp'] * 1e3:9.1f} ms  torch {med['torch'] * 1e3:9.1f} ms"
            f"  ratio {row['ratio']:.2f}"
            + (f"  memory ratio {row['memory_ratio']:.2f}" if "memory_ratio" in row else ""),
            flush=True,
        )
        del mside, tside
    return report


def main(argv=None):
    args = parse(argv)
    report = run(args)
    if args.out_json:
        from minicp.files import atomic_write_text  # here: minicp is imported after the threads are pinned

        atomic_write_text(args.out_json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
