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

from minicp import ModelConfig, init_params
from minicp import backend as B
from minicp.lm import train as T
from minicp.nn import fused
from minicp.nn import model as M

pytestmark = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not B.gpu_available(), reason="needs CuPy and a usable NVIDIA GPU")


def _grads(cfg, params64, tokens, which, dtype):
    with B.backend(which, autograd_on_gpu=True if which == "cupy" else None):
        params = M.unflatten({k: B.asarray(np.asarray(v, dtype=dtype)) for k, v in M.flatten(params64).items()})
        value = M.loss(params, tokens, cfg)
        flat = M.flatten(grad(M.loss)(params, tokens, cfg))
        if which == "cupy":
            assert all(type(g).__module__.startswith("cupy") for g in flat.values())
        return float(value), {k: B.to_numpy(g) for k, g in flat.items()}


@needs_gpu
@pytest.mark.parametrize("arch", ["ecp", "transformer", "perceiver_ar", "double", "compressed", "s_split", "longlora"])
@pytest.mark.parametrize("use_fused", [True, False])
def test_gradients_on_gpu_equal_cpu_float64(arch, use_fused):
    extra = dict(half_segment=16) if arch == "ecp" else dict(latent=32) if arch == "perceiver_ar" else {}
    cfg = ModelConfig(arch=arch, vocab=64, dim=64, heads=4, layers=2, seq_len=64, **extra)
    params = M.flatten(init_params(cfg, seed=3, dtype="float64"))
    tokens = np.random.default_rng(1).integers(0, 64, (2, 65))
    with fused.use_fused(use_fused):
        ref_loss, ref = _grads(cfg, params, tokens, "numpy", np.float64)
        got_loss, got = _grads(cfg, params, tokens, "cupy", np.float32)
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
    print("loss curves", curves)
    np.testing.assert_allclose(curves["cupy"], curves["numpy"], rtol=1e-4)


@needs_gpu
def test_adamw_kernel_equals_the_host_update():
    import cupy

    from minicp.lm.optim import adamw_init, adamw_step, clip_grad_norm

    rng = np.random.default_rng(5)
    host = {
        "layers.0.w.weight": rng.standard_normal((33, 17)).astype(np.float32),
        "norm.bias": rng.random(17, np.float32),
    }
    dev = {k: cupy.asarray(v) for k, v in host.items()}
    sh, sd = adamw_init(host), adamw_init(dev)
    for step in range(3):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in host.items()}
        dgrads = {k: cupy.asarray(v) for k, v in grads.items()}
        assert abs(clip_grad_norm(dgrads, 0.5) - clip_grad_norm(grads, 0.5)) < 1e-5
        adamw_step(host, grads, sh, lr=1e-2)
        adamw_step(dev, dgrads, sd, lr=1e-2)
    for k in host:  # fused multiply-adds on the GPU round a little differently
        np.testing.assert_allclose(cupy.asnumpy(dev[k]), host[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cupy.asnumpy(sd["v"][k]), sh["v"][k], rtol=1e-5, atol=1e-9)


@needs_gpu
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("D", [1, 37, 512, 1000])
def test_layer_norm_kernel_equals_float64_formula(dtype, rtol, D):
    rng = np.random.default_rng(D)
    x = rng.standard_normal((301, D)) * 3 + 1
    w, b = rng.standard_normal(D), rng.standard_normal(D)
    xc = x - x.mean(-1, keepdims=True)
    want = xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5) * w + b  # float64, independent formula
    import cupy

    got = B.cuda_layers.layer_norm(*(cupy.asarray(a.astype(dtype)) for a in (x, w, b)), 1e-5)
    scale = np.abs(want).max()
    np.testing.assert_allclose(B.to_numpy(got), want, rtol=rtol, atol=rtol * scale)


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


@needs_gpu
def test_layer_norm_kernel_keeps_xhat_and_the_divisor():
    import cupy

    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((129, 96)) * 2 - 1, rng.standard_normal(96), rng.standard_normal(96)
    xc = x - x.mean(-1, keepdims=True)
    std = np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)  # float64, independent formula
    y, xhat, s = B.cuda_layers.layer_norm(*(cupy.asarray(a) for a in (x, w, b)), 1e-5, save=True)
    np.testing.assert_allclose(B.to_numpy(s), std, rtol=1e-12)
    np.testing.assert_allclose(B.to_numpy(xhat), xc / std, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(y), xc / std * w + b, rtol=1e-12, atol=1e-12)


@needs_gpu
@pytest.mark.parametrize("dtype, tol", [("float32", 3e-6), ("float64", 1e-14)])
def test_bias_gelu_and_residual_kernels_equal_float64_formulas(dtype, tol):
    import math

    import cupy

    rng = np.random.default_rng(6)
    h, bias = rng.standard_normal((77, 130)) * 3, rng.standard_normal(130)
    z = h + bias
    phi = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    want_a, want_d = z * phi, phi + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    hd, bd = cupy.asarray(h.astype(dtype)), cupy.asarray(bias.astype(dtype))
    a, d = B.cuda_layers.bias_gelu(hd, bd, deriv=True)
    np.testing.assert_allclose(B.to_numpy(a), want_a, rtol=tol, atol=tol * 10)
    np.testing.assert_allclose(B.to_numpy(d), want_d, rtol=tol, atol=tol * 10)
    np.testing.assert_array_equal(B.to_numpy(B.cuda_layers.bias_gelu(hd, bd)), B.to_numpy(a))
    y, x = rng.standard_normal((77, 130)), rng.standard_normal((77, 130))
    yd = cupy.asarray(y.astype(dtype))
    B.cuda_layers.residual_bias_(yd, cupy.asarray(x.astype(dtype)), bd)
    np.testing.assert_allclose(B.to_numpy(yd), y + x + bias, rtol=tol, atol=tol * 10)


@needs_gpu
def test_multi_tensor_optimiser_kernels_equal_the_one_tensor_ones(monkeypatch):
    """Clipping and AdamW for all parameters in one launch each (``minicp.backend.cuda_multi``) against the
    per-parameter kernels and a float64 norm: tensors of several chunks, of one element, decayed or not."""
    import cupy

    from minicp.backend import cuda_multi
    from minicp.lm.optim import adamw_init, adamw_step, clip_grad_norm

    rng = np.random.default_rng(9)
    shapes = {"a.weight": (300, 70), "b.weight": (3 * cuda_multi.CHUNK + 5,), "c.bias": (1,), "d.weight": (7, 3)}
    start = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    runs, applies = {}, cuda_multi.applies
    for multi in (True, False):
        monkeypatch.setattr(cuda_multi, "applies", applies if multi else (lambda *g: False))
        dev = {k: cupy.asarray(v) for k, v in start.items()}
        state, norms = adamw_init(dev), []
        for step in range(3):
            g = {k: cupy.asarray(rng.standard_normal(s).astype(np.float32) * (step + 1)) for k, s in shapes.items()}
            want = np.sqrt(sum(float((cupy.asnumpy(x).astype(np.float64) ** 2).sum()) for x in g.values()))
            norms.append((clip_grad_norm(g, 50.0), want))
            adamw_step(dev, g, state, lr=1e-2, lr_no_decay=3e-3)
        runs[multi] = ({k: cupy.asnumpy(v) for k, v in dev.items()}, norms)
        rng = np.random.default_rng(9)
        start = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    for got, want in runs[True][1]:
        assert abs(got - want) <= 1e-6 * want
    assert any(want > 50.0 for _, want in runs[True][1])  # clipping took place
    for k in shapes:
        np.testing.assert_allclose(runs[True][0][k], runs[False][0][k], rtol=1e-6, atol=1e-7, err_msg=k)
