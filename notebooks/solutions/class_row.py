"""Solution to notebook 06's exercise: what ECP's class row (i = 63, m = 16) sees."""


def class_row(i=63, m=16, layers=2):
    t = i // m  # the class row lies in half segment 3
    first_pixel = m * max(0, t - layers)  # 16: pixels 0..15, the top two rows of the 8 x 8 image, are unseen
    layers_needed = t  # m * max(0, t - k) = 0 once k >= t = 3
    return first_pixel, layers_needed
