"""The kernel pattern exports (minicp.analysis.kernel_pattern): masks, predicates, block lists, FlexAttention."""

import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import HEAD_CASES, model_configs

import minicp
from minicp.analysis import kernel_pattern as kp
from minicp.nn.attention import module as arch_module
from minicp.nn.attention import pattern_args_for

ROOT = pathlib.Path(__file__).resolve().parents[2]

CASES = HEAD_CASES


# ----------------------------------------------------------------------------------------------------
# kernel_pattern
# ----------------------------------------------------------------------------------------------------


def layer_patterns(cfg):
    """(n, heads, pattern_args) of every layer of a ModelConfig."""
    mod = arch_module(cfg.arch)
    return [(cfg.stream_len(layer), cfg.heads, mod.pattern_kwargs(cfg, layer)) for layer in range(cfg.layers)]


@settings(max_examples=40, deadline=None)
@given(cfg=model_configs())
def test_allowed_equals_dense_mask_every_arch(cfg):
    for n, heads, args in layer_patterns(cfg):
        dense = kp.dense_mask(cfg.arch, n, heads, **args)
        assert dense.shape == (heads, n, n)
        assert np.array_equal(dense, minicp.attention_mask(cfg.arch, n, heads, **args))
        allowed = kp.allowed_fn(cfg.arch, n, heads, **args)
        i = np.arange(n)
        got = allowed(i[None, :, None], i[None, None, :], np.arange(heads)[:, None, None])
        assert got.shape == (heads, n, n) and np.array_equal(got, dense)
        # scalars, and the generated source, agree too
        ns = {}
        exec(allowed.source, ns)
        from_source = ns["allowed"](i[None, :, None], i[None, None, :], np.arange(heads)[:, None, None])
        assert np.array_equal(np.broadcast_to(from_source, dense.shape), dense)
        q, kv, h = n - 1, max(0, n - 2), heads - 1
        assert bool(allowed(q, kv, h)) == dense[h, q, kv]
        # out-of-range positions are never allowed
        assert not allowed(np.array([-1, n]), np.array([0, 0])).any()


@settings(max_examples=40, deadline=None)
@given(cfg=model_configs())
def test_blocks_rebuild_the_mask_and_rows(cfg):
    for n, heads, args in layer_patterns(cfg):
        dense = np.zeros((heads, n, n), dtype=bool)
        seen = [set() for _ in range(heads)]
        for blk in kp.blocks(cfg.arch, n, heads, **args):
            r, c, dg = blk["rows"], blk["cols"], blk["diagonal"]
            local = np.ones((len(r), len(c)), bool) if dg is None else np.tril(np.ones((len(r), len(c)), bool), dg)
            dense[blk["head"]][np.ix_(r, c)] |= local
            assert not seen[blk["head"]] & set(r.tolist())  # every row in exactly one block
            seen[blk["head"]] |= set(r.tolist())
            if blk["row_start"] is not None:
                assert np.array_equal(r, np.arange(blk["row_start"], blk["row_stop"]))
        assert np.array_equal(dense, kp.dense_mask(cfg.arch, n, heads, **args))
        assert np.array_equal(kp.rows(cfg.arch, n, heads, **args), sorted(set().union(*seen)))


def test_ecp_predicate_is_the_closed_form():
    n, m = 64, 8
    allowed = kp.allowed_fn("ecp", n, half_segment=m)
    q, kv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    assert np.array_equal(allowed(q, kv), (kv <= q) & (kv >= np.maximum(0, (q // m - 1) * m)))
    assert "kv_idx - q_idx <= 0" in allowed.source and allowed.source.count("|") == n // m - 1


def test_longlora_heads_differ():
    allowed = kp.allowed_fn("longlora", 8, 2, group=4)
    assert allowed(2, 1, 0) and not allowed(2, 1, 1)  # head 1's shifted group starts at 2
    assert len(allowed.terms) == 2
    with pytest.raises(ValueError, match="head must lie in"):
        allowed(0, 0, 2)


def test_kernel_pattern_validation():
    with pytest.raises(ValueError, match="arch"):
        kp.dense_mask("flash", 8)
    with pytest.raises(ValueError, match="n must be"):
        kp.blocks("ecp", 0, half_segment=2)
    with pytest.raises(ValueError, match="heads must be"):
        kp.allowed_fn("ecp", 8, 0, half_segment=2)
    with pytest.raises(ValueError, match="unknown pattern argument.*'latent'"):
        kp.dense_mask("ecp", 8, latent=2, half_segment=2)
    with pytest.raises(ValueError, match=r"needs the pattern argument\(s\) \['half_segment'\]"):
        kp.allowed_fn("ecp", 8)
    with pytest.raises(ValueError, match="half_segment"):
        kp.blocks("ecp", 8, half_segment=3)
    allowed = kp.allowed_fn("ecp", 8, half_segment=2)
    with pytest.raises(ValueError, match="q_idx"):
        allowed(np.array([0.5]), np.array([0]))
    with pytest.raises(ValueError, match="kv_idx"):
        allowed(1, 1.0)
    assert pattern_args_for("ecp") == (("half_segment",), ("partial",))


def test_allowed_works_on_torch_and_as_flex_mask_mod():
    torch = pytest.importorskip("torch")
    n, heads = 32, 4
    dense = kp.dense_mask("longlora", n, heads, group=8, shift="roll")
    allowed = kp.allowed_fn("longlora", n, heads, group=8, shift="roll")
    i = torch.arange(n)
    got = allowed(i[None, :, None], i[None, None, :], torch.arange(heads)[:, None, None])
    assert got.dtype == torch.bool and np.array_equal(got.numpy(), dense)
    try:
        from torch.nn.attention.flex_attention import create_mask
    except ImportError:  # pragma: no cover - older torch
        pytest.skip("no FlexAttention")
    mask = create_mask(kp.mask_mod("longlora", n, heads, group=8, shift="roll"), 1, heads, n, n, device="cpu")
    assert np.array_equal(mask[0].numpy(), dense)
