"""Every invalid configuration or input raises ValueError naming the parameter and the rule."""

import numpy as np
import pytest

import minicp
from minicp import ModelConfig
from minicp.nn.model import forward, init_params, loss

q4 = np.zeros((1, 2, 8, 4))

CONFIG_CASES = [
    (dict(arch="gpt"), "arch"),
    (dict(dim=10, heads=3), "dim 10 is not divisible by heads 3"),
    (dict(vocab=0), "vocab"),
    (dict(layers=-1), "layers"),
    (dict(seq_len=1.5), "seq_len"),
    (dict(arch="ecp", seq_len=1000, half_segment=128), "seq_len 1000 is not divisible by half_segment 128"),
    (dict(arch="ecp", seq_len=64, segment=7), "segment 7 must be even"),
    (dict(arch="ecp", seq_len=64, segment=16, half_segment=4), "segment 16 must equal 2 * half_segment 4"),
    (dict(arch="ecp", seq_len=8, half_segment=8), "at least two half segments"),
    (dict(arch="compressed", seq_len=16, latent=16), "latent 16 must be smaller than seq_len 16"),
    (dict(arch="double", seq_len=16, latent=17), "latent 17 must be at most seq_len 16"),
    (dict(arch="compressed", seq_len=16, latent=8, compressed=9), "compressed 9 must be at most history 8"),
    (
        dict(arch="s_split", seq_len=16, latent=4, split=5),
        "history 12 (= seq_len - latent) is not divisible by split 5",
    ),
    (dict(arch="ecp", seq_len=16, split=4), "split applies to arch 's_split' only"),
    (dict(arch="double", seq_len=16, segment=4), "segment/half_segment apply to arch 'ecp' only"),
    (dict(arch="longlora", seq_len=16, group=6), "seq_len 16 is not divisible by group 6"),
    (dict(arch="longlora", seq_len=18, group=3), "group 3 must be even"),
    (dict(arch="longlora", seq_len=16, shift="wrap"), "shift 'wrap'"),
    (dict(rope_style="complex"), "rope_style 'complex'"),
    (dict(dim=6, heads=2, rope_style="halves"), "even head dim"),
    (dict(arch="compressed", seq_len=16, compressed_residual="fixed"), "compressed_residual 'fixed'"),
]


@pytest.mark.parametrize("kwargs,message", CONFIG_CASES)
def test_bad_configs(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        ModelConfig(**{"seq_len": 16, **kwargs})


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset 'table9'"):
        ModelConfig.preset("table9")


HEAD_CASES = [
    (lambda: minicp.attention("ecp", q4, q4, q4, half_segment=3), "seq_len 8 is not divisible by half_segment 3"),
    (lambda: minicp.attention("ecp", q4, q4, q4, half_segment=0), "half_segment must be a positive integer"),
    (lambda: minicp.attention("ecp", q4[0], q4[0], q4[0], half_segment=4), "q must have shape"),
    (lambda: minicp.attention("ecp", q4.astype(int), q4, q4, half_segment=4), "q must be a floating-point array"),
    (lambda: minicp.attention("ecp", q4.astype(np.float32), q4, q4, half_segment=4), "share one dtype"),
    (lambda: minicp.attention("ecp", q4, q4[:, :, :4], q4[:, :, :4], half_segment=4), "positions"),
    (lambda: minicp.attention("ecp", q4, q4[..., :2], q4, half_segment=4), "head_dim"),
    (lambda: minicp.attention("bert", q4, q4, q4), "arch 'bert'"),
    (lambda: minicp.attention_mask("longlora", 8, group=4), "different patterns per head"),
]


@pytest.mark.parametrize("call,message", HEAD_CASES)
def test_bad_head_level_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_tokens_and_configs_at_model_level():
    cfg = ModelConfig(arch="perceiver_ar", vocab=11, dim=8, heads=2, layers=1, seq_len=8, latent=4)
    params = init_params(cfg)
    with pytest.raises(ValueError, match="token ids must lie in"):
        forward(params, np.full((1, 8), 11), cfg)
    with pytest.raises(ValueError, match="token ids must lie in"):
        forward(params, np.full((1, 8), -1), cfg)
    with pytest.raises(ValueError, match="tokens must be integers"):
        forward(params, np.zeros((1, 8)), cfg)
    with pytest.raises(ValueError, match="tokens must have shape"):
        forward(params, np.zeros(8, int), cfg)
    with pytest.raises(ValueError, match="tokens length 7 must equal seq_len 8"):
        forward(params, np.zeros((1, 7), int), cfg)
    with pytest.raises(ValueError, match="tokens length 8 must equal seq_len 8|tokens length 9"):
        loss(params, np.zeros((1, 10), int), cfg)
    with pytest.raises(ValueError, match="config must be a minicp.ModelConfig"):
        forward(params, np.zeros((1, 8), int), {"arch": "ecp"})
