"""The fast engine's float32 GELU (``minicp.fast.gelu``) against the reference's float32 formula: accuracy by
range of h, in float32 units, and time per entry on one core.

    python benchmarks/gelu.py [--out benchmarks/results/gelu-float32.txt]

Errors are measured against float64 formulas through SciPy's erfc (an independent routine), in float32 units:
the float32 spacing at the true value (for GELU', at |Phi| + |h phi|, because GELU' crosses zero near
h = -0.75). Entries whose true value is below float32's normal range are left out. Times are the best of 7 runs
over a (512, 2048) array of N(0, 2) values, with and without GELU'.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.special as sp  # noqa: E402
from machine import cpu_name  # noqa: E402

from minicp.fast import gelu as G  # noqa: E402
from minicp.files import atomic_write_text  # noqa: E402
from minicp.nn import ops  # noqa: E402

RANGES = [(-14, -9), (-9, -6), (-6, -4), (-4, -3), (-3, -2), (-2, -1), (-1, 0), (0, 1), (1, 3), (3, 14)]


def exact(h):
    x = h.astype(np.float64)
    phi = 0.5 * sp.erfc(-x / np.sqrt(2.0))
    density = x * np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)
    return x * phi, phi + density, np.abs(phi) + np.abs(density)


def units(got, want, scale):
    keep = np.abs(scale) >= np.finfo(np.float32).tiny
    out = np.full(got.shape, np.nan)
    spacing = np.spacing(np.abs(scale[keep]).astype(np.float32)).astype(np.float64)
    out[keep] = np.abs(got.astype(np.float64)[keep] - want[keep]) / spacing
    return out


def fast(h, deriv=True):
    a, d = np.empty_like(h), np.empty_like(h) if deriv else None
    G.gelu_rows(h.reshape(1, -1).copy(), a.reshape(1, -1), None if d is None else d.reshape(1, -1))
    return a, d


def best(fn, repeat=7):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    h = np.linspace(-14.0, 14.0, 2_800_001).astype(np.float32)
    want_a, want_d, scale_d = exact(h)
    a, d = fast(h)
    reference = ops.gelu(h)  # 0.5 h (1 + erf(h / sqrt 2)) in float32, SciPy's erf
    ua, ud, ur = units(a, want_a, want_a), units(d, want_d, scale_d), units(reference, want_a, want_a)
    lines = [f"float32 GELU on {cpu_name()}, NumPy {np.__version__}, load average {os.getloadavg()[0]:.1f}", ""]
    lines += ["| h | GELU, fast engine | GELU, reference (1 + erf) / 2 | GELU', fast engine |", "|---|---:|---:|---:|"]
    for lo, hi in RANGES:
        sel = (h >= lo) & (h < hi)
        worst = [np.nanmax(u[sel]) if np.isfinite(u[sel]).any() else float("nan") for u in (ua, ur, ud)]
        lines.append(f"| [{lo}, {hi}) | {worst[0]:.2f} | {worst[1]:.3g} | {worst[2]:.2f} |")
    lines.append(f"| all | {np.nanmax(ua):.2f} | {np.nanmax(ur):.3g} | {np.nanmax(ud):.2f} |")
    x = (np.random.default_rng(0).standard_normal((512, 2048)) * 2).astype(np.float32)
    out, der = np.empty_like(x), np.empty_like(x)
    ns = lambda t: t / x.size * 1e9  # noqa: E731
    t_both = best(lambda: G.gelu_rows(x.copy(), out, der))
    t_one = best(lambda: G.gelu_rows(x.copy(), out))
    t_copy = best(lambda: x.copy())
    t_scipy = best(lambda: sp.erf(x * np.float32(1 / np.sqrt(2)), out=out))
    lines += [
        "",
        "time per entry, one core (best of 7, a (512, 2048) array):",
        f"  fast engine, GELU and GELU'   {ns(t_both - t_copy):5.2f} ns",
        f"  fast engine, GELU only        {ns(t_one - t_copy):5.2f} ns",
        f"  SciPy's float32 erf alone     {ns(t_scipy):5.2f} ns",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        atomic_write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
