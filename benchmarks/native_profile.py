"""Where a ``compare.py`` workload's CPU time goes on minicp's side, down to native code (BLAS, NumPy's loops).

    python benchmarks/native_profile.py --kind fwdbwd --seconds 12 --out benchmarks/results/profile-cpu-native.txt

Needs py-spy (``pip install py-spy``). It samples every thread of a child process that repeats the workload
(``--loop``, built exactly as ``compare.py`` builds it, 2 threads unless ``--threads`` says otherwise) and
counts the innermost frame of each sample taken inside a timed call. Samples of threads that wait (the
pool's idle workers, a thread waiting for the GIL or for a lock) are counted apart: py-spy sees a
blocked thread's stack just as a running one's. The rest is sorted into

    blas        OpenBLAS (sgemm kernels, packing, its thread server)
    erf         SciPy's erf (the float64 route of exact GELU)
    elementwise NumPy's loops: arithmetic, exp, reductions, copies between layouts
    other       the interpreter, autograd's wrappers, the thread pool's hand-offs, malloc, libc

and the Python lines that spend the most busy samples are listed under them.
"""

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

from minicp.files import atomic_write_text

HERE = os.path.dirname(os.path.abspath(__file__))
WAITS = ("take_gil", "PyEval_RestoreThread", "SimpleQueue_get", "acquire_lock", "pthread_cond", "sem_wait", "futex")
ELEMENTWISE = ("FLOAT_", "DOUBLE_", "simd_", "_contig", "strided", "pairwise", "npy_", "ufunc_")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["infer", "fwdbwd", "train"], default="fwdbwd")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=12.0, help="how long the child repeats the workload")
    p.add_argument("--rate", type=int, default=250, help="samples per second and thread")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default=None)
    p.add_argument("--loop", action="store_true", help=argparse.SUPPRESS)  # the child
    return p.parse_args(argv)


def loop(args):
    sys.path.insert(0, HERE)
    import compare

    compare.pin_threads(args.threads)
    mside, _, _ = compare.build_pair(args.kind, compare.WORKLOADS["cpu"][args.kind], 256, "cpu")
    for _ in range(2):
        mside.timed()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        mside.timed()
        calls += 1
    print(f"{calls} calls, {(time.perf_counter() - start) / calls * 1e3:.1f} ms each", flush=True)


def kind_of(stack, leaf):
    if "gemm" in stack or "exec_blas" in stack or "blas_thread" in stack:
        return "blas"
    if "erf" in leaf or "xsf" in leaf:
        return "erf"
    if leaf.startswith(ELEMENTWISE) or any(k in leaf for k in ("_contig", "strided", "pairwise")):
        return "elementwise"
    return "other"


def summarise(raw, top):
    kinds, lines, waits, busy = collections.Counter(), collections.Counter(), 0, 0
    for row in raw:
        stack, _, count = row.rstrip().rpartition(" ")
        if "Side.timed" not in stack and "thread_run" not in stack:
            continue  # set-up, imports, the interpreter's own threads
        count = int(count)
        if any(w in stack for w in WAITS):
            waits += count
            continue
        frames = stack.split(";")
        leaf = frames[-1].split(" (")[0]
        busy += count
        kinds[kind_of(stack, leaf)] += count
        ours = [f for f in frames if ".py:" in f and "autograd/" not in f and "thread.py" not in f]
        if ours:
            name, _, where = ours[-1].partition(" (")
            lines[f"{name} ({where.rstrip(')')}"] += count
    out = [f"busy samples {busy}, waiting {waits}"]
    out += [f"{100 * n / busy:5.1f}%  {k}" for k, n in kinds.most_common()]
    out += ["", f"the {top} Python lines with the most busy samples (innermost frame of minicp or numpy):"]
    out += [f"{100 * n / busy:5.1f}%  {k}" for k, n in lines.most_common(top)]
    return "\n".join(out)


def main(argv=None):
    args = parse(argv)
    if args.loop:
        loop(args)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "samples.txt")
        child = [sys.executable, os.path.abspath(__file__), "--loop", "--kind", args.kind]
        child += ["--threads", str(args.threads), "--seconds", str(args.seconds)]
        tool = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
        if tool is None:
            sys.exit("py-spy not found: pip install py-spy")
        spy = [tool, "record", "--native", "--rate", str(args.rate), "--format", "raw", "-o", raw, "--"]
        done = subprocess.run(spy + child, capture_output=True, text=True)
        if done.returncode != 0 or not os.path.exists(raw):
            sys.exit(f"py-spy failed ({done.returncode}): {done.stderr.strip()[-400:]}")
        with open(raw) as f:
            report = summarise(f, args.top)
    calls = " ".join(line for line in done.stdout.splitlines() if " calls, " in line)
    head = (
        f"minicp {args.kind} on {args.threads} threads, py-spy --native at {args.rate} Hz ({calls}; sampling slows it)"
    )
    report = head + "\n" + report
    print(report)
    if args.out:
        atomic_write_text(args.out, report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
