"""Time ``minicp.analysis.steps.count_attention_steps``: constant time (well under 1 ms) for n = 10^3 .. 10^9.

    python benchmarks/steps.py [--count computed|unmasked] [--layers 48] [--heads 24]

Runs against the installed package (``pip install -e .`` in the repository root).

Prints the mean time per call (timeit, best of 5 repeats of 200 calls) for every
architecture at n = 10^3, ..., 10^9 with ModelConfig's default sizes (latent n/2, ECP segment n/4,
LongLoRA group n/4, ...), and the count itself at n = 10^9 as an exact integer.
"""

import argparse
import timeit

from minicp.analysis.steps import count_attention_steps
from minicp.config import ARCHITECTURES


def time_call(arch, n, layers, heads, count):
    """Mean seconds per call."""

    def call():
        return count_attention_steps(arch, seq_len=n, layers=layers, heads=heads, count=count)

    call()
    number = 200
    return min(timeit.Timer(call).repeat(repeat=5, number=number)) / number


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", choices=("computed", "unmasked"), default="computed")
    ap.add_argument("--layers", type=int, default=48)
    ap.add_argument("--heads", type=int, default=24, help="even (LongLoRA shifts half the heads)")
    args = ap.parse_args(argv)
    sizes = [10**k for k in range(3, 10)]
    print(
        f"count_attention_steps(arch, seq_len=n, layers={args.layers}, heads={args.heads}, count={args.count!r}): "
        "mean time per call in microseconds"
    )
    header = f"{'arch':<14}" + "".join(f"{f'n=1e{k}':>10}" for k in range(3, 10)) + "   count at n=1e9"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for arch in ARCHITECTURES:
        times = [time_call(arch, n, args.layers, args.heads, args.count) for n in sizes]
        worst = max(worst, *times)
        value = count_attention_steps(arch, seq_len=sizes[-1], layers=args.layers, heads=args.heads, count=args.count)
        print(f"{arch:<14}" + "".join(f"{t * 1e6:>10.1f}" for t in times) + f"   {value:,}")
    print(f"\nslowest call: {worst * 1e6:.1f} us ({'under' if worst < 1e-3 else 'OVER'} the 1 ms target)")
    return 0 if worst < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
