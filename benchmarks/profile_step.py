"""cProfile of one call of a ``compare.py`` workload on minicp's side (default: the CPU training step).

    python benchmarks/profile_step.py --threads 2 --out benchmarks/results/profile-cpu-train.txt
    python benchmarks/profile_step.py --kind fwdbwd --top 40

Builds the workload exactly as ``compare.py`` does (same shapes, weights and tokens), runs ``--warmup``
untimed calls, times ``--repeat`` calls, then profiles one more and prints the ``--top`` entries by
internal time, followed by the load average of the machine (other processes share its cores).
"""

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys

import compare


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["infer", "fwdbwd", "train"], default="train")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", default=None, help="also write the report to this file")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.threads:
        compare.pin_threads(args.threads)
    mside, _, cfg = compare.build_pair(args.kind, compare.WORKLOADS["cpu"][args.kind], 256, "cpu")
    for _ in range(args.warmup):
        mside.timed()
    times = [mside.timed() for _ in range(args.repeat)]
    prof = cProfile.Profile()
    prof.enable()
    mside.call()
    prof.disable()
    text = io.StringIO()
    text.write(f"minicp {args.kind} {compare.WORKLOADS['cpu'][args.kind]} threads={args.threads}\n")
    text.write(f"timed calls (s): {[round(t, 3) for t in times]}, median {statistics.median(times):.3f}\n")
    text.write(f"load average (1, 5, 15 min): {os.getloadavg()}\n")
    pstats.Stats(prof, stream=text).strip_dirs().sort_stats("tottime").print_stats(args.top)
    report = text.getvalue()
    print(report)
    if args.out:
        from minicp.files import atomic_write_text  # here: minicp is imported after the threads are pinned

        atomic_write_text(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
