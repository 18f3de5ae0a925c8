"""autograd on the GPU: ``grad(minicp.loss)`` and ``minicp.train`` under the CuPy backend.

The reference is the CPU in float64 (NumPy backend) on the same weights; the GPU runs float32 with full
FP32 matmuls. Tolerances: gradients of a 2-layer D = 64 model pass through the same depth as the logits
checked in test_gpu.py, so the same relative-norm bound (1e-4 per parameter, ~1e3 float32 ulps of
margin over the ~1e-6 errors seen) applies; any wrong VJP moves a gradient by O(1) relative. The tiny
preset's first training steps: losses equal to the CPU float32 run within rtol 1e-4.
Skipped without CuPy and a GPU.
"""

import numpy as np
import pytest
from autograd import grad

from minicp import ModelConfig, engines, init_params
from minicp import backend as B
from minicp.lm import train as T
from minicp.nn import model as M

pytestmark = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not B.gpu_available(), reason="needs CuPy and a usable NVIDIA GPU")


def _grads(cfg, params64, tokens, which, dtype, engine):
    loss = engines.module(engine).loss
    with B.backend(which, autograd_on_gpu=True if which == "cupy" else None):
        params = M.unflatten({k: B.asarray(np.asarray(v, dtype=dtype)) for k, v in M.flatten(params64).items()})
        value = loss(params, tokens, cfg)
        flat = M.flatten(grad(loss)(params, tokens, cfg))
        if which == "cupy":
            assert all(type(g).__module__.startswith("cupy") for g in flat.values())
        return float(value), {k: B.to_numpy(g) for k, g in flat.items()}


@needs_gpu
@pytest.mark.parametrize("arch", ["ecp", "transformer", "perceiver_ar", "double", "compressed", "s_split", "longlora"])
@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_gradients_on_gpu_equal_cpu_float64(arch, engine):
    extra = dict(half_segment=16) if arch == "ecp" else dict(latent=32) if arch == "perceiver_ar" else {}
    cfg = ModelConfig(arch=arch, vocab=64, dim=64, heads=4, layers=2, seq_len=64, **extra)
    params = M.flatten(init_params(cfg, seed=3, dtype="float64"))
    tokens = np.random.default_rng(1).integers(0, 64, (2, 65))
    ref_loss, ref = _grads(cfg, params, tokens, "numpy", np.float64, "reference")
    got_loss, got = _grads(cfg, params, tokens, "cupy", np.float32, engine)
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5)
    for name, r in ref.items():
        g = got[name]
        assert g.dtype == np.float32, name
        err = np.linalg.norm(g - r) / max(np.linalg.norm(r), 1e-30)
        assert err < 1e-4, f"{name}: relative norm error {err:.2e}"


@needs_gpu
def test_tiny_preset_trains_on_gpu_like_cpu():
    cfg = ModelConfig.preset("tiny-ecp")
    data = np.random.default_rng(0).integers(0, cfg.vocab, (16, cfg.seq_len + 1))
    tcfg = T.TrainConfig(steps=4, batch=2, grad_accum=1)
    curves = {}
    for which in ("numpy", "cupy"):
        with B.backend(which, autograd_on_gpu=True if which == "cupy" else None):
            result = T.train(cfg, data, tcfg, progress=False)
        curves[which] = [h["loss"] for h in result.history]
    print("loss curves", curves)  # both on the fast engine, the default for train
    np.testing.assert_allclose(curves["cupy"], curves["numpy"], rtol=1e-4)


@needs_gpu
def test_non_finite_parameter_is_named_on_the_gpu_too():
    cfg = ModelConfig(arch="ecp", vocab=64, dim=32, heads=4, layers=2, seq_len=64, half_segment=16)
    tokens = np.random.default_rng(1).integers(0, 64, (1, 64))
    with B.backend("cupy"):
        params = init_params(cfg, seed=3)
        M.forward(params, tokens, cfg)  # finite: no error
        params["layers"][1][0]["fn"]["to_q"]["weight"][2, 3] = np.inf
        with pytest.raises(ValueError, match=r"params\['layers.1.0.fn.to_q.weight'\] must be finite, got inf"):
            M.forward(params, tokens, cfg)
