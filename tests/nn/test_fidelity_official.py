"""Fidelity with the official code: RoPE buffers at every head dim, the official checkpoint layout,
every input length the official modules accept, and gradients of the loss for every parameter.

Golden values come from torch: the PyTorch twin (minicp/torch_twin/, itself checked against the
official modules) and, for the RoPE frequencies, torch's float32 arithmetic and mpmath. Skipped without torch.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from autograd import grad  # noqa: E402

from minicp import (  # noqa: E402
    ModelConfig,
    flatten,
    forward,
    load_official_state_dict,
    loss,
    torch_twin,  # noqa: E402
)
from minicp.lm.generate import next_token_logits  # noqa: E402
from minicp.nn import rope as R  # noqa: E402
from minicp.nn.model import length_problem  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def load(state, cfg, dtype="float64"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_official_state_dict(state, cfg, dtype=dtype)


def randomised_twin(arch, seed=3, **kw):
    twin = torch_twin.build(arch, dtype=torch.float64, seed=seed, **kw)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in twin.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)
    return twin


# ---- RoPE frequencies ------------------------------------------------------------------------------


def test_rope_frequencies_equal_torch_for_every_head_dim():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.prec = 200
    not_rounded = []
    for d in range(1, 257):
        ours = R.rope_frequencies(d)
        theirs = torch_twin.RotaryFreqs(d).freqs.numpy()
        assert ours.dtype == np.float32 and ours.shape == theirs.shape == (d // 2,)
        exps = np.arange(0, d - d % 2, 2, dtype=np.float32) / np.float32(d)
        exact_pow = np.array([np.float32(float(mpmath.power(10000, mpmath.mpf(float(e))))) for e in exps], np.float32)
        np.testing.assert_array_equal(ours, np.float32(1.0) / exact_pow)  # correctly rounded, every d
        torch_pow = (10000.0 ** torch.from_numpy(exps)).numpy()
        rounded = torch_pow == exact_pow
        np.testing.assert_array_equal(ours[rounded], theirs[rounded])  # equal wherever torch rounds correctly
        near = [np.float32(1.0) / np.nextafter(exact_pow, np.float32(s * np.inf)) for s in (-1, 1)]
        assert np.all(rounded | (theirs == near[0]) | (theirs == near[1])), d  # elsewhere: pow one ulp off
        assert np.all(np.abs(ours - theirs) <= 2 * np.spacing(theirs)), d
        if not rounded.all():
            not_rounded.append(d)
    for d in (64, 128):
        if d not in not_rounded:  # the dims of the paper's models
            np.testing.assert_array_equal(R.rope_frequencies(d), torch_twin.RotaryFreqs(d).freqs.numpy())


@pytest.mark.parametrize(
    "arch,sizes",
    [
        ("ecp", dict(half_segment=4)),
        ("double", dict(latent=6)),
        ("perceiver_ar", dict(latent=8)),
        ("s_split", dict(latent=4, split=6)),
    ],
)
@pytest.mark.parametrize("d", [64, 128])
def test_logits_at_head_dims_64_and_128_match_the_twin(arch, sizes, d):
    twin = randomised_twin(arch, vocab=23, dim=2 * d, heads=2, layers=2, seq_len=16, **sizes)
    cfg = ModelConfig(arch=arch, vocab=23, dim=2 * d, heads=2, layers=2, seq_len=16, **sizes)
    tokens = np.random.default_rng(d).integers(0, 23, (2, 16))
    with torch.no_grad():
        expected = twin(torch.from_numpy(tokens)).numpy()
    assert rel(forward(load(twin.state_dict(), cfg), tokens, cfg), expected) <= 1e-12


def test_loader_keeps_the_official_buffer_and_refuses_two_ulps():
    cfg = ModelConfig(arch="double", vocab=23, dim=128, heads=2, layers=2, seq_len=16, latent=6)
    twin = randomised_twin("double", vocab=23, dim=128, heads=2, layers=2, seq_len=16, latent=6)
    freqs = twin.layers[0][0].fn.pos_emb.freqs
    with torch.no_grad():  # a buffer one ulp off (another CPU's pow)
        freqs[5] = float(np.nextafter(np.float32(freqs[5].item()), np.float32(1)))
    tokens = np.random.default_rng(0).integers(0, 23, (1, 16))
    with torch.no_grad():
        expected = twin(torch.from_numpy(tokens)).numpy()
    params = load(twin.state_dict(), cfg)
    assert params["layers"][1][0]["fn"]["pos_emb"]["freqs"][5] == freqs[5].item()
    assert rel(forward(params, tokens, cfg), expected) <= 1e-12
    state = dict(twin.state_dict())
    state["layers.1.0.fn.pos_emb.freqs"] = state["layers.1.0.fn.pos_emb.freqs"].clone()
    state["layers.1.0.fn.pos_emb.freqs"][3] *= 1 + 3e-7
    with pytest.raises(ValueError, match=r"layers\.1\.0\.fn\.pos_emb\.freqs \(layer 1\).*one ulp"):
        load_official_state_dict(state, cfg)


# ---- the official checkpoint file --------------------------------------------------------------------


def test_official_checkpoint_file_loads(tmp_path):
    cfg = ModelConfig(arch="ecp", vocab=23, dim=16, heads=2, layers=2, seq_len=16, half_segment=4)
    twin = randomised_twin("ecp", vocab=23, dim=16, heads=2, layers=2, seq_len=16, half_segment=4)
    opt = torch.optim.AdamW(twin.parameters())
    twin(torch.zeros(1, 16, dtype=torch.long)).sum().backward()
    opt.step()
    path = tmp_path / "best.pt"  # as the official main writes it (wrapper's model. prefix)
    torch.save(
        {
            "epoch": 7,
            "state_dict": {"model." + k: v for k, v in twin.state_dict().items()},
            "optimizer": opt.state_dict(),
        },
        path,
    )
    with pytest.warns(UserWarning) as caught:
        params = load_official_state_dict(str(path), cfg, dtype="float64")
    said = " | ".join(str(w.message) for w in caught)
    assert "ignored checkpoint entries epoch, optimizer" in said and "stripped the name prefix 'model.'" in said, said
    tokens = np.random.default_rng(1).integers(0, 23, (1, 16))
    with torch.no_grad():
        expected = twin(torch.from_numpy(tokens)).numpy()
    assert rel(forward(params, tokens, cfg), expected) <= 1e-12
    dp = {"module.model." + k: v for k, v in twin.state_dict().items()}  # DataParallel around the wrapper
    with pytest.warns(UserWarning, match="prefix 'module.model.'"):
        assert rel(forward(load_official_state_dict(dp, cfg, dtype="float64"), tokens, cfg), expected) <= 1e-12


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_weights_are_converted(half):
    cfg = ModelConfig(arch="perceiver_ar", vocab=23, dim=16, heads=2, layers=2, seq_len=16, latent=8)
    twin = torch_twin.build("perceiver_ar", vocab=23, dim=16, heads=2, layers=2, seq_len=16, latent=8).to(half)
    name = str(half).replace("torch.", "")
    with pytest.warns(UserWarning, match=f"converted {name} tensors to float32"):
        params = load_official_state_dict(twin.state_dict(), cfg)
    flat = flatten(params)
    for key, value in twin.state_dict().items():
        np.testing.assert_array_equal(flat[key], value.float().numpy())
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        load_official_state_dict(twin.state_dict(), cfg, dtype="bfloat16")
    with pytest.raises(TypeError, match="config must be a minicp.ModelConfig"):
        load_official_state_dict(twin.state_dict(), "perceiver_ar")


# ---- every input length, generate, gradients ------------------------------------------------------

WINDOW_CASES = [
    ("perceiver_ar", dict(latent=6)),
    ("perceiver_ar", dict(latent=12)),
    ("double", dict(latent=4)),
    ("double", dict(latent=12)),
    ("s_split", dict(latent=4, split=4)),
    ("s_split", dict(latent=12)),
    ("compressed", dict(latent=4, compressed=3)),
    ("compressed", dict(latent=4, compressed=8)),
    ("ecp", dict(half_segment=4)),
    ("transformer", dict()),
]


@pytest.mark.parametrize(
    "arch,sizes", WINDOW_CASES, ids=[f"{a}-{'-'.join(f'{k}{v}' for k, v in s.items())}" for a, s in WINDOW_CASES]
)
def test_every_accepted_length_matches_the_twin(arch, sizes):
    n = 12
    twin = randomised_twin(arch, vocab=17, dim=10, heads=2, layers=3, seq_len=n, **sizes)
    cfg = ModelConfig(arch=arch, vocab=17, dim=10, heads=2, layers=3, seq_len=n, **sizes)
    params = load(twin.state_dict(), cfg)
    tokens = np.random.default_rng(2).integers(0, 17, (2, n + 1))
    accepted = []
    for t in range(1, n + 1):
        quirk = arch == "perceiver_ar" and cfg.history > 0 and t == cfg.history + 1
        if length_problem(cfg, t, official_broadcast=quirk) is not None:
            continue
        if arch == "ecp" and t not in (n, cfg.num_segments):
            continue  # minicp's extension, not an official length
        with torch.no_grad():
            expected = twin(torch.from_numpy(tokens[:, :t])).numpy()
        got = forward(params, tokens[:, :t], cfg, official_broadcast=quirk)
        assert got.shape == expected.shape, t
        assert rel(got, expected) <= 1e-12, t
        if not quirk:  # generate reads the last row unpadded
            assert rel(next_token_logits(params, tokens[:, :t], cfg), expected[:, -1]) <= 1e-12, t
        accepted.append(t)
    every = list(range(1, n + 1))
    if arch == "perceiver_ar":
        every = [cfg.history + 1, n] if cfg.history else every
    elif arch == "s_split" and cfg.history:
        every = [t for t in every if t > cfg.history or t % (cfg.history // cfg.split) == 0]
    elif arch == "compressed":
        every = list(range(cfg.history, n + 1)) if cfg.compressed == cfg.history else [n]
    elif arch == "ecp":
        every = [cfg.num_segments, n]
    assert accepted == every


def test_perceiver_ar_broadcast_quirk_is_rejected_with_an_explanation():
    cfg = ModelConfig(arch="perceiver_ar", vocab=17, dim=10, heads=2, layers=2, seq_len=12, latent=6)
    params = load(
        torch_twin.build("perceiver_ar", vocab=17, dim=10, heads=2, layers=2, seq_len=12, latent=6).state_dict(), cfg
    )
    with pytest.raises(ValueError, match="broadcasts its single row.*official_broadcast=True"):
        forward(params, np.zeros((1, 7), int), cfg)
    with pytest.raises(TypeError, match="official_broadcast must be True or False"):
        forward(params, np.zeros((1, 12), int), cfg, official_broadcast="yes")


GRAD_CASES = [
    ("perceiver_ar", dict(latent=5)),
    ("perceiver_ar", dict(latent=12)),
    ("double", dict(latent=7)),
    ("double", dict(latent=12)),
    ("s_split", dict(latent=4, split=4)),
    ("s_split", dict(latent=12)),
    ("compressed", dict(latent=4, compressed=3)),
    ("ecp", dict(half_segment=3)),
    ("transformer", dict()),
]


@pytest.mark.parametrize(
    "arch,sizes", GRAD_CASES, ids=[f"{a}-{'-'.join(f'{k}{v}' for k, v in s.items())}" for a, s in GRAD_CASES]
)
def test_loss_gradients_match_torch_for_every_parameter(arch, sizes):
    n = 12
    twin = randomised_twin(arch, vocab=17, dim=12, heads=3, layers=2, seq_len=n, **sizes)
    cfg = ModelConfig(arch=arch, vocab=17, dim=12, heads=3, layers=2, seq_len=n, **sizes)
    params = load(twin.state_dict(), cfg)
    tokens = np.random.default_rng(4).integers(0, 17, (2, n + 1))
    value = torch_twin.wrapper_loss(twin, torch.from_numpy(tokens), cfg.latent)
    value.backward()
    assert float(loss(params, tokens, cfg)) == pytest.approx(value.item(), rel=1e-12)
    grads = flatten(grad(loss)(params, tokens, cfg))
    for name, p in twin.named_parameters():
        expected = p.grad.numpy() if p.grad is not None else np.zeros(tuple(p.shape))
        if np.any(expected):
            assert rel(grads[name], expected) <= 1e-11, name
        else:
            assert np.max(np.abs(grads[name])) <= 1e-12, name


def test_longlora_odd_heads_shift_from_h_half():
    from minicp.nn.attention import longlora

    pats = longlora.head_patterns(16, 5, group=8)
    plain, shifted = longlora.unshifted_pattern(16, group=8), longlora.shifted_pattern(16, group=8)
    assert [p.mask().tolist() for p in pats] == [plain.mask().tolist()] * 2 + [shifted.mask().tolist()] * 3
    cfg = ModelConfig(arch="longlora", vocab=17, dim=18, heads=3, layers=1, seq_len=16, group=8)
    from minicp import init_params

    assert forward(init_params(cfg), np.zeros((1, 16), int), cfg).shape == (1, 16, 17)
