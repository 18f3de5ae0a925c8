"""Every public entry point is bounded: an absurd request fails in well under a second with a ValueError that
names the computed size, the limit (by its name in minicp.validate) and how to raise it; the estimates behind
the bounds agree with closed forms counted elsewhere and with the memory the calls really take."""

import importlib
import re
import time
import tracemalloc

import numpy as np
import pytest

import minicp
from minicp import ModelConfig, validate
from minicp.analysis.steps import count_attention_steps
from minicp.lm.train import TrainConfig, train
from minicp.nn import attention as attention_module
from minicp.nn import budget
from minicp.nn.attention import pattern
from minicp.nn.model import count_params, forward, loss, value_and_grad
from minicp.testing import assert_matches_reference
from minicp.testing.reference import reference_case

BIG_N = ModelConfig(arch="transformer", vocab=16, dim=8, heads=2, layers=1, seq_len=2**17)
SMALL = ModelConfig(arch="ecp", vocab=16, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)


@pytest.fixture(scope="module")
def big_n_params():
    return minicp.init_params(BIG_N)


def _absurd(big_n_params):
    p = minicp.init_params(SMALL)
    long_tokens = np.zeros((1, BIG_N.seq_len + 1), np.int64)
    q = np.ones((1, 1, 2**17, 4), np.float32)
    return {
        "MAX_GENERATED_TOKENS": lambda: minicp.generate(p, [1], SMALL, 10**7),
        "MAX_PARAMS": lambda: minicp.init_params(ModelConfig.preset("table8-ecp")),
        "MAX_ACTIVATION_BYTES forward": lambda: forward(big_n_params, long_tokens[:, :-1], BIG_N),
        "MAX_ACTIVATION_BYTES loss": lambda: loss(big_n_params, long_tokens, BIG_N),
        "MAX_ACTIVATION_BYTES value_and_grad": lambda: value_and_grad(big_n_params, long_tokens, BIG_N),
        "MAX_ACTIVATION_BYTES train": lambda: train(
            BIG_N, np.zeros(10, np.int64), TrainConfig(batch=1), progress=False
        ),
        "MAX_ACTIVATION_BYTES attention": lambda: minicp.attention("transformer", q, q, q),
        "MAX_ACTIVATION_BYTES generate": lambda: minicp.generate(big_n_params, [1], BIG_N, 1),
        "MAX_BATCH forward": lambda: forward(p, np.zeros((10**5, 8), np.int64), SMALL),
        "MAX_BATCH TrainConfig": lambda: TrainConfig(batch=10**9),
        "MAX_ACTIVATION_BYTES assert_matches_reference": lambda: assert_matches_reference(
            lambda q, k, v: q, "ecp", seq_len=16, heads=10**6, head_dim=64, half_segment=4
        ),
        "MAX_ACTIVATION_BYTES reference_case": lambda: reference_case(
            "ecp", seq_len=16, heads=10**6, head_dim=64, half_segment=4
        ),
        "MAX_SCORE_ENTRIES reference_case": lambda: reference_case("transformer", seq_len=2**16, heads=64, head_dim=1),
    }


CASES = [
    "MAX_GENERATED_TOKENS",
    "MAX_PARAMS",
    "MAX_ACTIVATION_BYTES forward",
    "MAX_ACTIVATION_BYTES loss",
    "MAX_ACTIVATION_BYTES value_and_grad",
    "MAX_ACTIVATION_BYTES train",
    "MAX_ACTIVATION_BYTES attention",
    "MAX_ACTIVATION_BYTES generate",
    "MAX_BATCH forward",
    "MAX_BATCH TrainConfig",
    "MAX_ACTIVATION_BYTES assert_matches_reference",
    "MAX_ACTIVATION_BYTES reference_case",
    "MAX_SCORE_ENTRIES reference_case",
]


@pytest.mark.parametrize("case", CASES)
def test_absurd_requests_fail_at_once_naming_size_limit_and_remedy(case, big_n_params):
    call = _absurd(big_n_params)[case]
    limit = case.split()[0]
    start = time.perf_counter()
    with pytest.raises(ValueError) as e:
        call()
    assert time.perf_counter() - start < 1
    message = str(e.value)
    value = getattr(validate, limit)
    assert f"more than the limit of {value:,} ({limit})" in message, message
    assert f"raise minicp.validate.{limit} to allow it" in message, message
    assert "this request needs" in message


def test_a_limit_is_raised_by_assigning_it(monkeypatch):
    count = count_params(SMALL)
    monkeypatch.setattr(validate, "MAX_PARAMS", count - 1)
    with pytest.raises(ValueError, match=f"needs {count:,} units of parameters"):
        minicp.init_params(SMALL)
    monkeypatch.setattr(validate, "MAX_PARAMS", count)
    minicp.init_params(SMALL)


def _refused(call, size, what, limit):
    """``call`` raises, in under a second, the ValueError of ``minicp.validate.bounded`` naming ``size`` units of
    ``what``, ``limit`` and how to raise it; returns the message."""
    start = time.perf_counter()
    with pytest.raises(ValueError) as e:
        call()
    assert time.perf_counter() - start < 1
    message = str(e.value)
    assert f"this request needs {size:,} units of {what}, more than the limit of {limit:,} (" in message, message
    assert re.search(r"raise minicp\.[a-z.]+\.MAX_[A-Z_]+ to allow it$", message), message
    return message


def test_generate_bounds_its_windows_activations(big_n_params):
    """One new token for one prompt passes the token and work bounds, but the windows' forward passes (estimated
    at the full seq_len 2^17 of BIG_N, about 384 GiB) are over MAX_ACTIVATION_BYTES."""
    assert 1 * 1 <= validate.MAX_GENERATED_TOKENS and 1 * 1 * BIG_N.seq_len <= validate.MAX_WORK
    size, limit = budget.activation_bytes(BIG_N, 1, BIG_N.seq_len), validate.MAX_ACTIVATION_BYTES
    assert size > limit
    start = time.perf_counter()
    with pytest.raises(ValueError) as e:
        minicp.generate(big_n_params, [1], BIG_N, 1)
    assert time.perf_counter() - start < 1
    message = str(e.value)
    assert f"needs {size:,} units of bytes of activations (about 384.1 GiB for transformer on batch 1 x " in message
    assert f"{BIG_N.seq_len} tokens, dim 8, heads 2, layers 1), more than the limit of {limit:,}" in message, message
    assert "(MAX_ACTIVATION_BYTES); use a smaller batch or sequence, or raise minicp.validate.MAX_ACTIVATION_BYTES" in (
        message
    )


def test_generate_bounds_tokens_times_seq_len(big_n_params):
    """2^16 new tokens for one prompt is exactly MAX_GENERATED_TOKENS (accepted), but each sees a window of
    seq_len 2^17: 2^33 generated tokens x seq_len, over MAX_WORK = 2^31. Reachable with the default limits
    whenever seq_len > MAX_WORK / MAX_GENERATED_TOKENS = 2^15."""
    tokens = validate.MAX_GENERATED_TOKENS
    message = _refused(
        lambda: minicp.generate(big_n_params, [1], BIG_N, tokens),
        tokens * BIG_N.seq_len,
        "generated tokens x seq_len",
        validate.MAX_WORK,
    )
    assert message.startswith("max_new_tokens: ") and "MAX_GENERATED_TOKENS" not in message, message


def test_train_config_bounds_steps():
    _refused(lambda: TrainConfig(steps=10**9 + 1), 10**9 + 1, "optimiser steps", 10**9)
    assert TrainConfig(steps=10**9).steps == 10**9


@pytest.mark.parametrize(
    "call",
    [
        lambda: minicp.patterns("transformer", 2**20 + 1),
        lambda: minicp.patterns("longlora", 2**20 + 1, heads=2, group=64),
        lambda: pattern("ecp", 2**20 + 1, half_segment=4),
    ],
    ids=["patterns", "patterns longlora", "pattern"],
)
def test_patterns_bound_positions(call):
    """MAX_POSITIONS (minicp.nn.attention): a pattern of more than 2^20 positions is refused before it is built."""
    assert attention_module.MAX_POSITIONS == 2**20
    _refused(call, 2**20 + 1, "positions", 2**20)


def test_patterns_bound_query_rows_over_all_heads():
    """n x heads at most 16 MAX_POSITIONS = 2^24 query rows: 2^10 positions x (2^14 + 1) heads are refused."""
    heads = 2**14 + 1
    _refused(
        lambda: minicp.patterns("transformer", 2**10, heads=heads), 2**10 * heads, "query rows over all heads", 2**24
    )
    _refused(
        lambda: minicp.patterns("longlora", 2**10, heads=heads + 1, group=64),
        2**10 * (heads + 1),
        "query rows over all heads",
        2**24,
    )


def test_patterns_read_max_positions_at_every_call(monkeypatch):
    """The bounds are strict and read MAX_POSITIONS when called: lowered to 8, 8 positions x 16 heads pass and
    9 positions, or 8 x 17 heads, are refused."""
    monkeypatch.setattr(attention_module, "MAX_POSITIONS", 8)
    assert len(minicp.patterns("transformer", 8, heads=16)) == 16
    _refused(lambda: minicp.patterns("transformer", 9), 9, "positions", 8)
    _refused(lambda: minicp.patterns("transformer", 8, heads=17), 8 * 17, "query rows over all heads", 8 * 16)


def test_receptive_field_bounds_the_dense_method():
    """method='dense' multiplies n x n boolean matrices, l n^3 updates: at most 32 MAX_WORK = 2^36. seq_len 2048
    (the dense method's largest) and 9 layers: 9 x 2^33, refused."""
    _refused(
        lambda: minicp.receptive_field("transformer", seq_len=2048, layers=9, method="dense"),
        9 * 2048**3,
        "layer x row updates",
        2**36,
    )


@pytest.mark.parametrize(
    "module, name, low, call",
    [
        (validate, "MAX_WORK", 100, lambda: minicp.attention_mask("transformer", 16)),  # 256 mask entries
        (validate, "MAX_STEPS", 5, lambda: TrainConfig(steps=10)),
        (
            "minicp.analysis.counts",
            "MAX_LISTED_LAYERS",
            2,
            lambda: minicp.count_attention_steps("ecp", seq_len=64, layers=4, per_layer=True),
        ),
        (
            "minicp.analysis.analytic",
            "MAX_LAYER_ROWS",
            100,
            lambda: minicp.receptive_field("transformer", seq_len=64, layers=2),
        ),
    ],
    ids=["MAX_WORK", "MAX_STEPS", "MAX_LISTED_LAYERS", "MAX_LAYER_ROWS"],
)
def test_every_limit_is_named_and_read_at_every_call(monkeypatch, module, name, low, call):
    """The message names the limit's attribute and how to raise it, and the attribute is read at every call:
    lowered, a small request is refused; restored, the same request runs."""
    module = importlib.import_module(module) if isinstance(module, str) else module
    monkeypatch.setattr(module, name, low)
    with pytest.raises(
        ValueError,
        match=rf"more than the limit of {low} \({name}\); .*raise {re.escape(module.__name__)}\.{name} to allow it$",
    ):
        call()
    monkeypatch.undo()
    call()


def test_empty_batches_are_clear_errors():
    p = minicp.init_params(SMALL)
    empty = np.zeros((0, 9), np.int64)
    for call in (
        lambda: loss(p, empty, SMALL),
        lambda: value_and_grad(p, empty, SMALL),
        lambda: forward(p, empty[:, :-1], SMALL),
    ):
        with pytest.raises(ValueError, match=r"empty batch \(shape \(0, [89]\)\)"):
            call()


# ---- the estimates ---------------------------------------------------------------------------------

CONFIGS = [
    ModelConfig(arch="transformer", seq_len=64),
    ModelConfig(arch="perceiver_ar", seq_len=64, latent=16),
    ModelConfig(arch="perceiver_ar", seq_len=64, latent=64),
    ModelConfig(arch="double", seq_len=64, latent=24),
    ModelConfig(arch="compressed", seq_len=64, latent=24, compressed=8),
    ModelConfig(arch="s_split", seq_len=64, latent=32, split=8),
    ModelConfig(arch="ecp", seq_len=64, half_segment=8),
    ModelConfig(arch="ecp", seq_len=60, half_segment=8, partial_segments=True),
    ModelConfig(arch="longlora", seq_len=64, group=16),
    ModelConfig(arch="longlora", seq_len=64, group=16, shift="roll"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.arch)
def test_score_entries_equal_the_step_counts(cfg):
    cfg = cfg.replace(layers=3, heads=2, dim=8)
    per_layer = count_attention_steps(cfg, per_layer=True)
    ours = [cfg.heads * budget.score_entries(cfg, cfg.seq_len, k) for k in range(cfg.layers)]
    if cfg.arch == "longlora" and cfg.shift == "varlen":  # varlen's shifted heads compute a little less
        assert all(a >= b for a, b in zip(ours, per_layer))
    else:
        assert ours == per_layer


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.arch)
def test_parameter_count_in_closed_form(cfg):
    for changes in ({}, {"layers": 7, "dim": 24, "heads": 3}, {"separate_kv": True}):
        c = cfg.replace(**changes)
        assert budget.exact_param_count(c) == count_params(c)


def _peak(fn):
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


SAMPLE = [  # shapes where the scores, the logits or the stream dominate
    (ModelConfig(arch="transformer", vocab=16, dim=8, heads=2, layers=2, seq_len=512), 1),
    (ModelConfig(arch="double", vocab=16, dim=8, heads=2, layers=2, seq_len=512, latent=256), 1),
    (ModelConfig(arch="ecp", vocab=2000, dim=16, heads=1, layers=1, seq_len=256, half_segment=32), 1),
    (ModelConfig(arch="perceiver_ar", vocab=64, dim=128, heads=2, layers=3, seq_len=256, latent=64), 1),
    (ModelConfig(arch="compressed", vocab=256, dim=32, heads=8, layers=4, seq_len=256, latent=128, compressed=64), 2),
    (ModelConfig(arch="longlora", vocab=256, dim=64, heads=4, layers=2, seq_len=256, group=64), 4),
]


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("cfg,batch", SAMPLE, ids=[c.arch for c, _ in SAMPLE])
def test_activation_estimate_bounds_the_measured_peak(cfg, batch, engine):
    params = minicp.init_params(cfg)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab, (batch, cfg.seq_len + 1))
    with minicp.engine(engine):
        value_and_grad(params, tokens, cfg)  # first call: modules loaded on first use (SciPy's erf) and caches
        measured = (
            _peak(lambda: forward(params, tokens[:, :-1], cfg)),
            _peak(lambda: value_and_grad(params, tokens, cfg)),
        )
    for grad, peak, slack in ((False, measured[0], 20), (True, measured[1], 4)):
        estimate = budget.activation_bytes(cfg, batch, cfg.seq_len, 4, grad)
        assert peak <= estimate <= slack * peak, (grad, peak, estimate)
