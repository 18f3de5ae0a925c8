"""Solution to notebook 02's third exercise: what row i of s-Split sees, after any number of layers."""


def s_split_field(i, n, latent, split):
    history = n - latent
    if i < history:  # a history row: its own segment, both ways, and never more (only latents mix segments)
        start = split * (i // split)
        return start, start + split - 1
    return 0, i  # a latent row reads every history key and the latents up to itself
