"""The inputs that used to give a silently wrong result or hang: each is now a clear error naming the parameter."""

import math
import time

import numpy as np
import pytest

import minicp
from minicp.lm.evaluate import perplexity_official

CFG = minicp.ModelConfig(arch="ecp", vocab=11, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)
PARAMS = minicp.init_params(CFG, dtype="float64")
Q = np.random.default_rng(1).standard_normal((1, 2, 8, 4))


def _with(name, value):
    flat = {k: np.array(v) for k, v in minicp.flatten(PARAMS).items()}
    flat[name] = value(flat[name])
    return minicp.unflatten(flat)


def _nan_at(index):
    def put(a):
        a = a.copy()
        a[index] = np.nan
        return a

    return put


CASES = [
    (lambda: minicp.attention("ecp", Q, Q, Q, half_segment=2, scale=True), TypeError, "scale must be a real number"),
    (lambda: minicp.attention("ecp", Q, Q, Q, half_segment=2, scale=math.nan), ValueError, "scale must be a finite"),
    (
        lambda: minicp.attention("ecp", Q, Q, Q, half_segment=2, partial="no"),
        TypeError,
        "partial must be True or False",
    ),
    (lambda: minicp.attention_mask("ecp", 8, half_segment=2, partial="no"), TypeError, "partial must be True or False"),
    (lambda: CFG.replace(separate_kv="no"), TypeError, "separate_kv must be True or False"),
    (lambda: CFG.replace(partial_segments="yes"), TypeError, "partial_segments must be True or False"),
    (lambda: CFG.replace(rope_base=0), ValueError, "rope_base must be > 0"),
    (lambda: CFG.replace(rope_base=-3.0), ValueError, "rope_base must be > 0"),
    (lambda: CFG.replace(rope_base=math.nan), ValueError, "rope_base must be a finite"),
    (lambda: CFG.replace(eps=-1e-5), ValueError, "eps must be >= 0"),
    (lambda: CFG.replace(eps=math.nan), ValueError, "eps must be a finite"),
    (lambda: minicp.init_params(CFG, dtype="int32"), ValueError, "dtype must be 'float32' or 'float64'"),
    (lambda: minicp.forward(PARAMS, np.zeros((1, 8), int), CFG.replace(vocab=12)), ValueError, "token_emb.weight"),
    (lambda: minicp.forward(PARAMS, np.zeros((1, 8), int), CFG.replace(layers=2)), ValueError, "params have 1 layers"),
    (
        lambda: minicp.forward(
            PARAMS, np.zeros((1, 8), int), CFG.replace(arch="transformer", half_segment=None, segment=None)
        ),
        ValueError,
        "to_out_0",
    ),
    (lambda: minicp.load_official_state_dict(minicp.flatten(PARAMS), CFG, dtype="int8"), ValueError, "dtype must be"),
    (
        lambda: minicp.load_official_state_dict({k: v + 0j for k, v in minicp.flatten(PARAMS).items()}, CFG),
        ValueError,
        "dtype complex128",
    ),
    (
        lambda: minicp.load_official_state_dict(minicp.flatten(_with("to_logits.1.bias", _nan_at(2))), CFG),
        ValueError,
        r"to_logits.1.bias must be finite, got nan at index \(2,\)",
    ),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, -1), ValueError, "max_new_tokens"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, 1.7), ValueError, "max_new_tokens"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, "3"), ValueError, "max_new_tokens"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, 2, temperature=math.nan), ValueError, "temperature"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, 2, temperature=math.inf), ValueError, "temperature"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, 2, top_k=0), ValueError, "top_k"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, 2, top_k=-3), ValueError, "top_k"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, 2, filter_thres=1.0), ValueError, "filter_thres"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, 2, filter_thres=-0.1), ValueError, "filter_thres"),
    (lambda: minicp.generate(PARAMS, [1, 2], CFG, 2, eos=11), ValueError, "eos 11 must be a token id"),
    (lambda: minicp.generate(_with("to_logits.1.bias", _nan_at(0)), [1, 2], CFG, 2), ValueError, "to_logits.1.bias"),
    (lambda: perplexity_official(PARAMS, np.arange(30) % 11, CFG, batch=-1), ValueError, "batch"),
    (lambda: minicp.TrainConfig(lr=math.inf), ValueError, "lr must be a finite"),
    (lambda: minicp.TrainConfig(weight_decay=math.nan), ValueError, "weight_decay must be a finite"),
    (lambda: minicp.TrainConfig(clip=math.nan), ValueError, "clip must be a finite"),
    (
        lambda: minicp.attention("ecp", Q, Q, np.where(np.arange(8)[:, None] == 7, np.nan, Q), half_segment=2),
        ValueError,
        r"v must be finite, got nan at index \(0, 0, 7, 0\)",
    ),
    (lambda: minicp.attention("ecp", Q[..., :0], Q[..., :0], Q[..., :0], half_segment=2), ValueError, "empty axis"),
]


@pytest.mark.parametrize("call,kind,message", CASES)
def test_formerly_silent_inputs_are_clear_errors(call, kind, message):
    with pytest.raises(kind, match=message):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: minicp.receptive_field("ecp", seq_len=64, half_segment=8, layers=10**9),
        lambda: minicp.count_attention_steps("ecp", seq_len=64, layers=10**9, per_layer=True),
        lambda: minicp.attention_mask("transformer", 10**6),
        lambda: minicp.init_params(CFG.replace(layers=10**7)),
        lambda: minicp.generate(PARAMS, [1], CFG, 10**9),
    ],
)
def test_absurd_sizes_fail_fast_with_the_size(call):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"this request needs [\d,]+ units"):
        call()
    assert time.perf_counter() - start < 1


def test_the_total_step_count_still_works_for_any_size():
    assert minicp.count_attention_steps("transformer", seq_len=4, layers=10**9) == 10**9 * 4**2  # l h n^2


def test_tiny_temperature_tends_to_greedy():
    greedy = minicp.generate(PARAMS, [1, 2, 3], CFG, 4, temperature=0)
    assert (minicp.generate(PARAMS, [1, 2, 3], CFG, 4, temperature=1e-300) == greedy).all()
