"""Rotary position embedding (RoPE), as the official code applies it to q and kv (ROT:34-47).

``rope`` rotates channel pairs by angle position * theta_i; ``rope_tables`` gives the cos/sin tables it
uses (cached on the host, moved to the GPU once); ``rope_frequencies`` and ``rope_angles`` spell out the
official ``freqs`` buffer and the angles in the official precision.
"""

import functools

import numpy as onp  # host-side constants only (angles, tables); never applied to traced values
from autograd.tracer import getval

from minicp import backend as B
from minicp.validate import positive_int, real

ROPE_STYLES = ("interleaved", "halves")


def rope_frequencies(d, base=10000.0):
    """The official ``freqs`` buffer theta_i = 1 / base^(2i/d), i = 0..d//2-1, as float32 (d//2,).

    Every step is the float32 computation the official ``RotaryEmbedding`` asks for, correctly rounded:
    the exponent 2i/d is a float32 division, the power is evaluated in float64 and rounded once to
    float32, and 1/x is a float32 division. NumPy's own float32 ``power`` is not used: its vectorised
    kernels are 1-2 ulp off for most head dims (which ones depends on the CPU's SIMD features). Torch's
    float32 ``pow`` is within 1 ulp of this; where it is not correctly rounded, the values in an
    official state_dict win (``load_official_state_dict`` keeps them).
    """
    d = positive_int("d", d)
    base = real("base", base, low=0, low_open=True)
    exponents = onp.arange(0, d - d % 2, 2, dtype=onp.float32) / onp.float32(d)  # float32, as torch
    power = (onp.float64(base) ** exponents.astype(onp.float64)).astype(onp.float32)  # rounded once
    return onp.float32(1.0) / power  # (d//2,) float32


def rope_angles(positions, d, dtype, base=10000.0, freqs=None):
    """Angles (n, d//2): angle[p, i] = position_p * theta_i, theta_i = base^(-2i/d).

    Like the official code, the frequencies theta_i are float32 numbers (its ``freqs`` buffer is
    built in float32 and keeps those values when a model is cast to float64); the products with the
    positions are then formed in ``dtype``. ``freqs`` (d//2,) overrides theta, e.g. with the buffer of
    an official state_dict; default ``rope_frequencies(d, base)``.
    """
    theta = rope_frequencies(d, base) if freqs is None else onp.asarray(freqs)
    if theta.shape != (d // 2,):
        raise ValueError(f"freqs must have shape ({d // 2},) for head dim {d}, got {theta.shape}")
    theta = theta.astype(dtype)  # (d//2,)
    return onp.asarray(positions, dtype=dtype)[:, None] * theta[None, :]  # (n, d//2)


@functools.lru_cache(maxsize=16)
def _rope_tables(positions_bytes, positions_dtype, d, dtype, base, freqs_bytes=None, freqs_dtype=None):
    """Read-only host tables cos(angle), sin(angle), cached so ``B.constant`` moves them to the GPU once.
    The positions (and frequencies) come as bytes (hashable, cheap to make) and are read back without a copy."""
    pos = onp.ndarray((len(positions_bytes) // onp.dtype(positions_dtype).itemsize,), positions_dtype, positions_bytes)
    freqs = None
    if freqs_bytes is not None:
        freqs = onp.ndarray((len(freqs_bytes) // onp.dtype(freqs_dtype).itemsize,), freqs_dtype, freqs_bytes)
    ang = rope_angles(pos, d, onp.dtype(dtype), base, freqs)
    tables = onp.cos(ang), onp.sin(ang)
    for t in tables:
        t.flags.writeable = False
    return tables


_host_copies = {}  # id(device array) -> (the array, its host copy)


def _host_copy(a):
    """``a`` as a NumPy array. A device array (an official ``freqs`` buffer on the GPU) is read once per
    array object: reading it on every call would hold the host until the GPU has finished everything queued
    before (twice per RoPE layer). The entry keeps the array alive, so its id cannot be reused by another;
    the buffer is treated as a constant (changing it in place is not seen)."""
    if isinstance(a, onp.ndarray):
        return a
    hit = _host_copies.get(id(a))
    if hit is None or hit[0] is not a:
        if len(_host_copies) >= 16:
            _host_copies.clear()
        hit = _host_copies[id(a)] = (a, onp.asarray(B.to_numpy(a)))
    return hit[1]


def rope_tables(positions, d, dtype, base=10000.0, freqs=None):
    """cos(angle), sin(angle) (n, d//2) of ``rope`` for ``positions``, as backend constants (moved to the
    GPU once per distinct table)."""
    pos = onp.asarray(positions)
    fkey = (None, None)
    if freqs is not None:
        f = _host_copy(getval(freqs))  # tobytes() is C-order for any layout
        fkey = (f.tobytes(), f.dtype.str)
    tables = _rope_tables(pos.tobytes(), pos.dtype.str, d, onp.dtype(dtype).str, base, *fkey)
    return tuple(map(B.constant, tables))


def rope(x, positions, style="interleaved", base=10000.0, freqs=None):
    """Rotate channel pairs of x (..., n, d) by angle position * theta_i.

    ``freqs`` (d//2,): the theta_i to use (an official ``pos_emb.freqs`` buffer); default
    ``rope_frequencies(d, base)``.

    style="interleaved" (official ECP code, ROT:34-47): pairs are (x_2i, x_2i+1),
        (x_2i, x_2i+1) -> (x_2i cos - x_2i+1 sin,  x_2i+1 cos + x_2i sin);
        an odd last channel passes through unrotated.
    style="halves" (HF LLaMA / LongLoRA): pairs are (x_i, x_{i+d/2}), same rotation. Needs even d.
    """
    xp = B.xp
    *lead, n, d = x.shape
    if style not in ROPE_STYLES:
        raise ValueError(f"rope style {style!r} is not one of {ROPE_STYLES}")
    if len(positions) != n:
        raise ValueError(f"positions has {len(positions)} entries but x has {n} rows")
    half = d // 2
    if style == "halves" and d % 2:
        raise ValueError(f"rope style 'halves' needs an even head dim, got {d}")
    cos, sin = rope_tables(positions, d, x.dtype, base, freqs)  # (n, d//2)
    if style == "interleaved":
        pairs = xp.reshape(x[..., : 2 * half], (*lead, n, half, 2))  # (..., n, d//2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]
        rotated = xp.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)
        rotated = xp.reshape(rotated, (*lead, n, 2 * half))
        return rotated if d % 2 == 0 else xp.concatenate([rotated, x[..., 2 * half :]], axis=-1)
    first, second = x[..., :half], x[..., half:]
    return xp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
