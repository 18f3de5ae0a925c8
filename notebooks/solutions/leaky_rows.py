"""Solution to notebook 02's fifth exercise: the rows of LongLoRA S2 roll that see the future after k layers."""


def leaky_rows(n, g, k):
    u = g // 2  # the shift
    # the wrap-around group leaks into rows 0 .. u - 1, each further layer u rows more; the last row has no future
    return list(range(min(k * u, n - 1)))
