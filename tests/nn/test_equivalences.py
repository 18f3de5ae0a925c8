"""Degenerate settings in which two architectures must compute the same thing.

Each equivalence is derived in its docstring from the patterns and the sub-layer rules (docs/official-code.md#architectures);
the tests then check it numerically at model level in float64.
"""

import numpy as np
import pytest

from minicp import ModelConfig, forward, init_params
from minicp.nn.model import flatten, unflatten

BASE = dict(vocab=13, dim=12, heads=3, layers=3)


def _tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, 13, (2, n))


def _rename(params, rename=None, drop=()):
    flat = flatten(params)
    out = {}
    for key, value in flat.items():
        if any(f".fn.{d}." in key for d in drop):
            continue
        for old, new in (rename or {}).items():
            key = key.replace(f".fn.{old}.", f".fn.{new}.")
        out[key] = value
    return unflatten(out)


def test_ecp_with_two_half_segments_is_causal_full_attention():
    """ECP, n = 2m: block 0 is causal on [0, m); block 1's queries m..2m-1 see keys [0, 2m) with
    key <= query, i.e. plain causality. So the attention equals full causal attention, and when
    to_out_0 = to_out the sub-layers coincide; all other conventions (K = V raw, RoPE in layer 0,
    no kv LayerNorm) are shared with minicp's "transformer" (docs/official-code.md#full-attention-ecp-conventions)."""
    ecp = ModelConfig(arch="ecp", seq_len=16, half_segment=8, **BASE)
    full = ModelConfig(arch="transformer", seq_len=16, **BASE)
    params = init_params(ecp, seed=1, dtype="float64")
    for layer in params["layers"]:
        layer[0]["fn"]["to_out_0"] = layer[0]["fn"]["to_out"]
    got = forward(params, _tokens(16), ecp)
    want = forward(_rename(params, drop=("to_out_0",)), _tokens(16), full)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # and with a different to_out_0 only the first half segment's rows change in layer 1
    params2 = init_params(ecp, seed=1, dtype="float64")
    assert not np.allclose(forward(params2, _tokens(16), ecp), want)


@pytest.mark.parametrize("segments", [1, 2])
def test_s_split_with_one_history_segment_is_double(segments):
    """s-Split with c = H: the single history segment is Double's H x H unmasked history block and the
    latent path is identical. Double rotates in every layer, s-Split in layer 0 only, so s-Split
    needs rope_all_layers=True. With c = H/2 the two must differ (history rows lose cross-segment keys)."""
    n, L = 12, 4
    H = n - L
    ssp = ModelConfig(arch="s_split", seq_len=n, latent=L, split=H // segments, rope_all_layers=True, **BASE)
    dbl = ModelConfig(arch="double", seq_len=n, latent=L, **BASE)
    params = init_params(dbl, seed=2, dtype="float64")
    a, b = forward(params, _tokens(n), ssp), forward(params, _tokens(n), dbl)
    if segments == 1:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    else:
        assert not np.allclose(a, b)


def test_compressed_with_identity_projection_is_double():
    """Compressed with p = H, projection_hist = identity (bias 0): layer 0's compressed history equals
    the history attention output, the stream stays n = p + L long, layers >= 1 see [p rows unmasked |
    latent causal] = Double's pattern, and the official residual x[:, :p+L] = x[:, :n] = x. RoPE must be
    in every layer (Double's convention). Then the output projections w_out = to_out make them equal."""
    n, L = 12, 5
    H = n - L
    cmp_cfg = ModelConfig(arch="compressed", seq_len=n, latent=L, compressed=H, rope_all_layers=True, **BASE)
    dbl = ModelConfig(arch="double", seq_len=n, latent=L, **BASE)
    params = init_params(cmp_cfg, seed=3, dtype="float64")
    for layer in params["layers"]:
        layer[0]["fn"]["projection_hist"] = {"weight": np.eye(H), "bias": np.zeros(H)}
    got = forward(params, _tokens(n), cmp_cfg)
    want = forward(_rename(params, {"w_out": "to_out"}, drop=("projection_hist",)), _tokens(n), dbl)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_perceiver_ar_layers_after_the_first_are_causal_full_attention():
    """PerceiverAR layers k >= 1 run plain causal attention over the L latent rows (docs/official-code.md#perceiverar). So a
    PerceiverAR model equals: its own first layer, then a "transformer" of length L with kv LayerNorm
    (PerceiverAR's conventions, docs/official-code.md#full-attention-perceiverar-conventions) on the latent stream. Checked block by block with minicp.nn.model.block."""
    from minicp.nn.model import block

    n, L = 12, 6
    par = ModelConfig(arch="perceiver_ar", seq_len=n, latent=L, **BASE)
    full = ModelConfig(arch="transformer", seq_len=L, kv_layernorm=True, **BASE)
    params = init_params(par, seed=4, dtype="float64")
    x = params["token_emb"]["weight"][_tokens(n)]
    x = block(params["layers"][0], x, par, 0)  # (b, L, D)
    renamed = _rename(params, {"w_out": "to_out"})
    for k in (1, 2):
        # transformer "layer 1" has no RoPE, like PerceiverAR's layers k >= 1
        np.testing.assert_allclose(
            block(params["layers"][k], x, par, k), block(renamed["layers"][k], x, full, k), rtol=1e-12, atol=1e-12
        )
        x = block(params["layers"][k], x, par, k)
    assert x.shape == (2, L, BASE["dim"])
