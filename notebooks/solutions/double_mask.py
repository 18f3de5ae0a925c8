"""Solution to notebook 01's Double Attention exercise: its mask, history rows and latent rows."""

import numpy as np


def double_mask(n, latent):
    """(n, n) bool: history rows i < H see every history key j < H; latent rows i >= H see j <= i."""
    history = n - latent
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    history_rows = (i < history) & (j < history)  # no mask among the history
    latent_rows = (i >= history) & (j <= i)  # causal, over everything before
    return history_rows | latent_rows
