"""The Perceiver family: PerceiverAR, Double, s-Split and Compressed Double Attention (docs/official-code.md#architectures).

Each explicit head-level kernel is held against the dense O(n^2) reference applied to the mask of the
declared pattern; the pattern's counts against docs/attention-steps.md#per-layer-formulas's closed forms (an independent
derivation); the score matrices the kernel really builds against the pattern; gradients against finite
differences; the sub-layers inside the model (shapes, Compressed's sequence-axis projection, the
residual options); and every argument check.
"""

import math

import numpy as np
import pytest
from autograd.test_util import check_grads
from hypothesis import given, settings
from hypothesis import strategies as st

from minicp import ModelConfig, forward, init_params, loss
from minicp.nn import ops
from minicp.nn.attention import common, compressed, double, perceiver_ar, s_split, transformer
from minicp.nn.reference import dense_attention

MODULES = {"perceiver_ar": perceiver_ar, "double": double, "s_split": s_split, "compressed": compressed}
ARCH_LAYERS = [(arch, later) for arch in MODULES for later in (False, True)]
IDS = [f"{arch}-{'later' if later else 'layer0'}" for arch, later in ARCH_LAYERS]
FAST = settings(max_examples=25, deadline=None)


# ----------------------------------------------------------------------------------------------------
# Strategies and closed forms
# ----------------------------------------------------------------------------------------------------


@st.composite
def cases(draw, arch, later):
    """(n, pattern kwargs, sizes) for a small pattern of ``arch`` in layer 0 or a layer >= 1."""
    layer = draw(st.integers(1, 3)) if later else 0
    L = draw(st.integers(1, 6))
    if arch == "perceiver_ar":
        H = 0 if later else draw(st.integers(1, 6))  # layers >= 1: the stream is the L latents
        return H + L, dict(latent=L, layer=layer), dict(L=L, H=H)
    if arch == "double":
        H = draw(st.integers(1, 6))
        return H + L, dict(latent=L, layer=layer), dict(L=L, H=H)
    if arch == "s_split":
        c, segments = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        H = c * segments
        return H + L, dict(latent=L, split=c, layer=layer), dict(L=L, H=H, c=c)
    p = draw(st.integers(1, 4))
    if later:  # stream: p slots + L latents
        return p + L, dict(latent=L, compressed=p, layer=layer), dict(L=L, p=p)
    H = draw(st.integers(p, 7))
    return H + L, dict(latent=L, compressed=p, layer=0), dict(L=L, H=H, p=p)


def spec_counts(arch, later, s):
    """(computed, unmasked) score entries per head, written out from docs/attention-steps.md#per-layer-formulas's table."""
    L = s["L"]
    tri = L * (L + 1) // 2
    if arch == "perceiver_ar":
        if later:
            return L * L, tri
        n = s["H"] + L
        return L * n, L * s["H"] + tri
    if arch == "double":
        H, n = s["H"], s["H"] + L
        return L * n + H * H, L * H + tri + H * H
    if arch == "s_split":
        H, n, c = s["H"], s["H"] + L, s["c"]
        return L * n + H * c, L * H + tri + H * c
    p = s["p"]
    if later:
        return L * (p + L) + p * p, L * p + tri + p * p
    H, n = s["H"], s["H"] + L
    return L * n + H * H, L * H + tri + H * H


def computed_rows(arch, later, n, s):
    """The query rows each architecture's head-level attention returns, in output order."""
    if arch == "perceiver_ar" and not later:
        return np.arange(s["H"], n)
    return np.arange(n)


def random_qkv(seed, b, h, n, d, e):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((b, h, n, d)), rng.standard_normal((b, h, n, d)), rng.standard_normal((b, h, n, e))


qkv_sizes = st.tuples(
    st.integers(1, 2), st.integers(1, 2), st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1)
)  # b, h, d, e, seed


# ----------------------------------------------------------------------------------------------------
# Head level: explicit == dense reference, counts, materialised scores, gradients
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch, later", ARCH_LAYERS, ids=IDS)
@FAST
@given(data=st.data())
def test_explicit_attention_matches_dense_reference(arch, later, data):
    mod = MODULES[arch]
    n, kw, s = data.draw(cases(arch, later))
    b, h, d, e, seed = data.draw(qkv_sizes)
    scale = data.draw(st.sampled_from([None, 1.0, 0.3]))
    q, k, v = random_qkv(seed, b, h, n, d, e)
    pat = mod.pattern(n, **kw)
    with ops.record_scores() as shapes:
        out = mod.attention(q, k, v, scale=scale, **kw)
    rows = computed_rows(arch, later, n, s)
    assert out.shape == (b, h, len(rows), e)
    np.testing.assert_array_equal(pat.rows(), rows)  # declared in the order computed
    np.testing.assert_allclose(out, dense_attention(q, k, v, pat.mask(), scale=scale), rtol=0, atol=1e-12)
    # the score matrices the kernel really built are exactly the declared blocks
    assert sum(math.prod(shape) for shape in shapes) == b * h * pat.computed()


@pytest.mark.parametrize("arch, later", ARCH_LAYERS, ids=IDS)
@FAST
@given(data=st.data())
def test_pattern_counts_match_spec_section_5(arch, later, data):
    n, kw, s = data.draw(cases(arch, later))
    pat = MODULES[arch].pattern(n, **kw)
    computed, unmasked = spec_counts(arch, later, s)
    assert pat.computed() == computed
    assert pat.unmasked() == unmasked == int(pat.mask().sum())


GRAD_CASES = {
    ("perceiver_ar", False): (5, dict(latent=3)),
    ("perceiver_ar", True): (3, dict(latent=3, layer=1)),
    ("double", False): (5, dict(latent=2)),
    ("double", True): (5, dict(latent=2, layer=2)),
    ("s_split", False): (6, dict(latent=2, split=2)),
    ("s_split", True): (6, dict(latent=2, split=2, layer=1)),
    ("compressed", False): (6, dict(latent=2, compressed=2)),
    ("compressed", True): (4, dict(latent=2, compressed=2, layer=1)),
}


@pytest.mark.parametrize("arch, later", ARCH_LAYERS, ids=IDS)
def test_gradients_match_finite_differences(arch, later):
    n, kw = GRAD_CASES[arch, later]
    q, k, v = random_qkv(7, 1, 2, n, 3, 2)
    check_grads(lambda q, k, v: MODULES[arch].attention(q, k, v, **kw), modes=["rev"], order=1)(q, k, v)


@FAST
@given(sizes=cases("compressed", False), qkv=qkv_sizes)
def test_the_family_shares_its_pieces(sizes, qkv):
    """PerceiverAR layer 0 = Double's latent rows; s-Split with one segment = Double; Compressed layer 0
    = Double; Compressed later = Double on the p + L stream; PerceiverAR later = causal attention."""
    n, kw, s = sizes
    L, H, p = s["L"], s["H"], s["p"]
    b, h, d, e, seed = qkv
    q, k, v = random_qkv(seed, b, h, n, d, e)
    dbl = double.attention(q, k, v, latent=L)
    np.testing.assert_array_equal(perceiver_ar.attention(q, k, v, latent=L), dbl[:, :, H:])
    np.testing.assert_array_equal(s_split.attention(q, k, v, latent=L, split=H), dbl)
    np.testing.assert_array_equal(compressed.attention(q, k, v, latent=L, compressed=p), dbl)
    m = p + L
    np.testing.assert_array_equal(
        compressed.attention(q[:, :, :m], k[:, :, :m], v[:, :, :m], latent=L, compressed=p, layer=1),
        double.attention(q[:, :, :m], k[:, :, :m], v[:, :, :m], latent=L),
    )
    qL, kL, vL = q[:, :, :L], k[:, :, :L], v[:, :, :L]
    np.testing.assert_allclose(
        perceiver_ar.attention(qL, kL, vL, latent=L, layer=1), transformer.attention(qL, kL, vL), rtol=0, atol=1e-14
    )


def test_patterns_of_layers_that_do_not_change():
    """Double and s-Split are the same in every layer; the others change after layer 0."""
    for mod, kw in ((double, dict(latent=3)), (s_split, dict(latent=3, split=3))):
        np.testing.assert_array_equal(mod.pattern(9, layer=4, **kw).mask(), mod.pattern(9, **kw).mask())
    np.testing.assert_array_equal(perceiver_ar.pattern(3, latent=3, layer=1).mask(), np.tril(np.ones((3, 3), bool)))
    expected = np.zeros((5, 5), bool)
    expected[:2, :2] = True  # p = 2 slots, unmasked
    expected[2:] = np.tril(np.ones((3, 5), bool), k=2)  # L = 3 latents: all slots, causal latents
    np.testing.assert_array_equal(compressed.pattern(5, latent=3, compressed=2, layer=1).mask(), expected)


# ----------------------------------------------------------------------------------------------------
# Sub-layers and the model
# ----------------------------------------------------------------------------------------------------


def tiny_config(arch, **overrides):
    kw = dict(arch=arch, vocab=11, dim=8, heads=2, layers=3, seq_len=11, latent=4)
    kw.update({"s_split": dict(split=7), "compressed": dict(compressed=3)}.get(arch, {}))
    kw.update(overrides)
    return ModelConfig(**kw)


def perturbed_params(cfg, seed=0):
    """float64 params with LayerNorm affines moved off 1/0, so a swapped or skipped norm shows."""
    params = init_params(cfg, seed=seed, dtype="float64")
    rng = np.random.default_rng(seed + 1)

    def walk(node):
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node + 0.1 * rng.standard_normal(node.shape)

    return walk(params)


@pytest.mark.parametrize("arch", MODULES)
def test_model_forward_loss_and_stream_lengths(arch):
    cfg = tiny_config(arch)
    params = perturbed_params(cfg)
    tokens = np.random.default_rng(3).integers(0, cfg.vocab, (2, cfg.seq_len + 1))
    logits = forward(params, tokens[:, :-1], cfg)
    rows = (
        cfg.latent if arch == "perceiver_ar" else cfg.compressed + cfg.latent if arch == "compressed" else cfg.seq_len
    )
    assert logits.shape == (2, rows, cfg.vocab) == (2, cfg.out_len, cfg.vocab)
    assert np.isfinite(loss(params, tokens, cfg))
    # each sub-layer maps its stream to the next one and its skip has the same shape
    mod = MODULES[arch]
    x = np.random.default_rng(4).standard_normal((2, cfg.seq_len, cfg.dim))
    for layer in range(cfg.layers):
        assert x.shape == (2, cfg.stream_len(layer), cfg.dim)
        fn = params["layers"][layer][0]["fn"]
        assert set(fn) == set(mod.param_spec(cfg, layer))
        out = mod.attention_layer(fn, x, cfg, layer)
        assert out.shape == mod.skip(x, cfg, layer).shape == (2, cfg.stream_len(layer + 1), cfg.dim)
        x = out


@pytest.mark.parametrize("arch", MODULES)
def test_model_loss_gradient_matches_finite_differences(arch):
    cfg = tiny_config(arch, layers=2, seq_len=7, latent=3, **({"split": 2} if arch == "s_split" else {}))
    params = perturbed_params(cfg, seed=5)
    tokens = np.random.default_rng(6).integers(0, cfg.vocab, (2, cfg.seq_len + 1))
    check_grads(lambda prm: loss(prm, tokens, cfg), modes=["rev"], order=1)(params)


def test_official_parameter_names_and_shapes():
    cfg = tiny_config("compressed")
    for layer in range(cfg.layers):  # projection_hist in every layer (dead code after layer 0)
        spec = compressed.param_spec(cfg, layer)
        assert list(spec) == ["norm", "to_q", "to_kv", "w_out", "projection_hist"]
        assert spec["projection_hist"] == ("linear", cfg.compressed, cfg.history, True)
    assert "w_out" in perceiver_ar.param_spec(tiny_config("perceiver_ar"), 0)
    assert "to_out" in double.param_spec(tiny_config("double"), 0)
    assert "to_out" in s_split.param_spec(tiny_config("s_split"), 0)
    wide = compressed.param_spec(tiny_config("compressed", separate_kv=True), 0)["to_kv"]
    assert wide == ("linear", 16, 8, False)
    assert perceiver_ar.pattern_kwargs(cfg, 2) == dict(latent=4, layer=2)
    assert compressed.pattern_kwargs(cfg, 1) == dict(latent=4, compressed=3, layer=1)


def _dense_heads(q, k, v, history, n):
    """Heads by the dense reference, with the mask written out by hand, merged to (b, n, D)."""
    mask = np.zeros((n, n), bool)
    mask[:history, :history] = True
    mask[history:] = np.tril(np.ones((n - history, n), bool), k=history)
    o = dense_attention(q, k, v, mask, scale=1.0)  # (b, h, n, d)
    b, h, _, d = o.shape
    return o.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def test_compressed_sequence_axis_projection():
    """Layer 0: O_c[b, r, c] = sum_j Wp[r, j] O_h[b, j, c] + bp[r] (einsum), then cat with the latent
    rows and w_out; the official route ('b n d -> b d n', Linear(H, p), back) gives the same numbers."""
    cfg = tiny_config("compressed")
    params = perturbed_params(cfg)
    H, P, L, n = cfg.history, cfg.compressed, cfg.latent, cfg.seq_len
    x = np.random.default_rng(8).standard_normal((2, n, cfg.dim))
    fn = params["layers"][0][0]["fn"]
    Wp, bp = fn["projection_hist"]["weight"], fn["projection_hist"]["bias"]
    O = _dense_heads(*common.project(fn, x, cfg, 0), H, n)  # (b, n, D)
    O_c = np.einsum("rj,bjc->brc", Wp, O[:, :H]) + bp[None, :, None]  # (b, p, D)
    O_official = (O[:, :H].transpose(0, 2, 1) @ Wp.T + bp).transpose(0, 2, 1)  # Linear on 'b d n'
    np.testing.assert_allclose(O_c, O_official, rtol=0, atol=1e-13)
    np.testing.assert_allclose(compressed.compress_history(O[:, :H], fn["projection_hist"]), O_c, rtol=0, atol=1e-13)
    expected = np.concatenate([O_c, O[:, H:]], axis=1) @ fn["w_out"]["weight"].T + fn["w_out"]["bias"]
    out = compressed.attention_layer(fn, x, cfg, 0)
    assert out.shape == (2, P + L, cfg.dim)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)

    # layer >= 1: plain Double Attention over p + L rows, projection_hist unused
    fn1 = params["layers"][1][0]["fn"]
    x1 = np.random.default_rng(9).standard_normal((2, P + L, cfg.dim))
    expected1 = (
        _dense_heads(*common.project(fn1, x1, cfg, 1), P, P + L) @ fn1["w_out"]["weight"].T + fn1["w_out"]["bias"]
    )
    np.testing.assert_allclose(compressed.attention_layer(fn1, x1, cfg, 1), expected1, rtol=0, atol=1e-12)
    fn1_other = dict(
        fn1, projection_hist={"weight": fn1["projection_hist"]["weight"] + 1.0, "bias": fn1["projection_hist"]["bias"]}
    )
    np.testing.assert_array_equal(
        compressed.attention_layer(fn1_other, x1, cfg, 1), compressed.attention_layer(fn1, x1, cfg, 1)
    )


def test_perceiver_ar_layer0_keeps_only_latent_queries():
    """The L outputs of layer 0 use the latent queries at their true (rotated) positions H..n-1."""
    cfg = tiny_config("perceiver_ar")
    params = perturbed_params(cfg)
    fn = params["layers"][0][0]["fn"]
    x = np.random.default_rng(10).standard_normal((2, cfg.seq_len, cfg.dim))
    q, k, v = common.project(fn, x, cfg, 0)
    H = cfg.history
    o = _dense_heads(q, k, v, H, cfg.seq_len)[:, H:]  # latent rows only
    expected = o @ fn["w_out"]["weight"].T + fn["w_out"]["bias"]
    np.testing.assert_allclose(perceiver_ar.attention_layer(fn, x, cfg, 0), expected, rtol=0, atol=1e-12)


def test_residuals():
    x = np.arange(2 * 11 * 3, dtype=float).reshape(2, 11, 3)
    par = tiny_config("perceiver_ar")  # n 11, L 4, H 7
    np.testing.assert_array_equal(perceiver_ar.skip(x, par, 0), x[:, 7:])
    np.testing.assert_array_equal(perceiver_ar.skip(x[:, :4], par, 1), x[:, :4])
    for arch in ("double", "s_split"):
        for layer in (0, 2):
            assert MODULES[arch].skip(x, tiny_config(arch), layer) is x
    official = tiny_config("compressed")  # n 11, L 4, H 7, p 3
    paper = tiny_config("compressed", compressed_residual="paper")
    np.testing.assert_array_equal(
        compressed.skip(x, official, 0), x[:, :7]
    )  # official first-layer residual: x[:, :p+L]
    np.testing.assert_array_equal(compressed.skip(x, paper, 0), x[:, [0, 1, 2, 7, 8, 9, 10]])
    np.testing.assert_array_equal(compressed.skip(x[:, :7], paper, 1), x[:, :7])


def test_compressed_residual_options_in_the_model():
    """The two residuals give different models when p < H and the same one when p = H (the first-layer residual quirk vanishes)."""
    tokens = np.random.default_rng(11).integers(0, 11, (2, 11))
    for p, same in ((3, False), (7, True)):
        cfg = tiny_config("compressed", compressed=p)
        params = perturbed_params(cfg)
        a = forward(params, tokens, cfg)
        b = forward(params, tokens, cfg.replace(compressed_residual="paper"))
        assert np.array_equal(a, b) == same


# ----------------------------------------------------------------------------------------------------
# Argument checks: each error names its parameter and the rule
# ----------------------------------------------------------------------------------------------------

q8 = random_qkv(0, 1, 1, 8, 2, 2)

BAD = [
    (lambda: perceiver_ar.pattern(16, latent=17), r"latent 17 must be at most seq_len 16"),
    (lambda: perceiver_ar.pattern(8, latent=0), r"latent must be a positive integer, got 0"),
    (lambda: perceiver_ar.pattern(8, latent=2.0), r"latent must be a positive integer"),
    (lambda: perceiver_ar.pattern(8, latent=4, layer=1), r"seq_len 8 must equal latent 4 in layer 1"),
    (lambda: perceiver_ar.pattern(8, latent=4, layer=-1), r"layer must be a non-negative integer"),
    (lambda: perceiver_ar.attention(*q8, latent=9), r"latent 9 must be at most seq_len 8"),
    (lambda: double.pattern(8, latent=4, layer=True), r"layer must be a non-negative integer"),
    (lambda: double.attention(*q8, latent=9), r"latent 9 must be at most seq_len 8"),
    (
        lambda: s_split.pattern(16, latent=4, split=5),
        r"history 12 \(= seq_len 16 - latent 4\) is not divisible by split 5",
    ),
    (lambda: s_split.attention(*q8, latent=3, split=0), r"split must be a positive integer"),
    (lambda: s_split.pattern(8, latent=4, split=None), r"split must be a positive integer"),
    (lambda: compressed.pattern(12, latent=4, compressed=9), r"compressed 9 must be at most history 8"),
    (lambda: compressed.pattern(12, latent=4, compressed=0), r"compressed must be a positive integer"),
    (
        lambda: compressed.pattern(12, latent=4, compressed=3, layer=1),
        r"seq_len 12 must equal compressed 3 \+ latent 4 in layer 1",
    ),
    (lambda: compressed.attention(*q8, latent=4, compressed=5), r"compressed 5 must be at most history 4"),
    (lambda: double.attention(q8[0][0], *q8[1:], latent=4), r"q must have shape \(batch, heads, seq_len, head_dim\)"),
    (
        lambda: perceiver_ar.attention(q8[0], q8[1][:, :, :7], q8[2][:, :, :7], latent=4),
        r"q has 8 positions but k has 7",
    ),
]


@pytest.mark.parametrize(
    "call, message", BAD, ids=[m.split(" ")[0].strip("\\") + f"-{i}" for i, (_, m) in enumerate(BAD)]
)
def test_bad_arguments_raise_value_errors_naming_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()
