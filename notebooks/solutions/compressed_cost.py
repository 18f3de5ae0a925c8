"""Solution to notebook 01's Compressed exercise: score entries per head, layer 0 and later layers."""


def compressed_cost(n, latent, compressed):
    history = n - latent
    first = latent * n + history * history  # layer 0 is Double Attention over n tokens
    later = latent * (compressed + latent) + compressed * compressed  # Double Attention over p slots + L latents
    return first, later
