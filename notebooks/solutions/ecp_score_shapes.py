"""Solution to notebook 03's second exercise: the score matrices ECP's code builds, as shapes."""


def ecp_score_shapes(b, h, n, m):
    # ATTN: half segment 0 against itself; PAR: the n/m - 1 later half segments, each against the pair
    # (previous, current), stacked into one array
    return [(b, h, m, m), (b, h, n // m - 1, m, 2 * m)]
