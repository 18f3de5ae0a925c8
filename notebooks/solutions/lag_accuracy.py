"""Solution to notebook 04's first exercise: the receptive-field prediction of lag-copy accuracy."""

import numpy as np


def lag_accuracy(k, lag, n, m, vocab):
    rows = np.arange(lag - 1, n)  # input positions i whose target i + 1 is a copy
    source = rows + 1 - lag  # the token each of them must copy
    first = m * np.maximum(0, rows // m - k)  # row i sees [m max(0, i // m - k), i]
    share = float(np.mean(source >= first))  # copies the field allows: learned perfectly
    return share + (1 - share) / vocab  # the others: a guess among vocab symbols
