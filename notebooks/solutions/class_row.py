"""Solution to notebook 06's last exercise: what ECP's class row (the last row, i = n - 1) sees."""


def class_row(n, m, layers):
    t = (n - 1) // m  # the half segment of the class row
    first_pixel = m * max(0, t - layers)  # row i sees [m max(0, t - k), i]
    layers_needed = t  # m max(0, t - k) = 0 once k >= t
    return first_pixel, layers_needed
