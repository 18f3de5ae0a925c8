"""The whole ECP attention sub-layer as one primitive (``fused_attention.ecp_sublayer``) against the
composition of ``ecp.attention_layer`` with the fused primitives switched off: values to float64 rounding,
gradients of the stream and of all six projection tensors to 1e-10, check_grads on the primitive, with and
without RoPE (layer 0 has it, layer 1 not), both RoPE styles, the official freqs buffer, one and two
sequences. A gradient sent to the wrong output projection, a missing q scale or RoPE inverted the wrong way
moves a gradient by O(1)."""

import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads

from minicp import ModelConfig, init_params
from minicp.nn import fused, fused_attention, ops
from minicp.nn.attention import ecp

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
    assert fused_attention.sublayer_applies(cfg, n)
    run = lambda p, x: ecp.attention_layer(p, x, cfg, layer)  # noqa: E731
    with fused.use_fused(False):
        want = run(p, x)
        want_dx = grad(lambda x: np.sum(np.sin(run(p, x))))(x)
    tables = ops.rope_tables(np.arange(n), dim // heads, x.dtype) if cfg.rope_in_layer(layer) else None
    args = [p[name][key] for name, key in NAMES]
    got = fused_attention.ecp_sublayer(x, *args, tables, heads, m, style)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grad(lambda x: np.sum(np.sin(run(p, x))))(x), want_dx, rtol=1e-10, atol=1e-12)
    for name, key in NAMES:
        f = lambda a: np.sum(np.sin(run(_with(p, name, key, a), x)))  # noqa: E731
        got = grad(f)(p[name][key])
        with fused.use_fused(False):
            want_g = grad(f)(p[name][key])
        np.testing.assert_allclose(got, want_g, rtol=1e-10, atol=1e-12, err_msg=f"{name}.{key}")


def test_check_grads_on_the_primitive():
    cfg, p, x = _case(2, 12, 6, 2, 4, 0, "interleaved", seed=3)
    tables = ops.rope_tables(np.arange(12), 3, x.dtype)
    args = [p[name][key] for name, key in NAMES]
    f = lambda x, *w: fused_attention.ecp_sublayer(x, *w, tables, 2, 4, "interleaved")  # noqa: E731
    check_grads(f, modes=["rev"], order=1)(x, *args)


def test_official_freqs_buffer_is_used_and_the_primitive_only_under_autograd(monkeypatch):
    cfg, p, x = _case(1, 16, 8, 2, 4, 0, "interleaved", seed=5)
    p = {**p, "pos_emb": {"freqs": ops.rope_frequencies(4, 10000.0) * 3.0}}  # not the default frequencies
    calls, primitive = [], fused_attention.ecp_sublayer
    monkeypatch.setattr(fused_attention, "ecp_sublayer", lambda *a: calls.append(1) or primitive(*a))
    f = lambda x, p: np.sum(np.sin(ecp.attention_layer(p, x, cfg, 0)))  # noqa: E731
    with fused.use_fused(False):
        want = grad(f)(x, p)
    assert not calls
    np.testing.assert_allclose(grad(f)(x, p), want, rtol=1e-10, atol=1e-12)
    assert calls == [1]  # traced: the primitive; untraced (inference): the composition
    ecp.attention_layer(p, x, cfg, 0)
    assert calls == [1]
    default = {k: v for k, v in p.items() if k != "pos_emb"}
    assert not np.allclose(want, grad(f)(x, default))


def test_other_layouts_keep_the_composition():
    base = ModelConfig(arch="ecp", vocab=11, dim=8, heads=2, layers=1, seq_len=16, half_segment=4)
    assert fused_attention.sublayer_applies(base, 16)
    assert not fused_attention.sublayer_applies(base, 4)  # one half segment: N = 1
    assert not fused_attention.sublayer_applies(base.replace(separate_kv=True), 16)
    assert not fused_attention.sublayer_applies(base.replace(kv_layernorm=True), 16)
