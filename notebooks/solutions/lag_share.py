"""Solution to notebook 04's exercise: the share of lag-11 copies that 2 ECP layers (m = 4, n = 20) can reach."""

import numpy as np


def share(k=2, m=4, n=20, lag=11):
    rows = np.arange(lag - 1, n)  # scored input positions i = 10 .. 19
    source = rows + 1 - lag  # the token each target copies
    first = m * np.maximum(0, rows // m - k)  # row i sees [m max(0, i // m - k), i]
    return float(np.mean(source >= first))  # i = 10, 11, 14, 15, 18, 19: 6 of 10
