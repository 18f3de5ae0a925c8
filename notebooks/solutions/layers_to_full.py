"""Solution to notebook 02's second exercise: layers until ECP's last token sees token 0."""


def layers_to_full(n, m):
    # row i = n - 1 lies in half segment t = (n - 1) // m and sees from m * max(0, t - k): token 0 once k >= t
    return (n - 1) // m
