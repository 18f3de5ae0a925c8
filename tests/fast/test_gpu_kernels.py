"""The fast engine's CUDA kernels (``minicp.fast.cuda``) on CuPy against independent float64 formulas and
against the same computation as array passes (the CPU's, or CuPy's with the kernels off). Skipped without a GPU.

Tolerances: float32 kernels within a few float32 units of the float64 formula (rtol 1e-5 for the softmax,
2e-5 for LayerNorm's two passes over D entries, 3e-6 for GELU); float64 ones to 1e-12 or better. A wrong mask
entry, a wrong row or a wrong constant moves results by 1e-2 and more.
"""

import math

import numpy as np
import pytest

from minicp import backend as B
from minicp.fast import arrays as A
from minicp.fast.cuda import kernels
from minicp.fast.cuda import layers as cuda_layers
from minicp.fast.cuda import multi as cuda_multi
from minicp.lm.optim import adamw_init, adamw_step, clip_grad_norm
from minicp.nn import rope as R

pytestmark = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not B.gpu_available(), reason="needs CuPy and a usable NVIDIA GPU")


def on_cpu(fn, *args, **kwargs):
    with B.backend("numpy"):
        return fn(*args, **kwargs)


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("J", [7, 100, 256, 512, 1500, 5000])  # warp (scalar, float4), block kernels
@pytest.mark.parametrize("mask_kind", ["none", "2d", "1d", "full", "broadcast-fallback"])
def test_fused_masked_softmax_matches_the_array_passes(gpu, dtype, J, mask_kind):
    """The fused kernel (every block size) against the same softmax as NumPy's array passes."""
    rng = np.random.default_rng(J)
    s = rng.standard_normal((3, 6, J)) * 4
    mask = {
        "none": None,
        "2d": rng.random((6, J)) < 0.7,
        "1d": rng.random(J) < 0.7,
        "full": rng.random((3, 6, J)) < 0.7,
        "broadcast-fallback": rng.random((3, 1, J)) < 0.7,
    }[mask_kind]
    if mask is not None:
        mask[..., 0] = True  # no fully masked row ...
        if mask_kind in ("2d", "full"):
            mask[..., 2, :] = False  # ... except one: NaN on both
    with np.errstate(invalid="ignore"):
        ref = on_cpu(lambda: A.masked_softmax_(s.copy(), mask))
    got = B.to_numpy(A.masked_softmax_(B.asarray(s.astype(dtype)), None if mask is None else B.asarray(mask)))
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    tol = (1e-5, 1e-7) if dtype == "float32" else (1e-12, 1e-15)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=tol[0], atol=tol[1])
    if mask is not None:
        assert (got[ok & ~np.broadcast_to(mask, s.shape)] == 0).all()  # masked entries exactly 0


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("style,d", [("interleaved", 16), ("interleaved", 7), ("halves", 16)])
def test_fused_rope_equals_the_array_formula_bit_for_bit(gpu, monkeypatch, dtype, style, d):
    rng = np.random.default_rng(d)
    x_host = rng.standard_normal((2, 33, 3, d))
    pos = rng.integers(0, 5000, 33)
    x = B.xp.swapaxes(B.asarray(x_host.astype(dtype)), 1, 2)  # (2, 3, 33, d), a strided view
    cos, sin = R.rope_tables(pos, d, dtype, 10000.0)
    fused = kernels.fused_rope(x, cos, sin, style)
    assert fused is not None and fused.dtype == dtype
    plain = B.to_numpy(R.rope(x, pos, style))  # the reference's array formula, on CuPy
    np.testing.assert_array_equal(B.to_numpy(fused), plain)
    ref = on_cpu(R.rope, np.swapaxes(x_host.astype(dtype), 1, 2), pos, style)  # NumPy, same dtype
    np.testing.assert_array_equal(B.to_numpy(fused), ref)
    monkeypatch.setattr(kernels, "enabled", False)
    assert kernels.fused_rope(x, cos, sin, style) is None


@needs_gpu
@pytest.mark.parametrize("dtype, rtol", [("float32", 2e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("D", [1, 37, 512, 1000])
def test_layer_norm_kernel_equals_float64_formula(gpu, dtype, rtol, D):
    rng = np.random.default_rng(D)
    x = rng.standard_normal((301, D)) * 3 + 1
    w, b = rng.standard_normal(D), rng.standard_normal(D)
    xc = x - x.mean(-1, keepdims=True)
    want = xc / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5) * w + b  # float64, independent formula
    got = cuda_layers.layer_norm(*(B.asarray(a.astype(dtype)) for a in (x, w, b)), 1e-5)
    np.testing.assert_allclose(B.to_numpy(got), want, rtol=rtol, atol=rtol * np.abs(want).max())


@needs_gpu
def test_layer_norm_kernel_keeps_xhat_and_the_divisor(gpu):
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((129, 96)) * 2 - 1, rng.standard_normal(96), rng.standard_normal(96)
    xc = x - x.mean(-1, keepdims=True)
    std = np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)  # float64, independent formula
    y, xhat, s = cuda_layers.layer_norm(*(B.asarray(a) for a in (x, w, b)), 1e-5, save=True)
    np.testing.assert_allclose(B.to_numpy(s), std, rtol=1e-12)
    np.testing.assert_allclose(B.to_numpy(xhat), xc / std, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B.to_numpy(y), xc / std * w + b, rtol=1e-12, atol=1e-12)


def _gelu64(z):
    phi = 0.5 * np.vectorize(math.erfc)(-z / math.sqrt(2))
    return z * phi, phi + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi), phi


@needs_gpu
@pytest.mark.parametrize("dtype, tol", [("float32", 2.4e-7), ("float64", 1e-14)])  # two float32 units
def test_bias_gelu_and_residual_kernels_equal_float64_formulas(gpu, dtype, tol):
    rng = np.random.default_rng(6)
    h, bias = rng.standard_normal((77, 130)) * 3, rng.standard_normal(130)
    h[0, :20] = np.linspace(-12, -3, 20)  # the negative tail, where 1 + erf would cancel
    h, bias = h.astype(dtype), bias.astype(dtype)
    want_a, want_d, phi = _gelu64((h + bias).astype(np.float64))  # the exact function of z = h + b as rounded
    xp = B.raw
    hd, bd = xp.asarray(h), xp.asarray(bias)
    a, d, only_a, only_d = (xp.empty_like(hd) for _ in range(4))
    cuda_layers.bias_gelu_(hd, bd, a, d)
    cuda_layers.bias_gelu_(hd, bd, only_a)
    cuda_layers.bias_gelu_(hd, bd, None, only_d)
    a, d = B.to_numpy(a), B.to_numpy(d)
    # erfc(-z/sqrt 2) turns a relative change e of its argument into about z^2 e of its value: in the tail
    # (z = -12) rounding z/sqrt 2 in double alone moves phi by ~150 double units, in any correct implementation
    rel = tol + 4 * np.finfo(np.float64).eps * np.square((h + bias).astype(np.float64))
    assert np.all(np.abs(a - want_a) <= rel * np.abs(want_a) + 1e-300), "GELU value"  # tail included
    scale = np.abs(phi) + np.abs(want_d - phi)
    assert np.all(np.abs(d - want_d) <= rel * scale + 1e-300), "GELU derivative"
    # the value-only and derivative-only kernels are compiled apart (the compiler may contract other products
    # into FMAs, as seen on an H100 in float64: one unit apart), so each meets the bound on its own
    assert np.all(np.abs(B.to_numpy(only_a) - want_a) <= rel * np.abs(want_a) + 1e-300), "GELU value alone"
    assert np.all(np.abs(B.to_numpy(only_d) - want_d) <= rel * scale + 1e-300), "GELU derivative alone"
    y, x = rng.standard_normal((77, 130)), rng.standard_normal((77, 130))
    yd = xp.asarray(y.astype(dtype))
    cuda_layers.residual_bias_(yd, xp.asarray(x.astype(dtype)), bd)
    np.testing.assert_allclose(B.to_numpy(yd), y + x + bias, rtol=3e-6, atol=3e-5)


@needs_gpu
def test_multi_tensor_optimiser_kernels_equal_the_readable_update():
    """Clipping and AdamW for all parameters in one launch each (``engine="fast"``) against the readable
    per-parameter update on the same CuPy arrays and a float64 norm: tensors of several chunks, of one
    element, decayed or not."""
    import cupy

    shapes = {"a.weight": (300, 70), "b.weight": (3 * cuda_multi.CHUNK + 5,), "c.bias": (1,), "d.weight": (7, 3)}
    runs = {}
    for engine in ("fast", "reference"):
        rng = np.random.default_rng(9)
        dev = {k: cupy.asarray(rng.standard_normal(s).astype(np.float32)) for k, s in shapes.items()}
        state, norms = adamw_init(dev), []
        for step in range(3):
            g = {k: cupy.asarray(rng.standard_normal(s).astype(np.float32) * (step + 1)) for k, s in shapes.items()}
            want = np.sqrt(sum(float((cupy.asnumpy(x).astype(np.float64) ** 2).sum()) for x in g.values()))
            norms.append((clip_grad_norm(g, 50.0, engine=engine), want))
            adamw_step(dev, g, state, lr=1e-2, lr_no_decay=3e-3, engine=engine)
        runs[engine] = ({k: cupy.asnumpy(v) for k, v in dev.items()}, norms)
    for got, want in runs["fast"][1]:
        assert abs(got - want) <= 1e-6 * want
    assert any(want > 50.0 for _, want in runs["fast"][1])  # clipping took place
    for k in shapes:  # fused multiply-adds in the kernel round a little differently
        np.testing.assert_allclose(runs["fast"][0][k], runs["reference"][0][k], rtol=1e-6, atol=1e-7, err_msg=k)


@needs_gpu
def test_adamw_on_the_gpu_equals_the_host_update():
    import cupy

    rng = np.random.default_rng(5)
    host = {
        "layers.0.w.weight": rng.standard_normal((33, 17)).astype(np.float32),
        "norm.bias": rng.random(17, np.float32),
    }
    dev = {k: cupy.asarray(v) for k, v in host.items()}
    sh, sd = adamw_init(host), adamw_init(dev)
    for _ in range(3):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in host.items()}
        dgrads = {k: cupy.asarray(v) for k, v in grads.items()}
        assert abs(clip_grad_norm(dgrads, 0.5, engine="fast") - clip_grad_norm(grads, 0.5)) < 1e-5
        adamw_step(host, grads, sh, lr=1e-2)
        adamw_step(dev, dgrads, sd, lr=1e-2, engine="fast")
    for k in host:
        np.testing.assert_allclose(cupy.asnumpy(dev[k]), host[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cupy.asnumpy(sd["v"][k]), sh["v"][k], rtol=1e-5, atol=1e-9)
