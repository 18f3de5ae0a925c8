"""Solution to notebook 02's fourth exercise: one ECP attention layer's receptive field, by perturbation."""

import numpy as np

import minicp


def perturbation_field(n, m):
    """(n, n) bool: True where changing input row j changes output row i (q = k = v = x)."""
    x = np.random.default_rng(0).standard_normal((1, 1, n, 8))
    out = minicp.attention("ecp", x, x, x, half_segment=m)
    seen = np.zeros((n, n), dtype=bool)
    for j in range(n):
        moved = x.copy()
        moved[..., j, :] += 1.0  # change token j only
        changed = minicp.attention("ecp", moved, moved, moved, half_segment=m) != out
        seen[:, j] = changed[0, 0].any(-1)  # the output rows that moved
    return seen
