"""Solution to notebook 03's first exercise: ECP's unmasked score entries per head and layer, by hand."""


def ecp_unmasked(n, m):
    attn = m * (m + 1) // 2  # half segment 0: the causal triangle of an m x m block
    par = m * m + m * (m + 1) // 2  # every later one: the whole previous half segment, plus its own triangle
    return attn + (n // m - 1) * par
