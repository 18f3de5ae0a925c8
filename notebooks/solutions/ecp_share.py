"""Solution to notebook 03's third exercise: ECP's score entries as a share of full attention's."""


def ecp_share(n, m):
    return m * (2 * n - m) / n**2  # each query scores at most 2m keys instead of n
