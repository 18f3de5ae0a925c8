"""Tests for minicp.nn.attention.longlora: S2-Attn against the dense reference, counts, leak, ECP identity."""

import numpy as np
import pytest
from autograd import grad
from autograd.test_util import check_grads
from hypothesis import given, settings
from hypothesis import strategies as st

import minicp.nn.attention as A
from minicp.config import ModelConfig
from minicp.nn import ops
from minicp.nn.attention import longlora as S2
from minicp.nn.model import forward, init_params
from minicp.nn.reference import dense_attention

SHIFTS = ("varlen", "roll")


def qkv(b, h, n, d, seed=0, e=None):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((b, h, n, d)),
        rng.standard_normal((b, h, n, d)),
        rng.standard_normal((b, h, n, e or d)),
    )


def stacked_mask(n, heads, group, shift):
    return np.stack([p.mask() for p in S2.head_patterns(n, heads, group=group, shift=shift)])  # (h, n, n)


def err(a, b):
    return f"max abs err {np.max(np.abs(np.asarray(a) - np.asarray(b))):.3g}, shapes {np.shape(a)} vs {np.shape(b)}"


# s2 arguments: group g = 2u, n = G g, heads even
s2_args = st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.sampled_from(SHIFTS))


# ---------------------------------------------------------------------------- explicit == dense reference


@settings(max_examples=25, deadline=None)
@given(s2_args, st.integers(1, 2), st.integers(1, 5), st.integers(0, 10**6))
def test_explicit_matches_dense_reference(args, b, d, seed):
    u, G, half, shift = args
    g, h = 2 * u, 2 * half
    n = G * g
    q, k, v = qkv(b, h, n, d, seed)
    out = S2.attention(q, k, v, group=g, shift=shift)
    ref = dense_attention(q, k, v, stacked_mask(n, h, g, shift))
    assert out.shape == ref.shape == (b, h, n, d)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12, err_msg=err(out, ref))


@pytest.mark.parametrize("shift", SHIFTS)
def test_dispatch_scale_and_value_width(shift):
    n, h, g = 12, 4, 6
    q, k, v = qkv(2, h, n, 3, seed=1, e=5)  # value width e != d
    out = A.attention("longlora", q, k, v, group=g, shift=shift, scale=0.7)
    ref = dense_attention(q, k, v, A.attention_mask("longlora", n, h, group=g, shift=shift), scale=0.7)
    assert out.shape == (2, h, n, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_varlen_equals_roll_away_from_the_wrap():
    """The two shift variants differ only in the wrap group: rows u..n-u-1 agree exactly."""
    n, h, g = 16, 2, 4
    u = g // 2
    q, k, v = qkv(1, h, n, 4, seed=2)
    a = S2.attention(q, k, v, group=g, shift="varlen")
    r = S2.attention(q, k, v, group=g, shift="roll")
    np.testing.assert_allclose(a[:, :, u : n - u], r[:, :, u : n - u], rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(a[:, 0], r[:, 0])  # unshifted heads identical
    assert not np.allclose(a[:, 1, :u], r[:, 1, :u])  # wrap rows differ
    np.testing.assert_allclose(a[:, 1, n - u :], r[:, 1, n - u :], rtol=1e-12)  # tail rows: same keys, same order


def test_one_group_is_causal_attention():
    """g = n: unshifted heads are plain causal attention; varlen shifted heads are two causal halves."""
    n, h = 8, 2
    q, k, v = qkv(1, h, n, 3, seed=3)
    out = S2.attention(q, k, v, group=n, shift="varlen")
    full = A.attention("transformer", q, k, v)
    np.testing.assert_allclose(out[:, 0], full[:, 0], rtol=1e-12)


# ---------------------------------------------------------------------------- patterns and counts (docs/attention-steps.md#per-layer-formulas)


@pytest.mark.parametrize("n,g", [(8, 2), (16, 4), (24, 8), (12, 12), (64, 16)])
def test_counts_match_closed_forms(n, g):
    u = g // 2
    plain = S2.unshifted_pattern(n, group=g)
    var = S2.shifted_pattern(n, group=g, shift="varlen")
    roll = S2.shifted_pattern(n, group=g, shift="roll")
    for p in (plain, roll):
        assert p.computed() == n * g
        assert p.unmasked() == n * (g + 1) // 2 == p.mask().sum()
    assert var.computed() == n * g - g * g // 2
    assert var.unmasked() == (n // g - 1) * g * (g + 1) // 2 + u * (u + 1) == var.mask().sum()
    for p in (plain, var, roll):  # every row computed once
        assert sorted(p.rows()) == list(range(n))


@pytest.mark.parametrize("shift", SHIFTS)
def test_explicit_computes_exactly_the_declared_entries(shift):
    """The score matrices attention() materialises add up to the pattern's computed count."""
    b, h, n, g = 2, 4, 24, 6
    q, k, v = qkv(b, h, n, 2, seed=4)
    with ops.record_scores() as shapes:
        S2.attention(q, k, v, group=g, shift=shift)
    materialised = sum(int(np.prod(s)) for s in shapes) // b
    assert materialised == sum(p.computed() for p in S2.head_patterns(n, h, group=g, shift=shift))
    assert all(s[-1] <= g for s in shapes)  # nothing wider than a group


def test_head_patterns_layout():
    pats = A.patterns("longlora", 16, 6, group=4, shift="roll")
    assert len(pats) == 6
    assert all(p.computed() == S2.unshifted_pattern(16, group=4).computed() for p in pats)
    masks = stacked_mask(16, 6, 4, "roll")
    assert (masks[:3] == masks[0]).all() and (masks[3:] == masks[3]).all() and not (masks[0] == masks[3]).all()
    assert masks[3][0, 14] and masks[3][0, 15] and not masks[0][0, 15]  # roll: token 0 sees tokens n-u..n-1
    assert not np.triu(stacked_mask(16, 6, 4, "varlen"), 1).any()  # varlen is causal
    with pytest.raises(ValueError, match="patterns"):
        A.pattern("longlora", 16, group=4)  # heads differ: no single pattern


@pytest.mark.parametrize("n,m", [(8, 2), (16, 4), (24, 4), (12, 6), (32, 8)])
def test_ecp_identity_of_computed_counts(n, m):
    """docs/attention-steps.md#per-layer-formulas, docs/official-code.md#ecp-versus-longlora-cost: ECP(m) = S2-varlen(g = 2m) = S2-roll - m^2, per head, summed over heads."""
    for h in (2, 4):
        s2 = sum(p.computed() for p in A.patterns("longlora", n, h, group=2 * m, shift="varlen"))
        ecp = sum(p.computed() for p in A.patterns("ecp", n, h, half_segment=m))
        roll = sum(p.computed() for p in A.patterns("longlora", n, h, group=2 * m, shift="roll"))
        assert s2 == ecp == h * m * (2 * n - m)
        assert roll - ecp == h * m * m


# ---------------------------------------------------------------------------- receptive fields (docs/receptive-fields.md)


def reach(n, masks, layers):
    """R[i, j]: input j can influence stream position i after ``layers`` layers (residual included)."""
    one = np.eye(n, dtype=bool) | np.any(masks, axis=0)  # to_out mixes the heads
    r = np.eye(n, dtype=bool)
    for _ in range(layers):
        r = (one.astype(np.int64) @ r.astype(np.int64)) > 0
    return r


@pytest.mark.parametrize("n,g", [(16, 4), (24, 6), (32, 8)])
def test_receptive_fields(n, g):
    u = g // 2
    var, roll = stacked_mask(n, 2, g, "varlen"), stacked_mask(n, 2, g, "roll")
    ecp = A.attention_mask("ecp", n, half_segment=u)[None]
    for k in range(1, n // u + 1):
        expect = np.zeros((n, n), bool)
        for i in range(n):
            expect[i, u * max(0, i // u - k) : i + 1] = True
        np.testing.assert_array_equal(reach(n, var, k), expect)  # varlen: causal, k half-groups back
        np.testing.assert_array_equal(reach(n, ecp, k), expect)  # ... exactly ECP with m = u
        for i in range(n):  # roll: plus the future tail
            if i // u < k:
                expect[i, max(0, n - u * (k - i // u)) :] = True
        np.testing.assert_array_equal(reach(n, roll, k), expect)


# ---------------------------------------------------------------------------- the roll variant's leak


@pytest.mark.parametrize("shift", SHIFTS)
def test_roll_leaks_the_future_into_the_first_rows(shift):
    """d out[rows 0..u-1 of a shifted head] / d k[last u positions]: nonzero with roll, exactly 0 with varlen."""
    n, h, g = 16, 2, 8
    u = g // 2
    q, k, v = qkv(1, h, n, 3, seed=5)
    f = lambda k_: np.sum(S2.attention(q, k_, v, group=g, shift=shift)[:, 1, :u] ** 2)
    dk = grad(f)(k)
    leak = np.abs(dk[:, 1, n - u :])
    if shift == "roll":
        assert (leak.sum(axis=-1) > 1e-8).all()  # every one of the last u keys
    else:
        assert (leak == 0).all()
        assert (dk[:, 1, u:] == 0).all()  # rows 0..u-1 see only keys 0..u-1
    assert (dk[:, 0] == 0).all()  # unshifted head untouched


@pytest.mark.parametrize("shift", SHIFTS)
def test_check_grads(shift):
    q, k, v = qkv(1, 2, 8, 2, seed=6)
    f = lambda q_, k_, v_: S2.attention(q_, k_, v_, group=4, shift=shift)
    check_grads(f, modes=["rev"])(q, k, v)  # order 2: the VJP is differentiable too


# ---------------------------------------------------------------------------- model and config


@pytest.mark.parametrize("shift", SHIFTS)
def test_model_runs(shift):
    cfg = ModelConfig(arch="longlora", vocab=32, dim=16, heads=4, layers=2, seq_len=16, group=4, shift=shift)
    params = init_params(cfg, seed=0, dtype="float64")
    assert "to_kv" in params["layers"][0][0]["fn"] and params["layers"][0][0]["fn"]["to_kv"]["weight"].shape == (32, 16)
    assert params["layers"][1][0]["fn"]["to_out"]["bias"].shape == (16,)
    tokens = np.random.default_rng(0).integers(0, 32, (2, 16))
    logits = forward(params, tokens, cfg)
    assert logits.shape == (2, 16, 32) and np.isfinite(logits).all()
    assert S2.pattern_kwargs(cfg, 1) == dict(group=4, shift=shift)


def test_model_causality_depends_on_shift():
    """Changing the last token changes the first logits with roll (the leak) but never with varlen."""
    base = dict(arch="longlora", vocab=32, dim=16, heads=2, layers=1, seq_len=16, group=8)
    tokens = np.random.default_rng(1).integers(0, 32, (1, 16))
    other = tokens.copy()
    other[0, -1] = (other[0, -1] + 1) % 32
    for shift in SHIFTS:
        cfg = ModelConfig(**base, shift=shift)
        params = init_params(cfg, seed=1, dtype="float64")
        diff = np.abs(forward(params, tokens, cfg) - forward(params, other, cfg))[0, :15].max(axis=-1)
        if shift == "varlen":
            assert (diff == 0).all()
        else:
            assert (diff[:4] > 0).all() and (diff[4:15] == 0).all()  # rows 0..u-1 leak


def test_default_config():
    cfg = ModelConfig(arch="longlora", seq_len=64, dim=32, heads=4)
    got = (cfg.group, cfg.shift, cfg.separate_kv, cfg.rope_all_layers, cfg.rope_style)
    assert got == (16, "varlen", True, True, "halves")


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(group=3), "group 3 must be even"),
        (dict(group=5), "group 5 must be even"),
        (dict(group=6), "not divisible by group 6"),
        (dict(group=0), "group must be a positive integer"),
        (dict(group=4, shift="wrap"), "shift 'wrap' is not one of"),
    ],
)
def test_validation(kwargs, match):
    q, k, v = qkv(1, 2, 8, 2)
    with pytest.raises(ValueError, match=match):
        S2.attention(q, k, v, **kwargs)
    with pytest.raises(ValueError, match=match):
        S2.head_patterns(8, 2, **kwargs)


def test_validation_heads():
    q, k, v = qkv(1, 3, 8, 2)
    assert S2.attention(q, k, v, group=4).shape == q.shape  # odd h: heads h//2 onwards are shifted
    assert len(S2.head_patterns(8, 3, group=4)) == 3
    with pytest.raises(ValueError, match="heads must be a positive integer"):
        S2.head_patterns(8, 0, group=4)
    with pytest.raises(ValueError, match="q must have shape"):
        S2.attention(q[0], k, v, group=4)
