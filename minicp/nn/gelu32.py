"""Exact GELU in float32 on the CPU, from NumPy's vectorised passes instead of SciPy's erf.

SciPy's ``erf`` evaluates every float32 entry through a scalar double-precision routine: about 11 ns an
entry on the machines the benchmarks ran on, against 0.2-0.4 ns for one of NumPy's SIMD passes (add,
multiply, exp). In the CPU profile of forward + backward the erf alone was 13-14% of all the work. This module
computes the same function from about thirty such passes, run over cache-sized pieces of the rows:

    Phi(h) = erfc(-h / sqrt 2) / 2,                       GELU(h) = h Phi(h),   GELU'(h) = Phi(h) + h phi(h)

    erfc(u) = t exp(-u^2 + P(t)),   t = 1 / (1 + u / 2),   u >= 0   (P: a degree-9 polynomial)
    erfc(-u) = 2 - erfc(u)

The erfc form and its ten coefficients are the Chebyshev fit of Numerical Recipes (Press et al., 2nd ed.,
section 6.2, ``erfcc``), whose relative error is below 1.2e-7 for every u >= 0. It is a *relative* bound
on erfc, so Phi(h) for negative h keeps its relative accuracy; the direct route, (1 + erf(h / sqrt 2)) / 2
in float32, loses it to cancellation (up to 100 float32 units for h in [-3, -2], all of them below -5.5,
where 1 + erf rounds to 0). Measured against float64 formulas (``tests/nn/test_gelu32.py``): GELU within
10.5 float32 units of its value and GELU' within 7.3 units of |Phi| + |h phi| for h >= -3; in the tail
down to h = -14 up to 125 units, from the one float32 rounding of h^2 / 2 inside exp. SciPy's float32
route is within 2.4 units for |h| < 1, where this one reaches 6. One piece of 2^15 entries costs about
5-6 ns an entry with GELU', against 12.6 ns for SciPy's route, on one core of the benchmark machine.

Only float32 arrays come here (``applies``); float64 keeps SciPy's erf, so the float64 gradient checks
compare the fused path with the readable one to float64 rounding as before.
"""

import numpy as np

# Numerical Recipes' erfcc: erfc(u) ~ t exp(-u^2 + C[0] + t (C[1] + t (C[2] + ... + t C[9]))).
_C = (
    -1.26551223,
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)
_LN_HALF = float(np.log(0.5))  # folded into C[0]: t exp(... + ln 1/2) = erfc / 2
_HALF_RSQRT2 = float(0.5 / np.sqrt(2.0))
_LN_RSQRT2PI = float(-0.5 * np.log(2.0 * np.pi))  # phi(h) = exp(ln(1/sqrt(2 pi)) - h^2 / 2)

PIECE = 1 << 15  # entries per piece: its five work arrays (about 600 KiB) stay in a core's L2 cache

_COEFFS = tuple(np.float32(c) for c in (_C[0] + _LN_HALF,) + _C[1:])


def applies(*arrays):
    """True when ``gelu_rows`` takes these arrays: C-contiguous float32 NumPy arrays (None is skipped)."""
    return all(
        isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous for x in arrays if x is not None
    )


def _piece(h, a, deriv, u, t, p, q, mask):
    """GELU of the 1-D piece h into a and GELU' into deriv (either may be None); u, t, p, q, mask: work
    arrays of the piece's length."""
    np.abs(h, out=t)
    t *= _HALF_RSQRT2
    t += 1.0
    np.divide(1.0, t, out=t)  # t = 1 / (1 + |h| / (2 sqrt 2))
    np.multiply(t, _COEFFS[9], out=p)
    p += _COEFFS[8]
    for c in _COEFFS[7::-1]:  # Horner: P(t) + ln 1/2
        p *= t
        p += c
    np.multiply(h, h, out=u)
    u *= 0.5  # u = h^2 / 2, one rounding
    p -= u
    np.exp(p, out=p)
    p *= t  # p = erfc(|h| / sqrt 2) / 2 = Phi(-|h|) <= 1/2
    np.greater(h, 0.0, out=mask)
    np.subtract(1.0, p, out=q)
    q *= mask  # 1 - p where h > 0, else 0
    np.maximum(p, q, out=p)  # Phi(h): 1 - Phi(-h) >= 1/2 >= p where h > 0; p elsewhere
    if deriv is not None:
        np.subtract(_LN_RSQRT2PI, u, out=deriv)
        np.exp(deriv, out=deriv)  # phi(h)
        deriv *= h
        deriv += p  # GELU'(h) = Phi(h) + h phi(h)
    if a is not None:
        np.multiply(h, p, out=a)


def _flat(x, name):
    if not applies(x):
        raise ValueError(f"{name} must be a C-contiguous float32 NumPy array")
    return x


def gelu_rows(h, a=None, deriv=None, bias=None):
    """GELU(h + bias) into ``a`` and GELU'(h + bias) into ``deriv`` (each optional, same shape as h) for a
    2-D C-contiguous float32 block h (rows, F). With ``bias`` (F,), h itself becomes h + bias.

    Runs over pieces of whole rows, so that each piece's thirty-odd passes stay in cache."""
    _flat(h, "h")
    if h.ndim != 2:
        raise ValueError(f"h must be 2-D (rows, features), got shape {h.shape}")
    for name, out in (("a", a), ("deriv", deriv)):
        if out is not None and _flat(out, name).shape != h.shape:
            raise ValueError(f"{name} has shape {out.shape}, h has {h.shape}")
    rows, width = h.shape
    step = max(1, PIECE // max(1, width))
    size = min(rows, step) * width
    u, t, p, q = (np.empty(size, dtype=np.float32) for _ in range(4))
    mask = np.empty(size, dtype=bool)
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        n = (hi - lo) * width
        if bias is not None:
            h[lo:hi] += bias
        pieces = [None if x is None else x[lo:hi].reshape(n) for x in (h, a, deriv)]
        _piece(*pieces, u[:n], t[:n], p[:n], q[:n], mask[:n])
