"""Solution to notebook 05's fifth exercise: rounding to bfloat16 by hand (to nearest, ties to even)."""

import numpy as np


def bfloat16_round(x):
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)  # room for the carry
    lowest_kept = (bits >> 16) & 1  # 1 when the kept part is odd: a tie then rounds up, to even
    rounded = (bits + 0x7FFF + lowest_kept) & 0xFFFF0000  # above half way (or a tie to even) carries into bit 16
    return rounded.astype(np.uint32).view(np.float32)
