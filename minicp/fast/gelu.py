"""The fast engine's GELU and its derivative: one module for every backend and dtype.

    GELU(h) = h Phi(h),   GELU'(h) = Phi(h) + h phi(h),   Phi(h) = erfc(-h / sqrt 2) / 2,   phi(h) = Phi'(h)

The reference computes GELU as x/2 (1 + erf(x / sqrt 2)) (``minicp.nn.ops.gelu``, PyTorch's formula). Here:

* **float64 on the CPU**: the reference's formula, pass by pass (SciPy's erf), so float64 results equal
  the reference's to rounding.
* **float32 on the CPU**: SciPy's float32 erf evaluates each entry through a scalar double-precision routine,
  several times slower than NumPy's vectorised passes (docs/engines.md has the numbers). Instead, Phi comes from the Chebyshev fit of erfc in
  Numerical Recipes (Press et al., 2nd ed., section 6.2, ``erfcc``; relative error below 1.2e-7 for every
  argument), evaluated by NumPy's vectorised passes **in float64** over cache-sized pieces and rounded once
  to float32:

      erfc(u) = t exp(-u^2 + P(t)),   t = 1 / (1 + u / 2),   u = |h| / sqrt 2 >= 0   (P: degree 9)
      Phi(-|h|) = erfc(u) / 2,        Phi(|h|) = 1 - Phi(-|h|)

  Because the fit bounds erfc *relatively* and the exponent -h^2 / 2 is formed in float64, the negative
  tail keeps its relative accuracy (where 1 + erf cancels). Measured over every float32 h in [-14, 14] on a
  grid of 2e6 points and against float64 SciPy (``tests/fast/test_gelu.py``): GELU within 2.3 float32 units
  of its value wherever that value is a normal float32, GELU' within 2 units of |Phi| + |h phi|.
* **CuPy**: one CUDA kernel (``minicp.fast.cuda.layers.bias_gelu``), from CUDA's erfc, also accurate in
  the tail.

``gelu_rows`` is the one entry point the fast engine uses (its feed-forward sub-layer, traced or not); it
optionally adds a bias first and writes GELU and/or GELU'.
"""

import math

import numpy as np

from minicp import backend as B
from minicp.fast.cuda import layers as cuda_layers

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
_COEFFS = (_C[0] + math.log(0.5),) + _C[1:]  # ln 1/2 folded into C[0]: t exp(...) = erfc / 2
_HALF_RSQRT2 = 0.5 / math.sqrt(2.0)
_RSQRT2 = 1.0 / math.sqrt(2.0)
_LN_RSQRT2PI = -0.5 * math.log(2.0 * math.pi)  # phi(h) = exp(ln(1 / sqrt(2 pi)) - h^2 / 2)
_RSQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)

PIECE = 1 << 14  # entries per piece: its float64 work arrays (about 600 KiB) stay in a core's L2 cache


def _float32_piece(h32, a32, d32, h, t, p, u, q, mask):
    """GELU of the float32 piece h32 into a32, GELU' into d32 (either may be None); the other arguments are
    float64 (and one bool) work arrays of the piece's length."""
    h[...] = h32  # exact
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
    u *= 0.5  # h^2 / 2, exact in float64
    p -= u
    np.exp(p, out=p)
    p *= t  # Phi(-|h|) = erfc(|h| / sqrt 2) / 2 <= 1/2
    np.greater(h, 0.0, out=mask)
    np.subtract(1.0, p, out=q)
    q *= mask  # 1 - Phi(-|h|) where h > 0, else 0
    np.maximum(p, q, out=p)  # Phi(h): 1 - Phi(-h) >= 1/2 >= Phi(-|h|) where h > 0
    if d32 is not None:
        np.subtract(_LN_RSQRT2PI, u, out=q)
        np.exp(q, out=q)  # phi(h)
        q *= h
        q += p
        d32[...] = q  # GELU'(h), rounded once
    if a32 is not None:
        np.multiply(h, p, out=q)
        a32[...] = q  # GELU(h), rounded once


def _float32_rows(h, a, deriv):
    """GELU (into a) and GELU' (into deriv) of the C-contiguous float32 rows h, piece by piece."""
    flat = [None if x is None else x.reshape(-1) for x in (h, a, deriv)]
    n = h.size
    size = min(n, PIECE)
    work = [np.empty(size) for _ in range(5)]
    mask = np.empty(size, dtype=bool)
    for lo in range(0, n, PIECE):
        hi = min(n, lo + PIECE)
        pieces = [None if x is None else x[lo:hi] for x in flat]
        _float32_piece(*pieces, *(w[: hi - lo] for w in work), mask[: hi - lo])


def _erf_rows(h, a, deriv):
    """The reference's formula pass by pass (float64 and any other CPU dtype): Phi = (1 + erf(h / sqrt 2)) / 2."""
    import scipy.special  # comes with autograd[scipy]; loaded on first use (import time)

    phi = np.multiply(h, _RSQRT2)
    scipy.special.erf(phi, out=phi)
    phi += 1.0
    phi *= 0.5  # Phi(h)
    if deriv is not None:
        np.multiply(h, h, out=deriv)
        deriv *= -0.5
        np.exp(deriv, out=deriv)
        deriv *= h
        deriv *= _RSQRT2PI  # h phi(h)
        deriv += phi
    if a is not None:
        np.multiply(h, phi, out=a)  # h ((1 + erf) / 2) = (h / 2) (1 + erf) exactly: halving is exact


def gelu_rows(h, a=None, deriv=None, bias=None):
    """GELU(z) into ``a`` and GELU'(z) into ``deriv`` (each optional, shaped like h, neither h itself) for
    z = h + bias (``bias`` (F,) optional) and the rows h (r, F) of one backend array. h may be left holding z.

    CuPy: one kernel; NumPy float32: the float64-evaluated fit above; other NumPy dtypes: erf."""
    if B.name == "cupy":
        cuda_layers.bias_gelu_(h, bias, a, deriv)
        return
    if bias is not None:
        h += bias
    contiguous = all(x is None or x.flags.c_contiguous for x in (h, a, deriv))
    if h.dtype == np.float32 and contiguous:
        _float32_rows(h, a, deriv)
    else:
        _erf_rows(h, a, deriv)
