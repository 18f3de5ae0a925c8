"""Solution to notebook 04's second exercise: how many times the official recipe scores each target."""

import numpy as np


def times_scored(T, n, latent):
    counts = np.zeros(T, dtype=int)
    for begin in range(0, T - n, n // 2):  # windows of n + 1 tokens at 0, n/2, n, ... that fit in the stream
        counts[begin + n - latent + 1 : begin + n + 1] += 1  # each scores its last L targets
    return counts
