"""``minicp tour``: a two-minute look at every architecture.

For one sequence length it builds each architecture's model, runs a forward pass and the official
loss, checks the explicit blockwise attention against the dense masked reference, and prints the
attention-step counts declared by each pattern next to full attention's.
"""

import argparse
import time

import numpy as onp

from minicp.cli.options import command
from minicp.config import ARCHITECTURES, sized_config
from minicp.nn.attention import module, patterns
from minicp.nn.model import count_params, forward, init_params, loss
from minicp.nn.reference import dense_attention


def tour_config(arch, seq_len, dim, heads, layers, vocab=256):
    """The tour's model: ``minicp.config.sized_config`` (L = n/2, p = n/4, c = n/4, ECP s = n/4, S2 g = n/4)."""
    return sized_config(arch, seq_len, vocab=vocab, dim=dim, heads=heads, layers=layers)


def steps_per_head(cfg, kind="computed"):
    """Score entries summed over the layers, averaged over heads, from the declared patterns."""
    total = 0
    for layer in range(cfg.layers):
        ps = patterns(cfg.arch, cfg.stream_len(layer), cfg.heads, **module(cfg.arch).pattern_kwargs(cfg, layer))
        total += sum(p.computed() if kind == "computed" else p.unmasked() for p in ps)
    return total / cfg.heads


def run(seq_len=256, dim=64, heads=4, layers=2, seed=0, out=print):
    rng = onp.random.default_rng(seed)
    out(f"minicp tour: n = {seq_len}, D = {dim}, h = {heads}, l = {layers}, batch 2, float32 model, float64 checks\n")
    header = f"{'arch':<13}{'sizes':<27}{'params':>9}{'logits':>16}{'loss':>8}{'steps/head':>12}{'% full':>8}{'|explicit-dense|':>18}{'fwd ms':>8}"
    out(header)
    out("-" * len(header))
    full = None
    for arch in ARCHITECTURES:
        cfg = tour_config(arch, seq_len, dim, heads, layers)
        params = init_params(cfg, seed=seed)
        tokens = rng.integers(0, cfg.vocab, (2, seq_len + 1))
        forward(params, tokens[:1, :-1], cfg)  # warm-up (first calls load scipy)
        t0 = time.perf_counter()
        logits = forward(params, tokens[:, :-1], cfg)
        ms = 1e3 * (time.perf_counter() - t0)
        value = float(loss(params, tokens, cfg))
        # head level: explicit blockwise attention vs the dense mask of the declared pattern (float64)
        args = module(arch).pattern_kwargs(cfg, 0)
        q, k, v = (rng.standard_normal((1, heads, seq_len, 16)) for _ in range(3))
        mask = onp.stack([p.mask() for p in patterns(arch, seq_len, heads, **args)])
        err = onp.abs(module(arch).attention(q, k, v, **args) - dense_attention(q, k, v, mask)).max()
        steps = steps_per_head(cfg)
        full = full or seq_len * seq_len * layers
        sizes = " ".join(f"{k}={v}" for k, v in args.items() if k not in ("layer", "partial"))
        out(
            f"{arch:<13}{sizes:<27}{count_params(cfg) / 1e6:>8.2f}M{str(logits.shape):>16}{value:>8.3f}"
            f"{steps:>12,.0f}{100 * steps / full:>7.1f}%{err:>18.1e}{ms:>8.1f}"
        )
    out(
        "\nsteps/head: attention score entries computed per head over all layers (masked ones included);"
        "\n% full: against n^2 per layer. Loss ~ ln(256) = 5.545 at initialisation."
        "\n\nNext: minicp steps --table8 (the paper's Table 8 reconciled), minicp figures, "
        "minicp train --steps 100, notebooks/."
    )


@command
def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="minicp tour", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seq-len", type=int, default=256, help="sequence length n (divisible by 8; default 256)")
    ap.add_argument("--dim", type=int, default=64, help="model width D (default 64)")
    ap.add_argument("--heads", type=int, default=4, help="attention heads (even; default 4)")
    ap.add_argument("--layers", type=int, default=2, help="layers (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.seq_len % 8 or args.seq_len < 8:
        ap.error(f"--seq-len {args.seq_len} must be a positive multiple of 8")
    run(args.seq_len, args.dim, args.heads, args.layers, args.seed)
