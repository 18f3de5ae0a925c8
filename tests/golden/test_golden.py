"""Golden files (minicp.golden), the kernel pattern exports (minicp.analysis.kernel_pattern) and the examples."""

import importlib.util
import json
import pathlib
import re
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from strategies import HEAD_CASES, model_configs

import minicp
from minicp import golden as G
from minicp.analysis import kernel_pattern as kp
from minicp.cli import golden as cli_golden
from minicp.config import ARCHITECTURES
from minicp.nn.attention import module as arch_module

ROOT = pathlib.Path(__file__).resolve().parents[2]

CASES = HEAD_CASES


def small_golden(arch, **overrides):
    kw = dict(CASES[arch], head_dim=4, batch=2, dtype="float32", seed=3)
    kw.update(overrides)
    return G.make_golden(arch, **kw)


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    assert kp.pattern_args_for("ecp") == (("half_segment",), ("partial",))


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


# ----------------------------------------------------------------------------------------------------
# bfloat16 rounding
# ----------------------------------------------------------------------------------------------------


def test_round_to_bfloat16_bits():
    one = np.float32(1.0)
    ulp = 2.0**-7  # bfloat16 spacing at 1
    x = np.array(
        [1 + ulp / 2, 1 + 1.5 * ulp, 1 + ulp / 2 + 2**-20, -(1 + 1.5 * ulp), 3.4e38, np.inf, np.nan, 0.0, -0.0]
    )
    got = G.round_to_bfloat16(x)
    assert got.dtype == np.float32
    assert got[0] == one  # tie -> even (1.0)
    assert got[1] == 1 + 2 * ulp  # tie -> even (1 + 2 ulp)
    assert got[2] == 1 + ulp  # above the tie -> up
    assert got[3] == -(1 + 2 * ulp)
    assert np.isinf(got[4]) and np.isinf(got[5]) and np.isnan(got[6])
    assert np.signbit(got[8]) and got[7] == 0
    assert not (got[np.isfinite(got)].view(np.uint32) & 0xFFFF).any()


def test_round_to_bfloat16_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(20000) * np.logspace(-30, 30, 20000)
    for src in (x, x.astype(np.float32)):
        expected = torch.from_numpy(src).to(torch.bfloat16).float().numpy()
        assert np.array_equal(G.round_to_bfloat16(src), expected)


# ----------------------------------------------------------------------------------------------------
# Attention-level golden files
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_golden_roundtrip_every_arch(arch, tmp_path):
    g = small_golden(arch)
    path = G.save_golden(g, tmp_path / f"{arch}.npz")
    back = G.load_golden(path, check=True, check_grads=True)
    assert back.config == json.loads(json.dumps(g.config))
    for key in g.keys():
        assert np.array_equal(back[key], g[key]) and back[key].dtype == g[key].dtype
    n, h = CASES[arch]["seq_len"], CASES[arch]["heads"]
    args = {k: v for k, v in CASES[arch].items() if k not in ("seq_len", "heads")}
    rows = kp.rows(arch, n, h, **args)
    assert back["q"].shape == (2, h, n, 4) and back["out"].shape == (2, h, len(rows), 4)
    assert back["dq"].shape == back["q"].shape and back["dout"].shape == back["out"].shape
    assert back.config["pattern_args"] == args and back.config["dtype"] == "float32"
    # the mask: one (1, n, n) when heads share the pattern, per head otherwise
    assert back["mask"].shape == ((h, n, n) if arch == "longlora" else (1, n, n))
    assert np.array_equal(np.broadcast_to(back["mask"], (h, n, n)), kp.dense_mask(arch, n, h, **args))
    # the output is the reference attention on the stored inputs
    q, k, v = (back[x].astype(np.float64) for x in "qkv")
    np.testing.assert_allclose(back["out"], minicp.attention(arch, q, k, v, **args), rtol=1e-6, atol=1e-7)
    # no pickled objects anywhere: plain np.load works
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == set(g.keys()) | {"config"}


def test_block_arrays_rebuild_the_mask():
    g = small_golden("longlora")
    n, h = 16, 4
    dense = np.zeros((h, n, n), bool)
    for i in range(len(g["block_head"])):
        r = g["block_rows"][g["block_rows_offsets"][i] : g["block_rows_offsets"][i + 1]]
        c = g["block_cols"][g["block_cols_offsets"][i] : g["block_cols_offsets"][i + 1]]
        local = np.ones((len(r), len(c)), bool)
        if g["block_masked"][i]:
            local = np.tril(local, g["block_diagonal"][i])
        dense[g["block_head"][i]][np.ix_(r, c)] |= local
        if g["block_row_start"][i] >= 0:
            assert np.array_equal(r, np.arange(g["block_row_start"][i], g["block_row_stop"][i]))
    assert (g["block_row_start"] == -1).sum() == 2  # the roll wrap block of the 2 shifted heads
    assert np.array_equal(dense, g["mask"])


def test_reproducible_and_seeded():
    a, b, c = small_golden("ecp"), small_golden("ecp"), small_golden("ecp", seed=4)
    for key in a.keys():
        assert np.array_equal(a[key], b[key])
    assert not np.array_equal(a["q"], c["q"])
    rng = np.random.default_rng(3)  # the documented draw order
    assert np.array_equal(a["q"], rng.standard_normal(a["q"].shape).astype(np.float32))


def test_mask_limit_and_segment_config():
    g = small_golden("ecp", mask_limit=8)
    assert "mask" not in g and g.config["mask"] == "omitted" and g.config["segment"] == 8
    G.check_golden(g)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_low_and_high_precision_storage(dtype, tmp_path):
    g = small_golden("ecp", dtype=dtype)
    storage = {"bfloat16": np.float32, "float16": np.float16, "float64": np.float64}[dtype]
    assert g["q"].dtype == storage and g["dq"].dtype == storage
    if dtype == "bfloat16":
        assert not (g["out"].view(np.uint32) & 0xFFFF).any()
    back = G.load_golden(G.save_golden(g, tmp_path / "x.npz"), check_grads=True)
    assert back.config["storage_dtype"] == np.dtype(storage).name and back.config["tolerance"]["rtol"] > 0


def corrupt(path, tmp_path, **changes):
    with np.load(path, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    for key, value in changes.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    out = tmp_path / "corrupt.npz"
    np.savez(out, **arrays)
    return out


def test_reader_rejects_inconsistent_files(tmp_path):
    g = small_golden("ecp")
    path = G.save_golden(g, tmp_path / "ok.npz")
    out = g["out"].copy()
    out[0, 1, 9, 2] += 0.25
    with pytest.raises(ValueError, match=r"stored 'out' does not match.*\n.*out: 1 of"):
        G.load_golden(corrupt(path, tmp_path, out=out))
    dk = g["dk"] * 1.1
    G.load_golden(corrupt(path, tmp_path, dk=dk))  # gradients are checked on request only
    with pytest.raises(ValueError, match="stored 'dk'"):
        G.load_golden(corrupt(path, tmp_path, dk=dk), check_grads=True)
    mask = g["mask"].copy()
    mask[0, 1, 5] = True
    with pytest.raises(ValueError, match=r"'mask' differs .* \(head, q, kv\) = \(0, 1, 5\)"):
        G.load_golden(corrupt(path, tmp_path, mask=mask))
    with pytest.raises(ValueError, match="missing array 'dv'"):
        G.load_golden(corrupt(path, tmp_path, dv=None))
    with pytest.raises(ValueError, match="'q' has dtype float64"):
        G.load_golden(corrupt(path, tmp_path, q=g["q"].astype(np.float64)))
    with pytest.raises(ValueError, match="'v' has shape"):
        G.load_golden(corrupt(path, tmp_path, v=g["v"][:, :1]))
    with pytest.raises(ValueError, match="not listed"):
        G.load_golden(corrupt(path, tmp_path, extra=np.zeros(2)))
    cfg = dict(g.config, half_segment_typo=1, pattern_args={"half_segment": 8})
    with pytest.raises(ValueError, match="rows|block"):
        G.load_golden(corrupt(path, tmp_path, config=np.asarray(json.dumps(cfg))))
    with pytest.raises(ValueError, match="format"):
        G.load_golden(corrupt(path, tmp_path, config=np.asarray(json.dumps(dict(g.config, format="other")))))
    with pytest.raises(ValueError, match="no 'config'"):
        G.load_golden(corrupt(path, tmp_path, config=None))
    with pytest.raises(ValueError, match="pickle"):
        G.load_golden(corrupt(path, tmp_path, q=np.array([{"a": 1}], dtype=object)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read|not a minicp"):
        G.load_golden(bad)
    G.load_golden(path)  # the original is fine


def test_reader_checks_bfloat16_values(tmp_path):
    g = small_golden("transformer", dtype="bfloat16")
    path = G.save_golden(g, tmp_path / "bf.npz")
    q = g["q"].copy()
    q.view(np.uint32)[0, 0, 0, 0] |= 1
    with pytest.raises(ValueError, match="'q' should hold bfloat16"):
        G.load_golden(corrupt(path, tmp_path, q=q))


def test_make_golden_validation():
    with pytest.raises(ValueError, match="dtype"):
        G.make_golden("ecp", seq_len=8, heads=1, head_dim=4, dtype="int8", half_segment=2)
    with pytest.raises(ValueError, match="arch"):
        G.make_golden("nope", seq_len=8, heads=1, head_dim=4)
    with pytest.raises(ValueError, match="mask_limit"):
        G.make_golden("ecp", seq_len=8, heads=1, head_dim=4, mask_limit=-1, half_segment=2)
    with pytest.raises(ValueError, match="path must end in .npz"):
        G.save_golden(small_golden("ecp"), "x.bin")
    with pytest.raises(ValueError, match="golden must be"):
        G.save_golden({}, "x.npz")
    with pytest.raises(ValueError, match="config must be"):
        G.make_model_golden("ecp")


# ----------------------------------------------------------------------------------------------------
# Model-level golden files
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["ecp", "compressed"])
def test_model_golden(arch, tmp_path):
    from strategies import example_config

    cfg = example_config(arch, layers=2)
    g = G.make_model_golden(cfg, batch=2, dtype="float32", seed=1)
    assert g["tokens"].shape == (2, cfg.seq_len + 1) and g["tokens"].dtype == np.int64
    assert "param/layers.0.0.fn.to_q.weight" in g and "grad/to_logits.1.bias" in g
    assert g["logits"].shape == (2, cfg.out_len, cfg.vocab) and g["loss"].shape == ()
    params = minicp.unflatten({k[len("param/") :]: g[k].astype(np.float64) for k in g.keys() if k.startswith("param/")})
    assert abs(float(minicp.loss(params, g["tokens"], cfg)) - float(g["loss"])) < 1e-5
    back = G.load_golden(G.save_golden(g, tmp_path / "m.npz"), check_grads=True)
    assert back.config["model_config"]["arch"] == arch and back.kind == "model"
    grad = back["grad/layers.0.0.fn.to_q.weight"].copy()
    grad *= 2
    with pytest.raises(ValueError, match="grad/layers.0.0.fn.to_q.weight"):
        G.load_golden(
            corrupt(tmp_path / "m.npz", tmp_path, **{"grad/layers.0.0.fn.to_q.weight": grad}), check_grads=True
        )
    with pytest.raises(ValueError, match="tokens must lie"):
        G.load_golden(corrupt(tmp_path / "m.npz", tmp_path, tokens=g["tokens"] + cfg.vocab))


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------


def test_cli_writes_and_checks(tmp_path, capsys):
    out = tmp_path / "ecp.npz"
    assert (
        cli_golden.main(
            [
                "--arch",
                "ecp",
                "--seq-len",
                "64",
                "--segment",
                "16",
                "--heads",
                "2",
                "--head-dim",
                "8",
                "--dtype",
                "bfloat16",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    g = G.load_golden(out)
    assert g.config["pattern_args"] == {"half_segment": 8} and g.config["segment"] == 16
    assert g.config["dtype"] == "bfloat16" and g["q"].shape == (1, 2, 64, 8)
    assert cli_golden.main(["--check", str(out), "--check-grads"]) == 0
    assert "OK" in capsys.readouterr().out
    assert zipfile.is_zipfile(out)


def test_cli_model_and_preset(tmp_path):
    out = tmp_path / "model.npz"
    assert (
        cli_golden.main(
            [
                "--model",
                "--arch",
                "ecp",
                "--seq-len",
                "16",
                "--half-segment",
                "4",
                "--heads",
                "2",
                "--head-dim",
                "4",
                "--layers",
                "1",
                "--vocab",
                "11",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    g = G.load_golden(out)
    assert g.config["model_config"]["dim"] == 8 and g.config["model_config"]["half_segment"] == 4
    cfg = cli_golden._model_config(
        cli_golden._parser().parse_args(["--preset", "tiny-ecp", "--layers", "1", "-o", "x.npz"]), None
    )
    assert cfg.layers == 1 and cfg.half_segment == 64


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--arch", "ecp", "--seq-len", "16", "-o", "x.npz"], "needs --segment or --half-segment"),
        (["--arch", "ecp", "--seq-len", "16", "--segment", "5", "-o", "x.npz"], "must be even"),
        (
            ["--arch", "ecp", "--seq-len", "16", "--segment", "8", "--half-segment", "2", "-o", "x.npz"],
            "must equal 2 \\* half_segment",
        ),
        (
            ["--arch", "ecp", "--seq-len", "16", "--segment", "8", "--latent", "4", "-o", "x.npz"],
            "--latent does not apply",
        ),
        (["--arch", "double", "--seq-len", "16", "--layers", "2", "-o", "x.npz"], "--layers applies to --model"),
        (["--seq-len", "16", "-o", "x.npz"], "--arch is required"),
        (["--arch", "ecp", "--segment", "8", "-o", "x.npz"], "--seq-len is required"),
        (["--model", "--arch", "ecp", "--seq-len", "16", "--layer", "1", "-o", "x.npz"], "--layer applies"),
        (["--arch", "ecp", "--seq-len", "16", "--segment", "8", "-o", "x.bin"], "must end in .npz"),
    ],
)
def test_cli_errors(argv, match, capsys):
    assert cli_golden.main(argv) == 2
    assert re.search(match, capsys.readouterr().err)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli_golden.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "minicp golden --arch ecp --seq-len 4096 --segment 256" in text and "--check" in text


# ----------------------------------------------------------------------------------------------------
# The examples
# ----------------------------------------------------------------------------------------------------


def test_planted_bugs_are_caught():
    ex = load_example("planted_bugs")
    assert ex.catch(lambda: ex.check_head_level(ex.ecp_predicate)) is None
    assert ex.catch(lambda: ex.check_sublayer(ex.rope_interleaved)) is None
    messages = {title: ex.catch(check) for title, check in ex.BUGS.items()}
    off_by_one, no_previous, rope = messages.values()
    m = ex.CASE["half_segment"]
    for msg in (off_by_one, no_previous):
        assert msg is not None and msg.startswith("out: ") and "out of tolerance" in msg
        assert f"x [{m}..{ex.CASE['seq_len'] - 1}] x" in msg  # from the second half segment on
    assert rope is not None and rope.startswith("rope(q)")


def test_ecp_sdpa_torch_example():
    pytest.importorskip("torch")
    ex = load_example("ecp_sdpa_torch")
    import minicp.testing as mt
    from minicp.testing import torch as mtt

    case = dict(seq_len=128, heads=2, head_dim=16, batch=2, half_segment=16)
    ecp = lambda q, k, v: ex.ecp_sdpa(q, k, v, half_segment=16)
    for dtype in ("float32", "bfloat16"):
        mt.assert_matches_reference(ecp, "ecp", dtype=dtype, check_grads=True, **mtt.adapters(ecp, dtype), **case)
    generic = lambda q, k, v: ex.blockwise_sdpa(q, k, v, "ecp", half_segment=16)
    mt.assert_matches_reference(generic, "ecp", check_grads=True, **mtt.adapters(generic), **case)
    dense = lambda q, k, v: ex.dense_sdpa(q, k, v, "ecp", half_segment=16)
    mt.assert_matches_reference(dense, "ecp", array_fn=mtt.arrays(), **case)
    # the generic block-list form works for the other architectures too
    for arch, args in (
        ("perceiver_ar", dict(latent=5)),
        ("s_split", dict(latent=6, split=3)),
        ("longlora", dict(group=4, shift="roll")),
    ):
        sizes = {k: v for k, v in CASES[arch].items() if k in ("seq_len", "heads")}
        fn = lambda q, k, v, arch=arch, args=args: ex.blockwise_sdpa(q, k, v, arch, **args)
        mt.assert_matches_reference(fn, arch, head_dim=8, array_fn=mtt.arrays(), **sizes, **args)
    # and a wrong mask is caught with the tensor's name
    wrong = lambda q, k, v: ex.ecp_sdpa(q, k, v, half_segment=32)
    with pytest.raises(mt.MismatchError, match="^out: "):
        mt.assert_matches_reference(wrong, "ecp", array_fn=mtt.arrays(), **case)
    assert ex.check("ecp_sdpa", ecp, dtype="float16", **case)["out"].ok  # the example's own check line
