"""Solution to notebook 02's first exercise: ECP's receptive field of row i after k layers, from the closed form."""


def field(i, k, m):
    t = i // m  # the half segment of row i
    return m * max(0, t - k), i  # k half segments back, up to itself
