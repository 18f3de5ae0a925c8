"""Self-checks of minicp.torch_twin, the PyTorch oracle: state_dict names and shapes, output shapes,
causality, and a few exact equivalences derived in docs/. Tiny configs, float64; runs in a few seconds."""

import pytest

torch = pytest.importorskip("torch")

from minicp import torch_twin as T  # noqa: E402

V, D, HEADS, LAYERS, N = 11, 12, 3, 2, 16  # d = 4
d = D // HEADS
ARCHS = ("transformer", "perceiver_ar", "double", "compressed", "s_split", "ecp")


def tiny(arch, **kw):
    return T.build(arch, vocab=V, dim=D, heads=HEADS, layers=LAYERS, seq_len=N, **kw)


def expected_shapes(arch, H=N // 2, p=N // 4):
    """The official state_dict (docs/official-code.md#shared-pieces), written out by hand for the tiny config."""
    out_name = "w_out" if arch in ("perceiver_ar", "compressed") else "to_out"
    shapes = {"token_emb.weight": (V, D)}
    for i in range(LAYERS):
        a, f = f"layers.{i}.0.", f"layers.{i}.1."
        shapes.update(
            {
                a + "norm.weight": (D,),
                a + "norm.bias": (D,),
                a + "fn.norm.weight": (d,),
                a + "fn.norm.bias": (d,),
                a + "fn.pos_emb.freqs": (d // 2,),
                a + "fn.to_q.weight": (D, D),
                a + "fn.to_kv.weight": (D, D),
                a + f"fn.{out_name}.weight": (D, D),
                a + f"fn.{out_name}.bias": (D,),
                f + "norm.weight": (D,),
                f + "norm.bias": (D,),
                f + "fn.net.0.weight": (4 * D, D),
                f + "fn.net.0.bias": (4 * D,),
                f + "fn.net.3.weight": (D, 4 * D),
                f + "fn.net.3.bias": (D,),
            }
        )
        if arch == "ecp":
            shapes.update({a + "fn.to_out_0.weight": (D, D), a + "fn.to_out_0.bias": (D,)})
        if arch == "compressed":
            shapes.update({a + "fn.projection_hist.weight": (p, H), a + "fn.projection_hist.bias": (p,)})
    shapes.update(
        {"to_logits.0.weight": (D,), "to_logits.0.bias": (D,), "to_logits.1.weight": (V, D), "to_logits.1.bias": (V,)}
    )
    return shapes


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_names_and_shapes(arch):
    sd = tiny(arch).state_dict()
    want = expected_shapes(arch)
    assert set(sd) == set(want)
    assert {k: tuple(v.shape) for k, v in sd.items()} == want
    theta = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) * 2 / d)
    torch.testing.assert_close(sd["layers.1.0.fn.pos_emb.freqs"], theta, rtol=1e-7, atol=0)
    assert all(v.dtype == torch.float64 for v in sd.values())


def rows_and_positions(arch, model):
    """(logit rows that are causal, the stream position of each): docs/receptive-fields.md#summary-table."""
    H, L, p = model.history, model.latent, model.compressed
    if arch in ("transformer", "ecp"):
        return list(range(N)), list(range(N))
    if arch == "perceiver_ar":
        return list(range(L)), list(range(H, N))
    if arch == "compressed":
        return list(range(p, p + L)), list(range(H, N))
    return list(range(H, N)), list(range(H, N))  # double, s_split: latent rows only


@pytest.mark.parametrize("arch", ARCHS)
def test_output_shapes_and_causality(arch):
    model = tiny(arch, seed=1)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (2, N), generator=g)
    with torch.no_grad():
        base = model(tokens)
    n_rows = {"perceiver_ar": N // 2, "compressed": N // 4 + N // 2}.get(arch, N)
    assert base.shape == (2, n_rows, V)
    rows, positions = rows_and_positions(arch, model)
    for t in range(N - 1):
        changed = tokens.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1 + torch.randint(0, V - 1, (2, N - t - 1), generator=g)) % V
        with torch.no_grad():
            new = model(changed)
        for r, pos in zip(rows, positions):
            if pos <= t:
                torch.testing.assert_close(new[:, r], base[:, r], rtol=0, atol=1e-12)
            elif pos == t + 1:  # not blind: the first changed position's own row does move
                assert (new[:, r] - base[:, r]).abs().max() > 1e-6


def test_transformer_is_ecp_with_two_blocks_and_shared_out():
    """docs/official-code.md#full-attention-ecp-conventions: official ECP with num_segments = 2 and to_out_0 := to_out is plain causal attention."""
    full = tiny("transformer", seed=2)
    ecp = tiny("ecp", half_segment=N // 2, seed=5)
    sd = dict(full.state_dict())
    for i in range(LAYERS):
        for kind in ("weight", "bias"):
            sd[f"layers.{i}.0.fn.to_out_0.{kind}"] = sd[f"layers.{i}.0.fn.to_out.{kind}"]
    ecp.load_state_dict(sd)
    tokens = torch.randint(0, V, (3, N), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ecp(tokens), full(tokens), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer_index", [0, 1])
@pytest.mark.parametrize("m", [2, 4, 8])
def test_ecp_blockwise_equals_dense_mask(m, layer_index):
    """The O(n m) blocked ECP layer equals a dense n x n masked attention where row i sees keys
    [m * max(0, i // m - 1), i] (docs/official-code.md#ecp), with to_out_0 on the first block and to_out after."""
    layer = T.build_attention_layer(
        "ecp", dim=D, heads=HEADS, seq_len=N, half_segment=m, layer_index=layer_index, dtype=torch.float64, seed=3
    )
    x = torch.randn(2, N, D, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    q = layer.to_q(x).view(2, N, HEADS, d).transpose(1, 2)
    kv = layer.to_kv(x).view(2, N, HEADS, d).transpose(1, 2)
    if layer_index == 0:
        ang = layer.pos_emb.angles(N)
        q, kv = T.apply_rope(q, ang), T.apply_rope(kv, ang)
    i = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    visible = (j <= i) & (j >= m * torch.clamp(i // m - 1, min=0))
    scores = (q * d**-0.5) @ kv.transpose(-1, -2)
    probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
    merged = (probs @ kv).transpose(1, 2).reshape(2, N, D)
    want = torch.cat((layer.to_out_0(merged[:, :m]), layer.to_out(merged[:, m:])), dim=1)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer_index", [0, 1])
def test_attention_layer_shapes(arch, layer_index):
    layer = T.build_attention_layer(arch, dim=D, heads=HEADS, seq_len=N, layer_index=layer_index)
    L, p = layer.latent if hasattr(layer, "latent") else N, N // 4
    n_in = {("perceiver_ar", 1): L, ("compressed", 1): p + L}.get((arch, layer_index), N)
    n_out = {"perceiver_ar": L, "compressed": p + L}.get(arch, n_in)
    assert layer.input_len == n_in
    x = torch.randn(2, n_in, D)
    with torch.no_grad():
        assert layer(x).shape == (2, n_out, D)
    assert layer.to_q.weight.dtype == torch.float32


def test_seeding_and_norm_perturbation():
    state = torch.random.get_rng_state()
    a, b = tiny("double", seed=7), tiny("double", seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    plain = tiny("double", seed=7, perturb_norms=False)
    assert torch.equal(
        plain.state_dict()["layers.0.0.fn.to_q.weight"], a.state_dict()["layers.0.0.fn.to_q.weight"]
    )  # perturbation touches only LayerNorms
    assert torch.equal(plain.state_dict()["layers.0.0.norm.weight"], torch.ones(D, dtype=torch.float64))
    assert not torch.equal(a.state_dict()["layers.0.0.norm.weight"], a.state_dict()["layers.1.0.norm.weight"])


@pytest.mark.parametrize("arch", ["perceiver_ar", "ecp"])
def test_wrapper_loss(arch):
    model = tiny(arch, seed=2)
    x = torch.randint(0, V, (2, N + 1), generator=torch.Generator().manual_seed(6))
    L = model.latent
    with torch.no_grad():
        logits = model(x[:, :N])[:, -L:]
        logp = logits.log_softmax(-1)
        want = -logp.gather(-1, x[:, -L:, None]).mean()
        torch.testing.assert_close(T.wrapper_loss(model, x, L), want, rtol=1e-12, atol=1e-12)
