"""Solution to notebook 01's LongLoRA exercise: a shifted head's mask with shift="roll"."""

import numpy as np


def roll_mask(n, group):
    """(n, n) bool for a shifted head: roll the sequence by u = g/2 (token i moves to place (i - u) mod n), cut
    the places into groups of g, attend causally inside each group (by place), roll back."""
    u = group // 2
    place = (np.arange(n) - u) % n  # where token i sits in the rolled sequence
    qp, kp = place[:, None], place[None, :]
    return (qp // group == kp // group) & (kp <= qp)
