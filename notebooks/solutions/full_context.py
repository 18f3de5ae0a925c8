"""Solution to notebook 02's exercise: layers until ECP's last token (n = 64, m = 8) sees token 0."""


def layers(n=64, m=8):
    # row i = n - 1 lies in half segment t = (n - 1) // m = 7 and sees from m * max(0, t - k): token 0 once k >= t
    return (n - 1) // m
