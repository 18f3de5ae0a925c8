"""Whole-model properties: causality, docs/receptive-fields.md's history rows, gradients, dtypes, parameters."""

import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads
from hypothesis import given
from hypothesis import strategies as st
from strategies import example_config, model_configs

import minicp
from minicp.config import ARCHITECTURES, ModelConfig
from minicp.nn.model import count_params, flatten, forward, init_params, loss, unflatten


def perturb_after(tokens, t, vocab, rng):
    """Copy of tokens whose positions > t are redrawn so that every one of them changes."""
    new = tokens.copy()
    n = tokens.shape[1]
    new[:, t + 1 :] = (tokens[:, t + 1 :] + rng.integers(1, vocab, (tokens.shape[0], n - t - 1))) % vocab
    return new


def row_positions(cfg):
    """Token position of every row of forward's output (-1 for Compressed's p compressed slots)."""
    n = cfg.seq_len
    if cfg.arch == "perceiver_ar":
        return np.arange(cfg.history, n)
    if cfg.arch == "compressed":
        return np.concatenate([-np.ones(cfg.compressed, int), np.arange(cfg.history, n)])
    return np.arange(n)


@given(cfg=model_configs(), data=st.data())
def test_trained_rows_are_causal(cfg, data):
    """Perturbing tokens after t leaves every trained output at or before t bit-identical."""
    if cfg.arch == "longlora" and cfg.shift == "roll":
        return  # leaks by construction: see the next test
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    params = init_params(cfg, seed=data.draw(st.integers(0, 100)), dtype="float64")
    tokens = rng.integers(0, cfg.vocab, (2, cfg.seq_len))
    t = data.draw(st.integers(0, cfg.seq_len - 1))
    before = forward(params, tokens, cfg)
    after = forward(params, perturb_after(tokens, t, cfg.vocab, rng), cfg)
    pos = row_positions(cfg)
    trained = np.zeros(len(pos), bool)
    trained[-cfg.latent :] = True
    check = trained & (pos <= t) & (pos >= 0)
    np.testing.assert_array_equal(after[:, check], before[:, check])
    if t + 1 < cfg.seq_len and check.any():
        assert not np.array_equal(after, before)  # the perturbation did reach the model


def test_longlora_roll_leaks_the_future_and_varlen_does_not():
    """docs/official-code.md#longlora-s2-attn: with the roll shift, tokens 0..u-1 of shifted heads see the last u tokens."""
    for shift, leaks in (("roll", True), ("varlen", False)):
        cfg = example_config("longlora", layers=1, shift=shift)
        params = init_params(cfg, seed=0, dtype="float64")
        tokens = np.random.default_rng(0).integers(0, cfg.vocab, (1, cfg.seq_len))
        changed = perturb_after(tokens, cfg.seq_len - 2, cfg.vocab, np.random.default_rng(1))  # only the last token
        moved = np.abs(forward(params, changed, cfg) - forward(params, tokens, cfg))[0, : cfg.group // 2].max()
        assert (moved > 0) == leaks, shift


@pytest.mark.parametrize("arch,rule", [("double", "history"), ("s_split", "segment"), ("compressed", "slots")])
def test_history_rows_follow_spec_section_8(arch, rule):
    """History rows are bidirectional: Double's see [0, H), s-Split's their own segment, Compressed's slots [0, H)."""
    cfg = example_config(arch, layers=3)
    params = init_params(cfg, seed=1, dtype="float64")
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, cfg.vocab, (1, cfg.seq_len))
    base = forward(params, tokens, cfg)[0]
    H = cfg.history
    for j in range(cfg.seq_len):
        changed = tokens.copy()
        changed[0, j] = (changed[0, j] + 1) % cfg.vocab
        diff = np.abs(forward(params, changed, cfg)[0] - base).max(axis=-1) > 0
        if rule == "history":  # rows 0..H-1 depend on exactly [0, H)
            assert diff[:H].all() == (j < H) and diff[:H].any() == (j < H)
        elif rule == "segment":  # rows of segment s depend on that segment only
            c = cfg.split
            for i in range(H):
                assert diff[i] == (j < H and j // c == i // c), (i, j)
        else:  # slots 0..p-1 depend on [0, H) only
            p = cfg.compressed
            assert diff[:p].any() == (j < H)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_whole_model_gradients_float64(arch):
    cfg = example_config(arch, layers=2, dim=4)
    params = init_params(cfg, seed=3, dtype="float64")
    tokens = np.random.default_rng(3).integers(0, cfg.vocab, (2, cfg.seq_len + 1))
    # perturb the LayerNorms so no parameter sits at a special point
    flat = {
        k: v + 0.1 * np.random.default_rng(4).standard_normal(v.shape) if "norm" in k else v
        for k, v in flatten(params).items()
    }
    check_grads(lambda p: loss(p, tokens, cfg), modes=["rev"], order=1)(unflatten(flat))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_float32_model_agrees_with_float64(arch):
    cfg = example_config(arch)
    tokens = np.random.default_rng(5).integers(0, cfg.vocab, (2, cfg.seq_len))
    l64 = forward(init_params(cfg, seed=5, dtype="float64"), tokens, cfg)
    l32 = forward(init_params(cfg, seed=5, dtype="float32"), tokens, cfg)
    assert l32.dtype == np.float32
    np.testing.assert_allclose(l32, l64, rtol=1e-4, atol=1e-4)
    g = grad(loss)(init_params(cfg, seed=5, dtype="float32"), np.concatenate([tokens, tokens[:, :1]], 1), cfg)
    assert all(np.isfinite(v).all() for v in flatten(g).values())


def test_logits_shapes_and_loss_positions():
    for arch in ARCHITECTURES:
        cfg = example_config(arch)
        logits = forward(init_params(cfg), np.zeros((3, cfg.seq_len), int), cfg)
        assert logits.shape == (3, cfg.out_len, cfg.vocab)
    # the loss scores exactly the last L positions: a model whose logits ignore the input gives log V
    cfg = example_config("ecp")
    params = init_params(cfg)
    params["to_logits"]["1"]["weight"] = params["to_logits"]["1"]["weight"] * 0
    params["to_logits"]["1"]["bias"] = params["to_logits"]["1"]["bias"] * 0
    tokens = np.random.default_rng(0).integers(0, cfg.vocab, (2, cfg.seq_len + 1))
    assert float(loss(params, tokens, cfg)) == pytest.approx(np.log(cfg.vocab), rel=1e-6)


def test_parameter_counts_reproduce_table_2():
    """Table 2: 129.60M / 172.12M / 214.64M (the paper truncates to two decimals)."""
    for layers, printed in ((12, "129.60"), (18, "172.12"), (24, "214.64")):
        n = count_params(ModelConfig.preset(f"table2-ecp-{layers}L"))
        assert f"{int(n / 1e4) / 100:.2f}" == printed
        # docs/official-code.md#ecp-model-size's closed form l(12 D^2 + 11 D + 2 d) + 2 V D + V + 2 D, derived independently
        D, d, V = 768, 128, 28996
        assert n == layers * (12 * D * D + 11 * D + 2 * d) + 2 * V * D + V + 2 * D


def test_init_is_seeded_and_flatten_round_trips():
    cfg = example_config("compressed")
    a, b, c = init_params(cfg, seed=1), init_params(cfg, seed=1), init_params(cfg, seed=2)
    fa, fb, fc = flatten(a), flatten(b), flatten(c)
    assert list(fa) == list(minicp.nn.model.param_spec(cfg))
    assert all(np.array_equal(fa[k], fb[k]) for k in fa)
    assert not np.array_equal(fa["layers.0.0.fn.to_q.weight"], fc["layers.0.0.fn.to_q.weight"])
    assert flatten(unflatten(fa)).keys() == fa.keys()
