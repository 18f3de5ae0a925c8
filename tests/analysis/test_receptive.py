"""Tests for minicp.analysis.receptive: receptive fields from the declared patterns vs the model's Jacobian.

(a) analytic (interval arithmetic) == empirical (autograd Jacobian, float64, exact zeros) for every
    architecture and variant (LongLoRA roll and varlen, Compressed with both residuals, ECP partial),
    several configs, k = 1..4;
(b) interval arithmetic == dense boolean-matrix composition for random configs (hypothesis), k = 0..5;
(c) the closed forms of docs/receptive-fields.md, at small n for every row and at Table 8's n = 4096 for ECP and S2;
(d) speed: n = 4096 with 48 layers for every architecture (the target is < 1 s; asserted generously);
(e) the ReceptiveField API and ValueError naming the parameter.
"""

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import example_config, model_configs

from minicp.analysis.receptive import (
    ReceptiveField,
    closed_form,
    empirical_receptive_field,
    influence,
    receptive_field,
    receptive_field_by_layer,
)
from minicp.config import ARCHITECTURES, ModelConfig
from minicp.nn.model import init_params

SMALL = dict(vocab=11, dim=8, heads=2, layers=4)

# (id, config): every architecture, every variant the brief names
CONFIGS = [
    ("transformer", ModelConfig(arch="transformer", seq_len=16, **SMALL)),
    ("perceiver_ar", ModelConfig(arch="perceiver_ar", seq_len=16, latent=6, **SMALL)),
    ("perceiver_ar-L1", ModelConfig(arch="perceiver_ar", seq_len=12, latent=1, **SMALL)),
    ("double", ModelConfig(arch="double", seq_len=16, latent=6, **SMALL)),
    ("compressed-official", ModelConfig(arch="compressed", seq_len=18, latent=6, compressed=4, **SMALL)),
    (
        "compressed-paper",
        ModelConfig(arch="compressed", seq_len=18, latent=6, compressed=4, compressed_residual="paper", **SMALL),
    ),
    ("s_split", ModelConfig(arch="s_split", seq_len=18, latent=6, split=4, **SMALL)),
    ("ecp", ModelConfig(arch="ecp", seq_len=24, half_segment=4, **SMALL)),
    ("ecp-partial", ModelConfig(arch="ecp", seq_len=20, half_segment=3, partial_segments=True, **SMALL)),
    ("longlora-varlen", ModelConfig(arch="longlora", seq_len=24, group=4, **SMALL)),
    ("longlora-roll", ModelConfig(arch="longlora", seq_len=24, group=4, shift="roll", **SMALL)),
    ("longlora-roll-4heads", ModelConfig(arch="longlora", seq_len=16, group=8, shift="roll", **dict(SMALL, heads=4))),
]


# ---------------------------------------------------------------------------------- (a) vs autograd


@pytest.mark.parametrize("cfg", [c for _, c in CONFIGS], ids=[i for i, _ in CONFIGS])
def test_analytic_equals_jacobian(cfg):
    params = init_params(cfg, seed=3, dtype="float64")
    for k in range(1, 5):
        analytic = receptive_field(cfg, layers=k)
        empirical = empirical_receptive_field(params, cfg, layers=k, seed=k)
        assert analytic == empirical, f"{cfg.arch} k={k}:\n" + "\n".join(
            f"  analytic {analytic.describe(r)}   jacobian {empirical.describe(r)}"
            for r in range(analytic.rows)
            if analytic.intervals(r) != empirical.intervals(r)
        )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=model_configs(layers=3), seed=st.integers(0, 100))
def test_analytic_equals_jacobian_random_configs(cfg, seed):
    """Random sizes, separate K/V or K = V, both Compressed residuals, ECP partial, S2 roll/varlen."""
    params = init_params(cfg, seed=seed, dtype="float64")
    for k in (1, 2, 3):
        assert receptive_field(cfg, layers=k) == empirical_receptive_field(params, cfg, layers=k, seed=seed)


def test_jacobian_accepts_float32_params_and_given_tokens():
    cfg = example_config("ecp", layers=2)
    params = init_params(cfg, seed=0)  # float32: influence casts to float64
    tokens = np.arange(cfg.seq_len) % cfg.vocab
    mag = influence(params, cfg, layers=2, tokens=tokens)
    assert mag.shape == (cfg.seq_len, cfg.seq_len) and mag.dtype == np.float64
    assert (mag[np.triu_indices(cfg.seq_len, 1)] == 0).all()  # causal: exact zeros above the diagonal
    assert empirical_receptive_field(params, cfg, tokens=tokens[None]) == receptive_field(cfg)


# ------------------------------------------------------------------------ (b) vs dense composition


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=model_configs(), k=st.integers(0, 5))
def test_intervals_equal_dense_composition(cfg, k):
    fast = receptive_field_by_layer(cfg, layers=k)
    dense = receptive_field_by_layer(cfg, layers=k, method="dense")
    assert len(fast) == len(dense) == k + 1
    for j, (a, b) in enumerate(zip(fast, dense)):
        assert a == b, f"k={j}"
        assert a.layers == j
        if j >= 1:
            for r in range(a.rows):
                assert a.intervals(r) == closed_form(cfg, r, j), a.describe(r)


def test_zero_layers_is_identity():
    rf = receptive_field("ecp", seq_len=16, half_segment=4, layers=0)
    assert rf.lo.tolist() == rf.hi.tolist() == list(range(16))


# ------------------------------------------------------------------------------ (c) closed forms


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_closed_forms_small(arch):
    for cfg in (
        example_config(arch, layers=5),
        example_config(arch, layers=5, seq_len=24)
        if arch in ("transformer", "ecp", "longlora")
        else example_config(arch, layers=5, seq_len=16),
    ):
        for k in range(1, 6):
            rf = receptive_field(cfg, layers=k)
            assert [rf.intervals(r) for r in range(rf.rows)] == [closed_form(cfg, r, k) for r in range(rf.rows)]


def test_ecp_table8_closed_form_and_saturation():
    cfg = ModelConfig.preset("table8-ecp")  # n 4096, s 256 -> m 128, 48 layers
    m, n = cfg.half_segment, cfg.seq_len
    i = np.arange(n)
    by_layer = receptive_field_by_layer(cfg)
    for k in (1, 2, 3, 10, 30, 31, 48):
        rf = by_layer[k]
        np.testing.assert_array_equal(rf.lo, m * np.maximum(0, i // m - k))
        np.testing.assert_array_equal(rf.hi, i)
        assert rf.sizes()[-1] == min(n, (k + 1) * m)  # the last token sees min(n, (k+1) m)
    # docs/receptive-fields.md#ecp: 31 layers before the last token sees everything
    assert not by_layer[30].sees_all_past()[-1] and by_layer[31].sees_all_past().all()
    assert not any(rf.sees_future().any() for rf in by_layer)


def test_ecp_equals_s2_varlen_with_g_2m():
    for k in (1, 2, 5):
        ecp = receptive_field("ecp", seq_len=96, half_segment=8, layers=k)
        s2 = receptive_field("longlora", seq_len=96, group=16, shift="varlen", layers=k)
        assert ecp == s2


def test_s2_roll_leaks_future_into_the_first_rows():
    n, g, u = 4096, 256, 128
    for k in (1, 2, 5):
        rf = receptive_field("longlora", seq_len=n, group=g, shift="roll", layers=k)
        leak = rf.sees_future()
        np.testing.assert_array_equal(leak, np.arange(n) < k * u)  # docs/receptive-fields.md: rows i < k u leak
        assert rf.intervals(0) == [(0, 0), (n - k * u, n - 1)]
        assert rf.num_intervals().max() == 2


def test_perceiver_family_rows_and_positions():
    cfg = ModelConfig(arch="perceiver_ar", seq_len=4096, latent=2048, layers=48)
    rf = receptive_field(cfg)
    np.testing.assert_array_equal(rf.positions, np.arange(2048, 4096))
    np.testing.assert_array_equal(rf.hi, rf.positions)
    assert (rf.lo == 0).all()
    cmp = receptive_field(ModelConfig(arch="compressed", seq_len=64, latent=16, compressed=8), layers=3)
    assert (cmp.positions[:8] == -1).all() and cmp.positions[8:].tolist() == list(range(48, 64))
    assert all(cmp.intervals(r) == [(0, 47)] for r in range(8))  # slots: the whole history
    hist = receptive_field(ModelConfig(arch="s_split", seq_len=64, latent=16, split=12), layers=7)
    assert hist.intervals(13) == [(12, 23)]  # never grows past its segment


# ---------------------------------------------------------------------------------------- (d) speed


def test_speed_n4096_48_layers_every_architecture():
    t8 = {a: ModelConfig.preset(f"table8-{a}") for a in ARCHITECTURES}
    worst = 0.0
    for arch, cfg in t8.items():
        variants = [cfg, cfg.replace(shift="roll")] if arch == "longlora" else [cfg]
        for c in variants:
            start = time.perf_counter()
            rf = receptive_field(c)
            worst = max(worst, time.perf_counter() - start)
            assert rf.layers == 48 and rf.n == 4096
    assert worst < 5.0, f"slowest architecture took {worst:.2f} s (target < 1 s; benchmarks/receptive.py)"


# --------------------------------------------------------------------------------- (e) API, errors


def test_api():
    rf = receptive_field("longlora", seq_len=16, group=4, shift="roll", layers=1)
    assert rf.rows == 16 and rf.n == 16
    assert rf.intervals(0) == [(0, 0), (14, 15)] and rf.intervals(-1) == [(12, 15)]
    assert rf.describe(0) == "row 0 (token 0): [0, 0] U [14, 15]"
    mask = rf.mask()
    assert mask.shape == (16, 16) and mask.sum() == rf.sizes().sum()
    assert ReceptiveField.from_mask(mask, rf.positions) == rf
    with pytest.raises(ValueError, match="lo/hi"):
        rf.lo
    with pytest.raises(ValueError, match="row"):
        rf.intervals(16)
    with pytest.raises(ValueError, match="max_entries"):
        rf.mask(max_entries=10)
    assert "longlora" in repr(rf)
    assert rf != receptive_field("longlora", seq_len=16, group=4, layers=1)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: receptive_field("nope", seq_len=8, layers=1), "config_or_arch"),
        (lambda: receptive_field("ecp", layers=1), "seq_len"),
        (lambda: receptive_field("ecp", seq_len=16), "layers"),
        (lambda: receptive_field("ecp", seq_len=16, layers=-1), "layers"),
        (lambda: receptive_field("ecp", seq_len=16, layers=1.5), "layers"),
        (lambda: receptive_field("ecp", seq_len=16, layers=1, heads=0), "heads"),
        (lambda: receptive_field("ecp", seq_len=16, half_segment=5, layers=1), "half_segment"),
        (lambda: receptive_field("longlora", seq_len=16, group=3, layers=1), "group"),
        (lambda: receptive_field("s_split", seq_len=16, latent=6, split=3, layers=1), "split"),
        (lambda: receptive_field("ecp", seq_len=16, half_segment=4, layers=1, method="magic"), "method"),
        (lambda: receptive_field("transformer", seq_len=4096, layers=1, method="dense"), "dense"),
        (lambda: receptive_field(example_config("ecp"), seq_len=16), "seq_len"),
        (lambda: closed_form(example_config("ecp"), 99, 1), "row"),
        (lambda: closed_form(example_config("ecp"), 0, 0), "layers"),
        (lambda: closed_form("ecp", 0, 1), "config"),
        (lambda: influence({}, example_config("ecp")), "params"),
        (lambda: influence(init_params(example_config("ecp")), example_config("ecp"), layers=3), "layers"),
        (lambda: influence(init_params(example_config("ecp")), example_config("ecp"), tokens=[1, 2]), "tokens"),
        (lambda: influence(init_params(example_config("ecp")), example_config("ecp"), chunk=0), "chunk"),
        (lambda: influence(init_params(example_config("ecp")), "ecp"), "config"),
        (lambda: ReceptiveField.from_mask(np.zeros(3)), "mask"),
    ],
)
def test_errors_name_the_parameter(call, word):
    with pytest.raises(ValueError, match=word):
        call()
