"""Solution to notebook 03's last exercise: ECP's computed attention steps for a whole model (Table 8's row)."""


def ecp_steps(n, layers, heads, m):
    per_head_and_layer = m * (2 * n - m)  # half segment 0: m x m; every other: m x 2m
    return layers * heads * per_head_and_layer
