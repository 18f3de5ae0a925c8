"""Every architecture, two independent roads: the explicit blockwise code vs a dense masked O(n^2)
attention built from the *declared* pattern. Plus gradients, float32, and extreme inputs."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import example_config, model_configs, random_qkv

import minicp
from minicp.config import ARCHITECTURES
from minicp.nn import ops
from minicp.nn.attention import module, patterns
from minicp.nn.reference import dense_attention


def layer_cases(cfg):
    """(layer, n, pattern args) for every distinct layer kind of a config."""
    mod = module(cfg.arch)
    kinds = {}
    for layer in range(cfg.layers):
        args = mod.pattern_kwargs(cfg, layer)
        kinds.setdefault((cfg.stream_len(layer), tuple(sorted(args.items()))), (layer, cfg.stream_len(layer), args))
    return list(kinds.values())


def dense_mask(cfg, n, args):
    return np.stack([p.mask() for p in patterns(cfg.arch, n, cfg.heads, **args)])  # (h, n, n)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@given(data=st.data())
def test_explicit_equals_dense_reference(arch, data):
    cfg = data.draw(model_configs(arch=arch, layers=2))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    for layer, n, args in layer_cases(cfg):
        q, k, v = random_qkv(rng, 2, cfg.heads, n, 3)
        explicit = module(arch).attention(q, k, v, **args)
        reference = dense_attention(q, k, v, dense_mask(cfg, n, args))
        assert explicit.shape == reference.shape
        np.testing.assert_allclose(explicit, reference, rtol=1e-12, atol=1e-12, err_msg=f"{cfg} layer {layer}")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_head_level_api_dispatches(arch):
    cfg = example_config(arch)
    n, args = cfg.stream_len(0), module(arch).pattern_kwargs(cfg, 0)
    q, k, v = random_qkv(np.random.default_rng(0), 1, cfg.heads, n, 4)
    np.testing.assert_array_equal(minicp.attention(arch, q, k, v, **args), module(arch).attention(q, k, v, **args))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_attention_gradients_float64(arch):
    cfg = example_config(arch)
    rng = np.random.default_rng(1)
    for layer, n, args in layer_cases(cfg):
        q, k, v = random_qkv(rng, 1, cfg.heads, n, 3)
        f = lambda q, k, v: anp.sum(anp.sin(module(arch).attention(q, k, v, **args)))
        check_grads(f, modes=["rev"], order=1)(q, k, v)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_rows_are_convex_combinations_of_visible_values(arch):
    """softmax rows sum to 1: attending to v = 1 everywhere gives exactly 1 (up to rounding)."""
    cfg = example_config(arch)
    n, args = cfg.stream_len(0), module(arch).pattern_kwargs(cfg, 0)
    q, k, _ = random_qkv(np.random.default_rng(2), 1, cfg.heads, n, 4)
    ones = np.ones_like(k)
    np.testing.assert_allclose(module(arch).attention(q, k, ones, **args), 1.0, rtol=1e-13)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_float32_agrees_with_float64_and_huge_scores_stay_finite(arch):
    cfg = example_config(arch)
    n, args = cfg.stream_len(0), module(arch).pattern_kwargs(cfg, 0)
    q, k, v = random_qkv(np.random.default_rng(3), 2, cfg.heads, n, 8)
    out64 = module(arch).attention(q, k, v, **args)
    out32 = module(arch).attention(*(a.astype(np.float32) for a in (q, k, v)), **args)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    huge = module(arch).attention(q * 1e4, k, v, **args)  # logits of order 1e4: softmax saturates
    assert np.isfinite(huge).all()
    np.testing.assert_array_less(np.abs(huge), np.abs(v).max() + 1e-9)


@pytest.mark.parametrize("arch", ["ecp", "s_split", "longlora"])
def test_sparse_architectures_never_build_an_n_by_n_matrix(arch):
    kw = {
        "ecp": dict(seq_len=64, half_segment=8),
        "s_split": dict(seq_len=64, latent=8, split=8),
        "longlora": dict(seq_len=64, group=8),
    }[arch]
    cfg = minicp.ModelConfig(arch=arch, vocab=11, dim=4, heads=2, layers=1, **kw)
    q, k, v = random_qkv(np.random.default_rng(4), 1, 2, 64, 2)
    with ops.record_scores() as shapes:
        module(arch).attention(q, k, v, **module(arch).pattern_kwargs(cfg, 0))
    biggest = max(s[-2] * s[-1] for s in shapes)
    if arch == "s_split":  # the latent rows see all keys: L x n = 8 x 64
        assert biggest <= 8 * 64
    else:
        assert biggest <= 16 * 16
