"""The CuPy backend against the CPU float64 reference: the reference (and the fast engine's model) run on
the GPU with the same code. The fast engine's CUDA kernels have their own tests (tests/fast/test_gpu_*.py).

Run on a machine with an NVIDIA GPU and CuPy:  ``python -m pytest -m gpu tests``.
Elsewhere every test that needs a GPU is *skipped* (CuPy imports fine on machines without one, so the
skip asks the driver through ``minicp.backend.gpu_available``); the tests that simulate a missing GPU
run everywhere.

Data are drawn on the host with NumPy in float64. The CPU reference runs on them in float64 with the
``numpy`` backend; the GPU runs on the same numbers rounded to float32 (the GPU's fast precision).

Tolerances (float32 unit roundoff u = 6e-8; CuPy's float32 matmuls run in full FP32, not TF32):

* attention outputs and the attention VJPs: rtol 1e-4, atol 1e-5, and ||gpu - ref|| / ||ref|| < 1e-5.
  Rounding the inputs costs ~u relative, each dot product over d or j terms ~sqrt(terms) u, and the
  softmax is well conditioned for O(1) scores: errors land near 1e-6, so 1e-4 leaves ~100x margin
  while any real bug (a wrong mask entry, a wrong row) moves results by >= 1e-2.
* model logits and loss (2 layers, D = 64): rtol 1e-3, atol 1e-4, and a relative norm < 1e-4.
  The errors pass through LayerNorms (which divide by a per-row std), the 4D-wide feed-forward and
  the residual stream of every layer, and the logits of a random model are O(1) with small entries
  near 0; we allow 10x the attention tolerance for that depth. Measured errors are printed (-s).
"""

import sys
import types

import numpy as np
import pytest

from minicp import ModelConfig, engines
from minicp import backend as B
from minicp.nn import ops
from minicp.nn.attention import module
from minicp.nn.model import init_params

pytestmark = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(not B.gpu_available(), reason="needs CuPy and a usable NVIDIA GPU")

RTOL, ATOL, REL_NORM = 1e-4, 1e-5, 1e-5  # attention outputs, VJPs
MODEL_RTOL, MODEL_ATOL, MODEL_REL_NORM = 1e-3, 1e-4, 1e-4  # logits, loss


def on_cpu(fn, *args, **kwargs):
    with B.backend("numpy"):
        return fn(*args, **kwargs)


def tree_map(f, tree):
    if isinstance(tree, dict):
        return {k: tree_map(f, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(f, v) for v in tree)
    return f(tree)


def to_gpu(a):
    """Host float64 data -> float32 array on the current (CuPy) backend."""
    return B.asarray(np.asarray(a, dtype=np.float32))


def check_close(got, ref, rtol=RTOL, atol=ATOL, rel_norm=REL_NORM, what=""):
    assert type(got).__module__.startswith("cupy"), f"{what}: expected a CuPy array, got {type(got)}"
    got = B.to_numpy(got)
    assert got.dtype == np.float32, f"{what}: GPU result is {got.dtype}, expected float32"
    assert got.shape == ref.shape
    assert np.isfinite(got).all(), f"{what}: non-finite values"
    err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    print(f"{what}: max abs err {np.abs(got - ref).max():.2e}, relative norm err {err:.2e}")
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=what)
    assert err < rel_norm, f"{what}: relative norm error {err:.2e} >= {rel_norm:.0e}"


# ----------------------------------------------------------------------------------------------------
# The switch (these run everywhere: a missing GPU is simulated)
# ----------------------------------------------------------------------------------------------------


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="not one of"):
        B.use_backend("jax")
    assert B.name == "numpy"


def test_cupy_not_installed_is_a_clear_runtime_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setitem(sys.modules, "cupyx", None)
    with pytest.raises(RuntimeError, match="needs CuPy"):
        B.use_backend("cupy")
    assert B.name == "numpy" and B.xp.__name__ == "autograd.numpy"
    assert not B.gpu_available()


def _fake_cupy(monkeypatch, get_device_count):
    """Install a fake CuPy that imports (as the real one does on machines without a GPU)."""
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    cupyx, scipy_, special = (types.ModuleType(n) for n in ("cupyx", "cupyx.scipy", "cupyx.scipy.special"))
    cupyx.scipy, scipy_.special = scipy_, special
    for mod in (cupy, cupyx, scipy_, special):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)


def test_cupy_without_a_gpu_is_a_clear_runtime_error(monkeypatch):
    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    _fake_cupy(monkeypatch, no_driver)
    with pytest.raises(RuntimeError, match="no usable NVIDIA GPU"):
        B.use_backend("cupy")
    with pytest.raises(RuntimeError, match="no usable NVIDIA GPU"):
        with B.backend("cupy"):
            pass
    assert B.name == "numpy" and B.xp.__name__ == "autograd.numpy"
    assert not B.gpu_available()


def test_cupy_with_zero_devices_is_a_clear_runtime_error(monkeypatch):
    _fake_cupy(monkeypatch, lambda: 0)
    with pytest.raises(RuntimeError, match="reports no GPU"):
        B.use_backend("cupy")
    assert B.name == "numpy"


def test_constant_is_the_host_array_on_numpy():
    mask = ops.causal_mask(4, 6, 2)
    assert B.constant(mask) is mask
    assert not mask.flags.writeable and ops.causal_mask(4, 6, 2) is mask  # cached, read-only


# ----------------------------------------------------------------------------------------------------
# Backend basics on the GPU
# ----------------------------------------------------------------------------------------------------


@needs_gpu
def test_switch_and_special_functions(gpu):
    import cupy
    import cupyx.scipy.special
    import scipy.special

    assert B.name == "cupy" and B.raw is cupy
    if B.gpu_autograd:  # the default: tracing wrappers around CuPy
        assert B.xp._cupy is cupy and B.special._special is cupyx.scipy.special
    else:
        assert B.xp is cupy and B.special is cupyx.scipy.special
    x = np.random.default_rng(0).standard_normal((5, 33))
    check_close(B.special.erf(to_gpu(x)), scipy.special.erf(x), what="erf")
    check_close(B.special.logsumexp(to_gpu(x), axis=-1), scipy.special.logsumexp(x, axis=-1), what="logsumexp")
    assert isinstance(B.to_numpy(B.asarray(x)), np.ndarray)
    with B.backend("numpy"):
        assert B.name == "numpy"
    assert B.name == "cupy"


@needs_gpu
def test_constants_are_copied_once(gpu):
    import cupy

    mask = ops.causal_mask(8, 16, 8)  # read-only: cached by identity
    dev = B.constant(mask)
    assert isinstance(dev, cupy.ndarray) and B.constant(mask) is dev
    np.testing.assert_array_equal(B.to_numpy(dev), mask)
    writable = np.ones((3, 3), bool)  # may change: copied every time
    assert B.constant(writable) is not B.constant(writable)
    B.clear_cache()
    assert B.constant(mask) is not dev


# ----------------------------------------------------------------------------------------------------
# Head-level attention of every architecture
# ----------------------------------------------------------------------------------------------------

HEAD_CASES = [
    ("transformer", 96, {}),
    ("transformer", 1500, {}),  # a row of 1500 keys: the 256-thread kernel
    ("perceiver_ar", 96, dict(latent=40)),
    ("perceiver_ar", 40, dict(latent=40, layer=1)),
    ("double", 96, dict(latent=40)),
    ("compressed", 96, dict(latent=40, compressed=16)),
    ("compressed", 56, dict(latent=40, compressed=16, layer=1)),
    ("s_split", 96, dict(latent=32, split=16)),
    ("ecp", 96, dict(half_segment=16)),
    ("ecp", 512, dict(half_segment=64)),  # 64 x 128 blocks: the float4 softmax kernel
    ("ecp", 100, dict(half_segment=16, partial=True)),
    ("ecp", 12, dict(half_segment=16, partial=True)),  # shorter than one half segment
    ("longlora", 96, dict(group=24)),
    ("longlora", 96, dict(group=24, shift="roll")),
]


@needs_gpu
@pytest.mark.parametrize(
    "arch,n,kwargs",
    HEAD_CASES,
    ids=lambda c: str(c) if not isinstance(c, dict) else "-".join(f"{k}={v}" for k, v in c.items()) or "default",
)
def test_head_attention_matches_cpu_float64(gpu, arch, n, kwargs):
    b, h, d = (1, 2, 16) if n > 1000 else (2, 4, 16)
    q, k, v = np.random.default_rng(n).standard_normal((3, b, h, n, d))
    mod = module(arch)
    ref = on_cpu(mod.attention, q, k, v, **kwargs)
    got = mod.attention(to_gpu(q), to_gpu(k), to_gpu(v), **kwargs)
    check_close(got, ref, what=f"{arch} {kwargs}")


# ----------------------------------------------------------------------------------------------------
# The attention VJP (the GPU backward)
# ----------------------------------------------------------------------------------------------------

VJP_CASES = {
    "no mask": ((2, 3, 40, 16), (2, 3, 56, 16), (2, 3, 56, 12), None),
    "tail causal": ((2, 3, 40, 16), (2, 3, 56, 16), (2, 3, 56, 12), ops.causal_mask(40, 56, 16)),
    "ECP pairs (5-d)": ((1, 2, 5, 16, 8), (1, 2, 5, 32, 8), (1, 2, 5, 32, 8), ops.causal_mask(16, 32, 16)),
    "long rows": ((1, 2, 64, 8), (1, 2, 2100, 8), (1, 2, 2100, 8), ops.causal_mask(64, 2100, 2036)),
}


@needs_gpu
@pytest.mark.parametrize("case", list(VJP_CASES))
def test_attend_and_its_vjp_match_cpu_float64(gpu, case):
    qs, ks, vs, mask = VJP_CASES[case]
    rng = np.random.default_rng(len(case))
    q, k, v = rng.standard_normal(qs) * 0.5, rng.standard_normal(ks) * 0.5, rng.standard_normal(vs)
    g = rng.standard_normal(qs[:-1] + vs[-1:])
    out_ref = on_cpu(ops.attend, q, k, v, mask)
    grads_ref = on_cpu(ops.attend_vjp, g, q, k, v, mask)
    check_close(ops.attend(to_gpu(q), to_gpu(k), to_gpu(v), mask), out_ref, what=f"attend {case}")
    grads = ops.attend_vjp(to_gpu(g), to_gpu(q), to_gpu(k), to_gpu(v), mask)
    for name, got, ref in zip(("dq", "dk", "dv"), grads, grads_ref):
        check_close(got, ref, what=f"{name} {case}")


# ----------------------------------------------------------------------------------------------------
# Sub-layers, model logits and loss of every architecture
# ----------------------------------------------------------------------------------------------------

MODEL_CASES = {
    "transformer": dict(seq_len=64),
    "perceiver_ar": dict(seq_len=64, latent=24),
    "double": dict(seq_len=64, latent=24),
    "compressed": dict(seq_len=64, latent=24, compressed=16),
    "s_split": dict(seq_len=64, latent=24, split=20),
    "ecp": dict(seq_len=64, half_segment=16),
    "longlora": dict(seq_len=64, group=16),
}


def _model(arch):
    cfg = ModelConfig(arch=arch, vocab=64, dim=64, heads=4, layers=2, **MODEL_CASES[arch])
    params = on_cpu(init_params, cfg, seed=3, dtype="float64")
    return cfg, params


@needs_gpu
@pytest.mark.parametrize("layer", [0, 1])
@pytest.mark.parametrize("arch", list(MODEL_CASES))
def test_attention_sublayer_matches_cpu_float64(gpu, arch, layer):
    cfg, params = _model(arch)
    p = params["layers"][layer][0]["fn"]
    x = np.random.default_rng(layer).standard_normal((2, cfg.stream_len(layer), cfg.dim))
    mod = module(arch)
    ref = on_cpu(mod.attention_layer, p, x, cfg, layer)
    got = mod.attention_layer(tree_map(to_gpu, p), to_gpu(x), cfg, layer)
    check_close(got, ref, what=f"{arch} sub-layer, layer {layer}")


@needs_gpu
@pytest.mark.parametrize("engine", ["reference", "fast"])
@pytest.mark.parametrize("arch", list(MODEL_CASES))
def test_model_logits_and_loss_match_cpu_float64(gpu, arch, engine):
    forward, loss = engines.module(engine).forward, engines.module(engine).loss
    cfg, params = _model(arch)
    tokens = np.random.default_rng(7).integers(0, cfg.vocab, (2, cfg.seq_len + 1))
    logits_ref = on_cpu(engines.module("reference").forward, params, tokens[:, :-1], cfg)
    loss_ref = on_cpu(engines.module("reference").loss, params, tokens, cfg)
    params32 = tree_map(to_gpu, params)
    check_close(
        forward(params32, tokens[:, :-1], cfg),
        logits_ref,
        MODEL_RTOL,
        MODEL_ATOL,
        MODEL_REL_NORM,
        what=f"{arch} logits",
    )
    got = loss(params32, tokens, cfg)
    assert type(got).__module__.startswith("cupy") and got.dtype == np.float32
    print(f"{arch} loss: gpu {float(got):.7f} cpu {float(loss_ref):.7f}")
    assert float(got) == pytest.approx(float(loss_ref), rel=MODEL_RTOL / 10)


@needs_gpu
@pytest.mark.parametrize("arch", ["ecp", "transformer", "double"])
def test_sublayer_matches_the_pytorch_twin_on_cuda(gpu, arch):
    """The same official layer, same weights, in PyTorch on the same GPU (both float32)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch without CUDA")
    from minicp import torch_twin
    from minicp.nn.model import unflatten

    kwargs = dict(half_segment=16) if arch == "ecp" else dict(latent=24) if arch == "double" else {}
    twin = torch_twin.build_attention_layer(arch, dim=64, heads=4, seq_len=64, **kwargs).cuda()
    p = unflatten({k: v.cpu().numpy() for k, v in twin.state_dict().items() if not k.endswith("freqs")})
    cfg = ModelConfig(arch=arch, vocab=64, dim=64, heads=4, layers=1, seq_len=64, **kwargs)
    x = np.random.default_rng(0).standard_normal((2, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = twin(torch.from_numpy(x).cuda()).cpu().numpy().astype(np.float64)
    got = module(arch).attention_layer(tree_map(B.asarray, p), B.asarray(x), cfg, 0)
    check_close(got, ref, what=f"{arch} vs torch twin")
