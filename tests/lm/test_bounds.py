"""Every public entry point is bounded: an absurd request fails in well under a second with a ValueError that
names the computed size, the limit (by its name in minicp.validate) and how to raise it; the estimates behind
the bounds agree with closed forms counted elsewhere and with the memory the calls really take."""

import time
import tracemalloc

import numpy as np
import pytest

import minicp
from minicp import ModelConfig, validate
from minicp.analysis.steps import count_attention_steps
from minicp.lm.train import TrainConfig, train
from minicp.nn import budget
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
