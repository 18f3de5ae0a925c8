"""The fast engine's ``value_and_grad`` (``minicp.fast.model``, traced over the flat tuple of parameters)
against autograd's own ``value_and_grad(loss)`` over the nested parameters: the same loss and the same gradients, bit for bit, for
every architecture, with the nested structure of ``params``. A gradient routed to the wrong name (names and
leaves zipped out of step) or a parameter left out would differ by O(1)."""

import numpy as np
import pytest
from autograd import value_and_grad

from minicp import ModelConfig, init_params
from minicp.fast import model as F
from minicp.nn import model as M

ARCHS = {
    "ecp": dict(half_segment=8),
    "transformer": {},
    "perceiver_ar": dict(latent=16),
    "double": {},
    "compressed": {},
    "s_split": {},
    "longlora": {},
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_flat_tracing_equals_nested_tracing_bit_for_bit(arch):
    cfg = ModelConfig(arch=arch, vocab=50, dim=24, heads=3, layers=2, seq_len=32, **ARCHS[arch])
    params = init_params(cfg, seed=7, dtype="float64")
    tokens = np.random.default_rng(2).integers(0, 50, (2, 33))
    want_value, want = value_and_grad(F.loss)(params, tokens, cfg)
    got_value, got = F.value_and_grad(params, tokens, cfg)
    assert float(got_value) == float(want_value)
    want, got = M.flatten(want), M.flatten(got)
    assert list(got) == list(want)  # same names, same order, same nesting after unflatten
    for name in want:
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    used = sum(np.abs(g).max() > 0 for g in want.values())  # some official projections go unused
    assert used >= 0.75 * len(want), f"only {used} of {len(want)} parameters have a gradient"


def test_parameter_checks_are_read_after_the_backward_pass(monkeypatch):
    """On the GPU reading the finiteness test holds the host until the GPU is done: inside value_and_grad the
    forward's check is read once the backward pass has been queued too; forward alone reads it before it
    returns. (The CPU check is made at once; here a recording finish() stands in for the GPU's.)"""
    cfg = ModelConfig(arch="ecp", vocab=50, dim=24, heads=3, layers=2, seq_len=32, half_segment=8)
    params = init_params(cfg, seed=7, dtype="float64")
    tokens = np.random.default_rng(2).integers(0, 50, (2, 33))
    log, check, grad = [], M.check_params, F.autograd_value_and_grad

    def recording_check(*args, **kwargs):
        flat, _ = check(*args, **kwargs)
        return flat, lambda: log.append("check")

    def recording_grad(f):
        def run(x):
            out = grad(f)(x)
            log.append("backward")
            return out

        return run

    monkeypatch.setattr(M, "check_params", recording_check)
    monkeypatch.setattr(F, "autograd_value_and_grad", recording_grad)
    F.value_and_grad(params, tokens, cfg)
    assert log == ["backward", "check"]
    log.clear()
    F.forward(params, tokens[:, :-1], cfg)
    assert log == ["check"] and F._after_backward is None
