"""Solution to notebook 01's PerceiverAR exercise: score entries per head, layer 0 and later layers."""


def perceiver_cost(n, latent):
    first = latent * n  # layer 0: the L latent rows score all n keys (masked ones included)
    later = latent * latent  # later layers: causal attention over the L latents, an L x L matrix
    return first, later
