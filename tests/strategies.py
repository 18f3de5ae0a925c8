"""Hypothesis strategies for small, valid minicp configurations of every architecture."""

import numpy as np
from hypothesis import strategies as st

from minicp.config import ARCHITECTURES, ModelConfig


@st.composite
def model_configs(draw, arch=None, layers=None, causal_only=False):
    """A tiny ModelConfig (float64-friendly sizes): any architecture, random valid pattern sizes."""
    arch = arch or draw(st.sampled_from(ARCHITECTURES))
    heads = 2 if arch == "longlora" else draw(st.sampled_from([1, 2]))
    head_dim = draw(st.sampled_from([2, 4]))
    layers = layers or draw(st.integers(1, 3))
    kw = dict(arch=arch, vocab=11, dim=heads * head_dim, heads=heads, layers=layers)
    if arch == "transformer":
        kw["seq_len"] = draw(st.integers(1, 12))
    elif arch == "ecp":
        m = draw(st.integers(1, 4))
        partial = draw(st.booleans())
        blocks = draw(st.integers(2, 4))
        extra = draw(st.integers(1, m - 1)) if partial and m > 1 else 0
        kw.update(seq_len=blocks * m + extra, half_segment=m, partial_segments=partial)
    elif arch == "longlora":
        u = draw(st.integers(1, 3))
        groups = draw(st.integers(1, 4))
        kw.update(seq_len=2 * u * groups, group=2 * u, shift=draw(st.sampled_from(["varlen", "roll"])))
    else:
        n = draw(st.integers(3, 12))
        latent = draw(st.integers(1, n - 1))
        history = n - latent
        kw.update(seq_len=n, latent=latent)
        if arch == "compressed":
            kw["compressed"] = draw(st.integers(1, history))
            kw["compressed_residual"] = draw(st.sampled_from(["official", "paper"]))
        if arch == "s_split":
            kw["split"] = draw(st.sampled_from([c for c in range(1, history + 1) if history % c == 0]))
    if arch != "longlora":
        kw["separate_kv"] = draw(st.booleans()) if not causal_only else False
    return ModelConfig(**kw)


def random_qkv(rng, b, h, n, d, dtype=np.float64):
    return tuple(rng.standard_normal((b, h, n, d)).astype(dtype) for _ in range(3))


def example_config(arch, layers=2, **overrides):
    """One fixed, small, non-trivial config per architecture (for tests that need no search)."""
    sizes = {
        "transformer": dict(seq_len=8),
        "perceiver_ar": dict(seq_len=10, latent=4),
        "double": dict(seq_len=10, latent=4),
        "compressed": dict(seq_len=10, latent=4, compressed=3),
        "s_split": dict(seq_len=10, latent=4, split=3),
        "ecp": dict(seq_len=12, half_segment=3),
        "longlora": dict(seq_len=12, group=4),
    }[arch]
    return ModelConfig(**{**dict(arch=arch, vocab=11, dim=8, heads=2, layers=layers), **sizes, **overrides})


# one small, valid head-level pattern per architecture (sizes and pattern arguments)
HEAD_CASES = {
    "transformer": dict(seq_len=12, heads=2),
    "ecp": dict(seq_len=16, heads=2, half_segment=4),
    "perceiver_ar": dict(seq_len=12, heads=2, latent=5),
    "double": dict(seq_len=12, heads=2, latent=5),
    "s_split": dict(seq_len=12, heads=2, latent=6, split=3),
    "compressed": dict(seq_len=12, heads=2, latent=5, compressed=3),
    "longlora": dict(seq_len=16, heads=4, group=4, shift="roll"),
}
