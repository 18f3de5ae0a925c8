"""Solution to notebook 05's fourth exercise: the rows the planted bug (no causal mask inside the current half
segment) gets wrong."""


def rows_over_budget(n, m):
    # a row that sees keys after it in its own half segment is wrong; the last row of each half segment sees its
    # whole half segment anyway, so it stays right
    return [i for i in range(n) if i % m != m - 1]
