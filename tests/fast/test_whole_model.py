"""The whole model on the fast engine (``minicp.fast.model``) against the reference (``minicp.nn.model``).

For every architecture, with every parameter random (biases and LayerNorms too), at the paper's head dims
64 and 128 and at odd ones: float64 loss, logits and the gradient of every parameter equal the reference's
to 1e-13 relative (the fast engine changes only the order of summation); float32 logits and loss are as close
to the float64 result as the reference's own float32 ones (within a small factor, or float32 rounding).
"""

import numpy as np
import pytest

import minicp
from minicp.fast import model as F
from minicp.nn import model as M

SIZES = {  # arch: (config fields, batch)
    "transformer": (dict(dim=16, heads=2, seq_len=24), 2),
    "perceiver_ar": (dict(dim=64, heads=1, seq_len=24, latent=8), 2),
    "double": (dict(dim=256, heads=2, seq_len=16, latent=8), 1),
    "compressed": (dict(dim=20, heads=4, seq_len=32, latent=16, compressed=8), 2),
    "s_split": (dict(dim=14, heads=2, seq_len=24, latent=12, split=4), 2),
    "ecp": (dict(dim=128, heads=2, seq_len=32, half_segment=8), 2),
    "longlora": (dict(dim=18, heads=3, seq_len=24, group=8), 2),
}
EXTRA = [("ecp", dict(dim=10, heads=2, seq_len=20, half_segment=5, layers=3), 3)]  # odd head dim, RoPE layer 0 only


def _case(arch, fields, batch, dtype="float64", seed=0):
    cfg = minicp.ModelConfig(arch=arch, vocab=37, **{"layers": 2, **fields})
    rng = np.random.default_rng(seed)
    flat = {k: rng.standard_normal(v.shape) * 0.5 for k, v in M.flatten(M.init_params(cfg, seed=seed)).items()}
    params = M.unflatten({k: v.astype(dtype) for k, v in flat.items()})
    tokens = rng.integers(0, cfg.vocab, (batch, cfg.seq_len + 1))
    return cfg, params, tokens


def _rel(got, want):
    return float(np.abs(np.asarray(got) - want).max() / max(np.abs(want).max(), 1e-300))


CASES = [(arch, *SIZES[arch]) for arch in SIZES] + EXTRA


@pytest.mark.parametrize("arch, fields, batch", CASES, ids=[c[0] + str(i) for i, c in enumerate(CASES)])
def test_fast_model_equals_the_reference_in_float64(arch, fields, batch):
    cfg, params, tokens = _case(arch, fields, batch)
    assert _rel(F.forward(params, tokens[:, :-1], cfg), M.forward(params, tokens[:, :-1], cfg)) <= 1e-13
    (lf, gf), (lr, gr) = F.value_and_grad(params, tokens, cfg), M.value_and_grad(params, tokens, cfg)
    assert _rel(lf, lr) <= 1e-14
    flat_f, flat_r = M.flatten(gf), M.flatten(gr)
    assert flat_f.keys() == flat_r.keys()
    for name in flat_r:
        if np.abs(flat_r[name]).max() == 0:  # a parameter this forward never uses (Compressed's later layers)
            assert np.abs(flat_f[name]).max() == 0, name
            continue
        assert _rel(flat_f[name], flat_r[name]) <= 1e-13, name


@pytest.mark.parametrize("arch", sorted(SIZES))
def test_fast_model_in_float32_is_within_float32_rounding(arch):
    fields, batch = SIZES[arch]
    cfg, params64, tokens = _case(arch, fields, batch, seed=1)
    params32 = M.unflatten({k: v.astype(np.float32) for k, v in M.flatten(params64).items()})
    exact = M.forward(
        M.unflatten({k: v.astype(np.float64) for k, v in M.flatten(params32).items()}), tokens[:, :-1], cfg
    )
    fast, own = F.forward(params32, tokens[:, :-1], cfg), M.forward(params32, tokens[:, :-1], cfg)
    assert fast.dtype == own.dtype == np.float32
    assert _rel(fast, exact) <= max(4 * _rel(own, exact), 64 * np.finfo(np.float32).eps)
    loss32 = float(F.loss(params32, tokens, cfg))
    assert abs(loss32 - float(M.loss(params32, tokens, cfg))) <= 1e-5 * abs(loss32)
