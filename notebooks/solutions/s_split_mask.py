"""Solution to notebook 01's s-Split exercise: its mask, history segments of c tokens and latent rows."""

import numpy as np


def s_split_mask(n, latent, split):
    """(n, n) bool: a history row sees its own segment of c = split tokens; a latent row sees j <= i."""
    history = n - latent
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    same_segment = (i // split) == (j // split)
    history_rows = (i < history) & (j < history) & same_segment
    latent_rows = (i >= history) & (j <= i)
    return history_rows | latent_rows
