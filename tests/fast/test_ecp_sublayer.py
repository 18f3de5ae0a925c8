"""The whole ECP attention sub-layer as one primitive (``minicp.fast.ecp.sublayer``) against the reference's
``minicp.nn.attention.ecp.attention_layer``: values to float64 rounding,
gradients of the stream and of all six projection tensors to 1e-10, check_grads on the primitive, with and
without RoPE (layer 0 has it, layer 1 not), both RoPE styles, the official freqs buffer, one and two
sequences. A gradient sent to the wrong output projection, a missing q scale or RoPE inverted the wrong way
moves a gradient by O(1)."""

import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from minicp import ModelConfig, init_params
from minicp.fast import ecp as E
from minicp.fast import model as fast_model
from minicp.nn.attention import ecp
from minicp.nn.rope import rope_frequencies, rope_tables

NAMES = [("to_q", "weight"), ("to_kv", "weight"), ("to_out_0", "weight"), ("to_out_0", "bias")]
NAMES += [("to_out", "weight"), ("to_out", "bias")]


def _case(b, n, dim, heads, m, layer, style, seed):
    cfg = ModelConfig(arch="ecp", vocab=11, dim=dim, heads=heads, layers=2, seq_len=n, half_segment=m)
    cfg = cfg.replace(rope_style=style)
    p = init_params(cfg, seed=seed, dtype="float64")["layers"][layer][0]["fn"]
    rng = np.random.default_rng(seed)
    for name, key in NAMES:  # every parameter random, biases too
        p[name][key] = rng.standard_normal(p[name][key].shape) * 0.3
    return cfg, p, rng.standard_normal((b, n, dim))


def _with(p, name, key, value):
    return {**p, name: {**p[name], key: value}}


CASES = [(1, 16, 12, 3, 4, 0, "interleaved"), (2, 24, 8, 2, 8, 0, "halves"), (2, 12, 10, 2, 3, 1, "interleaved")]


@pytest.mark.parametrize("b, n, dim, heads, m, layer, style", CASES)
def test_sublayer_equals_the_composition(b, n, dim, heads, m, layer, style):
    cfg, p, x = _case(b, n, dim, heads, m, layer, style, seed=n + dim)
    assert E.sublayer_applies(cfg, n)
    reference = lambda p, x: ecp.attention_layer(p, x, cfg, layer)  # noqa: E731
    fast = lambda p, x: fast_model.attention_layer(p, x, cfg, layer)  # noqa: E731
    want = reference(p, x)
    tables = rope_tables(np.arange(n), dim // heads, x.dtype) if cfg.rope_in_layer(layer) else None
    args = [p[name][key] for name, key in NAMES]
    np.testing.assert_allclose(E.sublayer(x, *args, tables, heads, m, style), want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(fast(p, x), want, rtol=1e-13, atol=1e-14)
    dx = [grad(lambda x, run=run: np.sum(np.sin(run(p, x))))(x) for run in (fast, reference)]
    np.testing.assert_allclose(*dx, rtol=1e-12, atol=1e-14)
    for name, key in NAMES:
        got, want_g = (
            grad(lambda a, run=run: np.sum(np.sin(run(_with(p, name, key, a), x))))(p[name][key])
            for run in (fast, reference)
        )
        np.testing.assert_allclose(got, want_g, rtol=1e-12, atol=1e-14, err_msg=f"{name}.{key}")


def test_check_grads_on_the_primitive():
    cfg, p, x = _case(2, 12, 6, 2, 4, 0, "interleaved", seed=3)
    tables = rope_tables(np.arange(12), 3, x.dtype)
    args = [p[name][key] for name, key in NAMES]
    f = lambda x, *w: E.sublayer(x, *w, tables, 2, 4, "interleaved")  # noqa: E731
    check_grads(f, modes=["rev"], order=1)(x, *args)


def test_official_freqs_buffer_is_used():
    cfg, p, x = _case(1, 16, 8, 2, 4, 0, "interleaved", seed=5)
    p = {**p, "pos_emb": {"freqs": rope_frequencies(4, 10000.0) * 3.0}}  # not the default frequencies
    f = lambda run, p: grad(lambda x: np.sum(np.sin(run(p, x, cfg, 0))))(x)  # noqa: E731
    want = f(ecp.attention_layer, p)
    np.testing.assert_allclose(f(fast_model.attention_layer, p), want, rtol=1e-12, atol=1e-14)
    default = {k: v for k, v in p.items() if k != "pos_emb"}
    assert not np.allclose(want, f(fast_model.attention_layer, default))


def test_other_layouts_run_the_reference_sub_layer():
    base = ModelConfig(arch="ecp", vocab=11, dim=8, heads=2, layers=1, seq_len=16, half_segment=4)
    assert E.sublayer_applies(base, 16)
    assert not E.sublayer_applies(base, 4)  # one half segment: N = 1
    assert not E.sublayer_applies(base.replace(separate_kv=True), 16)
    assert not E.sublayer_applies(base.replace(kv_layernorm=True), 16)
