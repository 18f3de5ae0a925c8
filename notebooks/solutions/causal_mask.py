"""Solution to notebook 01's Transformer exercise: the causal mask from its equation."""

import numpy as np


def causal_mask(n):
    """(n, n) bool: query i sees every key j <= i."""
    i = np.arange(n)[:, None]  # query rows
    j = np.arange(n)[None, :]  # key columns
    return j <= i
