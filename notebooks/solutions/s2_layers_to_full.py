"""Solution to notebook 02's last exercise: layers until LongLoRA S2 varlen's last token sees token 0."""


def s2_layers_to_full(n, g):
    # the last token's group starts at n - g = n - 2u after one layer; every further layer reaches u = g/2 further:
    # after k layers it sees from n - (k + 1) u, which is 0 once k = n / u - 1
    u = g // 2
    return -(-n // u) - 1
