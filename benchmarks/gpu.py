"""GPU forward time of every architecture's attention sub-layer: minicp on CuPy vs the PyTorch twin.

    python benchmarks/gpu.py [--sizes 4096 8192 16384 32768 65536] [--dim 1024] [--out-json F] [--out-md F]

Setting: batch 1, D = 1024 (--dim), 8 heads (head dim 128), float32, ECP segment 512 (half
segment m = 256), latent L = n/2, Compressed p = n/4, s-Split c = 256, LongLoRA g = n/4. Each layer is
the official sub-layer (projections, RoPE, kv LayerNorm where used, attention, output projections),
layer 0. The PyTorch layer is ``minicp.torch_twin`` (an independent implementation of the same official
layer, plain ``masked_fill`` + ``softmax``, eval mode, ``torch.no_grad``) with the same weights on the
same GPU; LongLoRA has no twin. Both sides use full-FP32 matmuls (no TF32: CuPy's default without
CUPY_TF32=1, PyTorch's default float32_matmul_precision "highest"); the settings are recorded.

Timing: CUDA events around one forward (``cupy.cuda.Event`` / ``torch.cuda.Event``), after warm-up
(CuPy compiles its kernels on first use), median of up to --repeat runs (fewer for long runs). Host
constants (masks, RoPE tables) are cached on the device after the first call, as in any repeated use.
Sizes whose largest score tensor would not fit on the GPU are reported as skipped: minicp holds one
float32 score tensor per attend call (h * rows * keys * 4 bytes), the twin about two.

ECP FLOPs (matmuls only, masked entries included because they are computed):
    projections 2nD^2 (to_q) + 2nD^2 (to_kv, K = V) + 2nD^2 (to_out_0 on m rows, to_out on n - m)
    attention   4 D m (2n - m): per head m^2 + (n/m - 1) 2m^2 score entries, 2d flops each for
                q k^T and for P v
    total       6 n D^2 + 4 D m (2n - m)

``--dry-run`` runs the same code on the CPU (NumPy backend, PyTorch on CPU, small sizes) to check it.
"""

import argparse
import json
import os
import platform
import subprocess
import time
import traceback

import numpy as np

from minicp import ModelConfig
from minicp import backend as B
from minicp.files import atomic_write_text
from minicp.nn import ops
from minicp.nn.attention import module
from minicp.nn.model import unflatten

ARCHS = ["transformer", "perceiver_ar", "double", "compressed", "s_split", "ecp", "longlora"]
MEMORY_LIMIT = 125e9  # bytes we let one side's score tensors take on a 141 GB H200


def config(arch, n, dim, heads):
    extra = {
        "perceiver_ar": dict(latent=n // 2),
        "double": dict(latent=n // 2),
        "compressed": dict(latent=n // 2, compressed=n // 4),
        "s_split": dict(latent=n // 2, split=256),
        "ecp": dict(segment=512),
        "longlora": dict(group=n // 4),
        "transformer": {},
    }[arch]
    return ModelConfig(arch=arch, vocab=256, dim=dim, heads=heads, layers=1, seq_len=n, **extra)


def score_bytes(cfg):
    """float32 bytes of the largest score tensor one attend() call of layer 0 materialises."""
    n, h, L, H = cfg.seq_len, cfg.heads, cfg.latent, cfg.history
    entries = {
        "transformer": n * n,
        "perceiver_ar": L * n,
        "double": max(H * H, L * n),
        "compressed": max(H * H, L * n),
        "s_split": max(H * (cfg.split or 1), L * n),
        "ecp": 2 * n * (cfg.half_segment or 1),
        "longlora": n * (cfg.group or 1) // 2,
    }[cfg.arch]
    return 4 * h * entries


def ecp_flops(n, D, m):
    return 6 * n * D * D + 4 * D * m * (2 * n - m)


def transformer_flops(n, D):
    return 6 * n * D * D + 4 * D * n * n


def layer_weights(cfg, seed=0):
    """Host float32 weights of one sub-layer, and the PyTorch twin holding the same ones (or None)."""
    if cfg.arch != "longlora":
        import torch

        from minicp import torch_twin

        twin = torch_twin.build_attention_layer(
            cfg.arch,
            dim=cfg.dim,
            heads=cfg.heads,
            seq_len=cfg.seq_len,
            dtype=torch.float32,
            seed=seed,
            latent=cfg.latent if cfg.arch not in ("ecp", "transformer") else None,
            compressed=cfg.compressed,
            split=cfg.split,
            half_segment=cfg.half_segment if cfg.arch == "ecp" else None,
        )
        flat = {k: v.numpy() for k, v in twin.state_dict().items() if not k.endswith("freqs")}
        return flat, twin
    rng = np.random.default_rng(seed)
    flat = {}
    for name, entry in module(cfg.arch).param_spec(cfg, 0).items():
        if entry[0] == "linear":
            bound = entry[2] ** -0.5
            flat[f"{name}.weight"] = rng.uniform(-bound, bound, entry[1:3]).astype(np.float32)
            if entry[3]:
                flat[f"{name}.bias"] = rng.uniform(-bound, bound, entry[1]).astype(np.float32)
        else:
            flat[f"{name}.weight"] = np.ones(entry[1], np.float32)
            flat[f"{name}.bias"] = np.zeros(entry[1], np.float32)
    return flat, None


# ----------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------


class Clock:
    """Times one call of fn on 'cupy' (CUDA events), 'torch' (CUDA events) or 'cpu' (host clock)."""

    def __init__(self, kind):
        self.kind = kind
        if kind == "cupy":
            import cupy

            self.cupy = cupy
        elif kind == "torch":
            import torch

            self.torch = torch

    def sync(self):
        if self.kind == "cupy":
            self.cupy.cuda.Device().synchronize()
        elif self.kind == "torch":
            self.torch.cuda.synchronize()

    def once(self, fn):
        """(milliseconds, result) of one call."""
        if self.kind == "cpu":
            t0 = time.perf_counter()
            out = fn()
            return 1e3 * (time.perf_counter() - t0), out
        if self.kind == "cupy":
            start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            return self.cupy.cuda.get_elapsed_time(start, end), out
        start, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end), out

    def measure(self, fn, warmup=2, repeat=10, budget_s=3.0):
        """Warm up, then time up to ``repeat`` calls (at least 3, stopping after ~budget_s)."""
        out = None
        for _ in range(warmup):
            out = fn()
        self.sync()
        del out
        times, t_end = [], time.perf_counter() + budget_s
        for i in range(repeat):
            ms, out = self.once(fn)
            del out
            times.append(ms)
            if i >= 2 and time.perf_counter() > t_end:
                break
        return dict(ms=float(np.median(times)), ms_min=float(np.min(times)), runs=len(times))


def free_memory(dry):
    ops.causal_mask.cache_clear()
    ops._rope_tables.cache_clear()
    B.clear_cache()
    if dry:
        return
    import cupy
    import torch

    cupy.get_default_memory_pool().free_all_blocks()
    cupy.get_default_pinned_memory_pool().free_all_blocks()
    torch.cuda.empty_cache()


def is_oom(e):
    return "out of memory" in str(e).lower() or type(e).__name__ in ("OutOfMemoryError",)


# ----------------------------------------------------------------------------------------------------
# Machine, ceilings, profile
# ----------------------------------------------------------------------------------------------------


def machine_info(dry):
    info = dict(host=platform.node(), python=platform.python_version(), numpy=np.__version__)
    import torch

    info["torch"] = torch.__version__
    if dry:
        info["device"] = "CPU (dry run)"
        return info
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    info.update(
        device=props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
        multiprocessors=props["multiProcessorCount"],
        memory_gib=round(props["totalGlobalMem"] / 2**30, 1),
        cupy=cupy.__version__,
        cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
        cuda_driver=cupy.cuda.runtime.driverGetVersion(),
        cupy_tf32=os.environ.get("CUPY_TF32", "unset (off)"),
        torch_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        torch_float32_matmul_precision=torch.get_float32_matmul_precision(),
    )
    try:
        info["nvidia_smi"] = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
    except Exception as e:  # pragma: no cover
        info["nvidia_smi"] = f"unavailable: {e}"
    return info


def ceilings(dry):
    """FP32 matmul rate (8192^3, CuPy and PyTorch) and device copy bandwidth, measured here."""
    if dry:
        return {}
    import cupy
    import torch

    out = {}
    rng = np.random.default_rng(1)
    a_host = rng.standard_normal((8192, 8192), dtype=np.float32)
    a, b = cupy.asarray(a_host), cupy.asarray(a_host.T.copy())
    t = Clock("cupy").measure(lambda: a @ b, warmup=2, repeat=10)
    out["cupy_sgemm_8192_tflops"] = 2 * 8192**3 / (t["ms"] * 1e-3) / 1e12
    at, bt = torch.from_numpy(a_host).cuda(), torch.from_numpy(a_host.T.copy()).cuda()
    t = Clock("torch").measure(lambda: at @ bt, warmup=2, repeat=10)
    out["torch_sgemm_8192_tflops"] = 2 * 8192**3 / (t["ms"] * 1e-3) / 1e12
    del a, b, at, bt
    src = cupy.random.default_rng(1).standard_normal(2**28, dtype=np.float32)  # 1 GiB, random (not zeros)
    dst = cupy.empty_like(src)
    t = Clock("cupy").measure(lambda: dst.__setitem__(Ellipsis, src), warmup=2, repeat=10)
    out["copy_tb_per_s"] = 2 * src.nbytes / (t["ms"] * 1e-3) / 1e12
    del src, dst
    free_memory(False)
    return out


def check_fused_kernels():
    """The fused kernels against the array formulas on small inputs. A kernel that fails is switched
    off for this run (and the failure recorded), so that one device call still measures the rest."""
    status = {}
    rng = np.random.default_rng(3)

    def softmax_check(J):
        s = rng.standard_normal((2, 3, 64, J)).astype(np.float32) * 3
        mask = B.constant(ops.causal_mask(64, J, J - 64))
        fused = B.to_numpy(B.masked_softmax_(B.asarray(s), mask))
        B.fused_kernels = False
        plain = B.to_numpy(B.masked_softmax_(B.asarray(s), mask))
        B.fused_kernels = True
        err = float(np.abs(fused - plain).max())
        if not err < 1e-5:
            raise AssertionError(f"fused softmax (J={J}) differs by {err}")
        return f"max abs diff {err:.1e}"

    for J, kernel in ((128, "softmax float4"), (96, "softmax warp"), (2000, "softmax block")):
        try:
            status[kernel] = "ok, " + softmax_check(J)
        except Exception as e:
            traceback.print_exc()
            B.fused_kernels = True
            status[kernel] = f"FAILED: {type(e).__name__}: {e}"[:300]
    if status["softmax float4"].startswith("FAILED"):
        B._vec4_softmax = False  # the scalar warp kernel takes these rows
    if status["softmax warp"].startswith("FAILED") or status["softmax block"].startswith("FAILED"):
        B._cupy_fused_softmax = lambda s, mask: None
        status["softmax"] = "fused softmax turned off for this run"
    try:
        x = B.xp.swapaxes(B.asarray(rng.standard_normal((1, 40, 4, 16)).astype(np.float32)), 1, 2)
        fused = B.to_numpy(ops.rope(x, np.arange(40)))
        B.fused_kernels = False
        plain = B.to_numpy(ops.rope(x, np.arange(40)))
        B.fused_kernels = True
        if not np.array_equal(fused, plain):
            raise AssertionError(f"fused rope differs by {np.abs(fused - plain).max()}")
        status["rope"] = "ok (bit-identical)"
    except Exception as e:
        traceback.print_exc()
        B.fused_kernels = True
        B.fused_rope = lambda *args: None
        status["rope"] = f"FAILED, turned off: {type(e).__name__}: {e}"[:500]
    return status


def profile_ecp(n, dim, heads, path):
    """Kernel-level profile (torch.profiler sees every CUDA kernel of the process, CuPy's too) of the
    ECP sub-layer at n on both sides, plus event timing of minicp's stages."""
    import cupy
    import torch
    from torch.profiler import ProfilerActivity, profile

    from minicp.nn.attention import common, ecp

    cfg = config("ecp", n, dim, heads)
    flat, twin = layer_weights(cfg)
    p = unflatten({k: B.asarray(v) for k, v in flat.items()})
    x_host = np.random.default_rng(2).standard_normal((1, n, dim)).astype(np.float32)
    x = B.asarray(x_host)
    mod = module("ecp")
    lines = [f"ECP sub-layer, n={n}, D={dim}, h={heads}, m={cfg.half_segment}\n"]
    clock = Clock("cupy")
    stages = {
        "project (to_q, to_kv, RoPE, scale)": lambda: common.project(p, x, cfg, 0),
    }
    q, k, v = common.project(p, x, cfg, 0)
    stages["ECP attention (head level)"] = lambda: ecp.attention(q, k, v, half_segment=cfg.half_segment, scale=1.0)
    o = ops.merge_heads(ecp.attention(q, k, v, half_segment=cfg.half_segment, scale=1.0))
    m = cfg.half_segment
    stages["output projections (to_out_0, to_out, concat)"] = lambda: B.xp.concatenate(
        [ops.linear(o[:, :m], p["to_out_0"]), ops.linear(o[:, m:], p["to_out"])], axis=1
    )
    N = n // m
    Qp = q.reshape(1, heads, N, m, -1)[:, :, 1:]
    Kp = B.xp.concatenate([k.reshape(1, heads, N, m, -1)[:, :, :-1], k.reshape(1, heads, N, m, -1)[:, :, 1:]], axis=3)
    mask = B.constant(ops.causal_mask(m, 2 * m, m))
    stages["  PAR blocks: q k^T"] = lambda: Qp @ B.xp.swapaxes(Kp, -1, -2)
    S = Qp @ B.xp.swapaxes(Kp, -1, -2)
    stages["  PAR blocks: fused masked softmax (in place)"] = lambda: B.masked_softmax_(S, mask)
    stages["  PAR blocks: P v"] = lambda: S @ Kp
    stages["whole sub-layer"] = lambda: mod.attention_layer(p, x, cfg, 0)
    q_heads = ops.split_heads(ops.linear(x, p["to_q"]), heads)  # strided view, as in project
    stages["  RoPE of q (fused kernel)"] = lambda: ops.rope(q_heads, np.arange(n))
    for name, fn in stages.items():
        t = clock.measure(fn, warmup=2, repeat=20)
        lines.append(f"  {name:<50} {t['ms']:8.3f} ms (median of {t['runs']})")
    B.fused_kernels = False
    t = clock.measure(lambda: B.masked_softmax_(S, mask), warmup=2, repeat=20)
    lines.append(f"  {'  PAR blocks: softmax as 6 array ops (fused off)':<50} {t['ms']:8.3f} ms")
    t = clock.measure(lambda: ops.rope(q_heads, np.arange(n)), warmup=2, repeat=20)
    lines.append(f"  {'  RoPE of q as array ops (fused off)':<50} {t['ms']:8.3f} ms")
    t = clock.measure(lambda: mod.attention_layer(p, x, cfg, 0), warmup=2, repeat=20)
    lines.append(f"  {'whole sub-layer, fused kernels off':<50} {t['ms']:8.3f} ms")
    B.fused_kernels = True
    del S, Kp, Qp
    sort = "self_device_time_total"
    for label, fn, sync in (
        ("minicp on CuPy", lambda: mod.attention_layer(p, x, cfg, 0), cupy.cuda.Device().synchronize),
        ("PyTorch twin", None, torch.cuda.synchronize),
    ):
        if fn is None:
            twin = twin.cuda()
            xt = torch.from_numpy(x_host).cuda()
            fn = lambda: twin(xt)
        with torch.no_grad():
            for _ in range(2):
                fn()
            sync()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn()
                sync()
        try:
            table = prof.key_averages().table(sort_by=sort, row_limit=14, max_name_column_width=70)
        except Exception:
            table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=70)
        lines.append(f"\n=== {label}: CUDA kernels over 5 forwards ===\n{table}")
    text = "\n".join(lines)
    atomic_write_text(path, text)
    print(text, flush=True)
    del twin, p, x
    free_memory(False)


# ----------------------------------------------------------------------------------------------------
# Main loop
# ----------------------------------------------------------------------------------------------------


def run_one(arch, n, args, dry):
    import torch

    cfg = config(arch, n, args.dim, args.heads)
    row = dict(
        arch=arch,
        n=n,
        dim=args.dim,
        heads=args.heads,
        segment=cfg.segment if arch == "ecp" else None,
        score_gb=score_bytes(cfg) / 1e9,
    )
    mod = module(arch)
    flat, twin = layer_weights(cfg)
    x_host = np.random.default_rng(n).standard_normal((1, n, args.dim)).astype(np.float32)
    flops = (
        ecp_flops(n, args.dim, cfg.half_segment)
        if arch == "ecp"
        else transformer_flops(n, args.dim)
        if arch == "transformer"
        else None
    )
    row["gflop"] = flops / 1e9 if flops else None
    out_minicp = None
    if score_bytes(cfg) > MEMORY_LIMIT:
        row["minicp"] = f"skipped: score tensor {score_bytes(cfg) / 1e9:.0f} GB does not fit"
    else:
        p = unflatten({k: B.asarray(v) for k, v in flat.items()})
        x = B.asarray(x_host)
        clock = Clock("cpu" if dry else "cupy")
        try:
            out_minicp = B.to_numpy(mod.attention_layer(p, x, cfg, 0))
            row["minicp"] = clock.measure(lambda: mod.attention_layer(p, x, cfg, 0), args.warmup, args.repeat)
            if flops:
                row["minicp"]["tflops"] = flops / (row["minicp"]["ms"] * 1e-3) / 1e12
            if arch in args.unfused_archs:
                B.fused_kernels = False
                try:
                    row["minicp_unfused"] = clock.measure(
                        lambda: mod.attention_layer(p, x, cfg, 0), args.warmup, args.repeat
                    )
                finally:
                    B.fused_kernels = True
        except Exception as e:
            if not is_oom(e):
                raise
            row["minicp"] = f"out of memory ({type(e).__name__})"
        del p, x
        free_memory(dry)
    if twin is None:
        row["torch"] = "no PyTorch twin"
    elif 2 * score_bytes(cfg) > MEMORY_LIMIT:
        row["torch"] = f"skipped: masked_fill + softmax need ~{2 * score_bytes(cfg) / 1e9:.0f} GB"
    else:
        device = "cpu" if dry else "cuda"
        twin = twin.to(device)
        xt = torch.from_numpy(x_host).to(device)
        clock = Clock("cpu" if dry else "torch")
        try:
            with torch.no_grad():
                out_torch = twin(xt).cpu().numpy()
                row["torch"] = clock.measure(lambda: twin(xt), args.warmup, args.repeat)
            if flops:
                row["torch"]["tflops"] = flops / (row["torch"]["ms"] * 1e-3) / 1e12
            if out_minicp is not None:
                row["rel_err_vs_torch"] = float(np.linalg.norm(out_minicp - out_torch) / np.linalg.norm(out_torch))
        except Exception as e:
            if not is_oom(e):
                raise
            row["torch"] = f"out of memory ({type(e).__name__})"
        del twin, xt
        free_memory(dry)
    if isinstance(row.get("minicp"), dict) and isinstance(row.get("torch"), dict):
        row["minicp_over_torch"] = row["minicp"]["ms"] / row["torch"]["ms"]
    return row


def fmt_ms(cell):
    return (
        f"{cell['ms']:.2f}"
        if isinstance(cell, dict)
        else ("n/a" if cell is None else "skipped" if "skipped" in cell else "OOM" if "memory" in cell else "n/a")
    )


def markdown(result):
    info, rows = result["machine"], result["results"]
    lines = [
        f"Machine: {info.get('device')} ({info.get('nvidia_smi', '')}); CuPy {info.get('cupy')}, "
        f"PyTorch {info.get('torch')}, NumPy {info.get('numpy')}. Batch 1, D {result['settings']['dim']}, "
        f"{result['settings']['heads']} heads, float32 (full FP32 matmuls on both sides), forward of the "
        "layer-0 attention sub-layer, CUDA-event median after warm-up.",
        "",
    ]
    if result.get("ceilings"):
        c = result["ceilings"]
        lines += [
            f"Ceilings measured in the same run: FP32 SGEMM 8192^3 {c['cupy_sgemm_8192_tflops']:.1f} TFLOP/s (CuPy), "
            f"{c['torch_sgemm_8192_tflops']:.1f} TFLOP/s (PyTorch); device copy {c['copy_tb_per_s']:.2f} TB/s.",
            "",
        ]
    ecp = [r for r in rows if r["arch"] == "ecp"]
    if ecp:
        lines += [
            "ECP (segment 512, half segment 256), FLOPs = 6nD^2 + 4Dm(2n - m):",
            "",
            "| n | CuPy ms | CuPy, fused kernels off ms | PyTorch ms | CuPy / PyTorch | CuPy TFLOP/s | PyTorch TFLOP/s | rel. diff |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in ecp:
            tf = lambda side: f"{r[side]['tflops']:.1f}" if isinstance(r.get(side), dict) else "n/a"
            ratio = f"{r['minicp_over_torch']:.2f}" if "minicp_over_torch" in r else "n/a"
            err = f"{r['rel_err_vs_torch']:.1e}" if "rel_err_vs_torch" in r else "n/a"
            lines.append(
                f"| {r['n']} | {fmt_ms(r.get('minicp'))} | {fmt_ms(r.get('minicp_unfused'))} | {fmt_ms(r.get('torch'))} "
                f"| {ratio} | {tf('minicp')} | {tf('torch')} | {err} |"
            )
        lines.append("")
    sizes = sorted({r["n"] for r in rows})
    lines += [
        "Every architecture, CuPy ms / PyTorch ms (CuPy / PyTorch):",
        "",
        "| arch | " + " | ".join(f"n={n}" for n in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for arch in dict.fromkeys(r["arch"] for r in rows):
        cells = []
        for n in sizes:
            r = next((r for r in rows if r["arch"] == arch and r["n"] == n), None)
            if r is None:
                cells.append("")
                continue
            cell = f"{fmt_ms(r.get('minicp'))} / {fmt_ms(r.get('torch'))}"
            if "minicp_over_torch" in r:
                cell += f" ({r['minicp_over_torch']:.2f})"
            cells.append(cell)
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--archs", nargs="+", default=ARCHS)
    ap.add_argument(
        "--unfused-archs",
        nargs="*",
        default=["ecp"],
        help="also time these with B.fused_kernels = False (array-op softmax and RoPE)",
    )
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--profile-n", type=int, default=32768, help="profile ECP at this n (0: no profile)")
    ap.add_argument("--profile-out", default="ecp_profile.txt")
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--out-md", default=None)
    ap.add_argument("--dry-run", action="store_true", help="CPU only: NumPy backend, PyTorch on CPU")
    args = ap.parse_args(argv)
    dry = args.dry_run
    B.use_backend("numpy" if dry else "cupy")
    result = dict(
        machine=machine_info(dry),
        settings=dict(
            dim=args.dim,
            heads=args.heads,
            batch=1,
            dtype="float32",
            warmup=args.warmup,
            repeat=args.repeat,
            ecp_segment=512,
        ),
        ceilings=ceilings(dry),
        results=[],
    )
    print(json.dumps(result["machine"]), "\n", json.dumps(result["ceilings"]), flush=True)

    def save():
        if args.out_json:
            atomic_write_text(args.out_json, json.dumps(result, indent=1))
        if args.out_md:
            atomic_write_text(args.out_md, markdown(result))

    if not dry:
        result["fused_kernels_check"] = check_fused_kernels()
        print("fused kernels check:", result["fused_kernels_check"], flush=True)
    for arch in args.archs:
        for n in args.sizes:
            t0 = time.perf_counter()
            try:
                row = run_one(arch, n, args, dry)
            except Exception as e:  # record it and go on: one device call, many rows
                traceback.print_exc()
                row = dict(arch=arch, n=n, error=f"{type(e).__name__}: {e}"[:500])
                free_memory(dry)
            row["wall_s"] = time.perf_counter() - t0
            result["results"].append(row)
            print(json.dumps(row), flush=True)
            save()
    if args.profile_n and not dry and "ecp" in args.archs:
        try:
            profile_ecp(args.profile_n, args.dim, args.heads, args.profile_out)
        except Exception:
            traceback.print_exc()
    print("\n" + markdown(result), flush=True)
    return result


if __name__ == "__main__":
    main()
