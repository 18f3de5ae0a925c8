"""Head-level RoPE cases: the kernel receives unrotated q, k and applies rotary embeddings itself.

Positions are the official ones, 0..n-1; ``style`` is "interleaved" (pairs (x_2i, x_2i+1), the official
ECP code) or "halves" (pairs (x_i, x_{i+d/2}), HF LLaMA / LongLoRA). The reference rotates in float64
with the official float32 frequencies theta_i = base^(-2i/d) (``minicp.nn.rope.rope``); its gradient
rotates back (angle -> -angle is exact). The plain implementation in a low dtype forms the angles
position * theta in float32, as a PyTorch RoPE does, and rounds each product and sum to the dtype (a
RoPE on tensors of that dtype), so its floor includes the angle rounding that grows with the position.
"""

import numpy as onp

from minicp import backend as B
from minicp.nn import rope as R
from minicp.testing.arrays import rounder

__all__ = ["ROPE_STYLES", "check_rope", "rope_reference", "rope_plain"]

ROPE_STYLES = R.ROPE_STYLES


def check_rope(rope, head_dim):
    """None or a RoPE style; ValueError naming ``rope`` otherwise (halves needs an even head_dim)."""
    if rope is None:
        return None
    if rope not in ROPE_STYLES:
        raise ValueError(f"rope must be None or one of {ROPE_STYLES}, got {rope!r}")
    if rope == "halves" and head_dim % 2:
        raise ValueError(f"rope='halves' needs an even head_dim, got {head_dim}")
    return rope


def rope_reference(x, style, inverse=False):
    """x (b, h, n, d) float64 rotated by position * theta (``inverse``: by -position * theta)."""
    n = x.shape[-2]
    positions = onp.arange(n, dtype=onp.float64)
    with B.backend("numpy"):
        return onp.asarray(R.rope(x, -positions if inverse else positions, style))


def _rotate(x, cos, sin, style, rnd):
    half = x.shape[-1] // 2
    out = x.copy()
    if style == "interleaved":
        a, b = x[..., 0 : 2 * half : 2], x[..., 1 : 2 * half : 2]
        into = (slice(0, 2 * half, 2), slice(1, 2 * half, 2))
    else:
        a, b = x[..., :half], x[..., half : 2 * half]
        into = (slice(0, half), slice(half, 2 * half))
    out[..., into[0]] = rnd(rnd(a * cos) - rnd(b * sin))  # each product rounded, as tensors in the dtype do
    out[..., into[1]] = rnd(rnd(b * cos) + rnd(a * sin))
    return out


def rope_plain(x, style, dtype, inverse=False):
    """The plain RoPE of a kernel in ``dtype``: float32 angles (float64 for float64), cos/sin and every
    product rounded to the dtype. x (b, h, n, d) holds dtype values; returns float32/float64."""
    rnd = rounder(dtype)
    ct = onp.float64 if dtype == "float64" else onp.float32
    n, d = x.shape[-2], x.shape[-1]
    ang = R.rope_angles(onp.arange(n), d, onp.dtype(ct))  # (n, d//2), products in ct
    cos, sin = rnd(onp.cos(ang)), rnd(onp.sin(ang))
    return _rotate(rnd(onp.asarray(x, dtype=ct)), cos, -sin if inverse else sin, style, rnd)
