"""Solution to notebook 03's exercise: ECP's computed attention steps at Table 8's size."""


def steps(n=4096, layers=48, heads=24, m=128):
    per_head_and_layer = m * (2 * n - m)  # half segment 0: m x m; every other: m x 2m
    return layers * heads * per_head_and_layer
