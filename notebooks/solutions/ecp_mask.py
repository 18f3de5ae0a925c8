"""Solution to notebook 01's exercise: ECP's mask from its equation, with nothing but NumPy."""

import numpy as np


def ecp_mask(n, m):
    """(n, n) bool: query i (half segment t = i // m) sees keys m * max(0, t - 1) .. i."""
    i = np.arange(n)[:, None]  # query rows
    j = np.arange(n)[None, :]  # key columns
    first_key = m * np.maximum(0, i // m - 1)  # start of the previous half segment (or 0)
    return (j >= first_key) & (j <= i)
