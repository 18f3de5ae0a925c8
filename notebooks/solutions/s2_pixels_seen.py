"""Solution to notebook 06's second exercise: how many pixels LongLoRA S2 varlen's class row sees."""


def s2_pixels_seen(n, g, layers):
    # the last row's group starts g = 2u back after one layer, each further layer reaches u further
    u = g // 2
    return min(n, (layers + 1) * u)
