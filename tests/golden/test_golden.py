"""Golden files (minicp.golden): attention-level and model-level files, the reader's checks."""

import json
import pathlib

import numpy as np
import pytest
from strategies import HEAD_CASES

import minicp
from minicp import golden as G
from minicp.analysis import kernel_pattern as kp
from minicp.config import ARCHITECTURES
from minicp.golden.config import RNG
from minicp.golden.make import input_digest
from minicp.testing import reference

ROOT = pathlib.Path(__file__).resolve().parents[2]

CASES = HEAD_CASES


def small_golden(arch, **overrides):
    kw = dict(CASES[arch], head_dim=4, batch=2, dtype="float32", seed=3)
    kw.update(overrides)
    return G.make_golden(arch, **kw)


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
    assert a.config["draw"] == 2 and a.config["format_version"] == 4
    streams = np.random.SeedSequence(3).spawn(4)  # the documented draw: one generator per tensor, in order
    for key, stream in zip(("q", "k", "v", "dout"), streams):
        expected = np.random.default_rng(stream).standard_normal(a[key].shape, dtype=np.float32)
        assert np.array_equal(a[key], expected), key


def test_format_version_1_files_still_load_and_check(tmp_path):
    """A file of format_version 1 (one float64 stream, default_rng(seed), for q, k, v, dout in turn) is read
    with that draw: its inputs regenerate from the seed and its stored outputs check."""
    g = small_golden("ecp", seed=5)
    rng = np.random.default_rng(5)  # the version-1 draw, written out here independently
    old = {key: rng.standard_normal(g[key].shape).astype(np.float32) for key in ("q", "k", "v", "dout")}
    ref = reference.reference_case("ecp", **CASES["ecp"], head_dim=4, batch=2, seed=5, grads=True, draw=1)
    assert all(np.array_equal(old[key], ref[key]) for key in old)
    arrays = dict(g.arrays, **old, **{key: ref[key].astype(np.float32) for key in ("out", "dq", "dk", "dv")})
    config = {key: value for key, value in g.config.items() if key != "draw"}  # what version 1 wrote:
    config.update(format_version=1, inputs="seed", input_sha256=input_digest(old), rng=RNG[1])
    config.update(tolerance=G.tolerance_config("float32", version=1))
    config["arrays"] = {k: v for k, v in config["arrays"].items() if k not in ("q", "k", "v", "dout")}
    path = G.save_golden(G.Golden(arrays, config), tmp_path / "v1.npz")
    back = G.load_golden(path, check=True, check_grads=True)
    assert all(np.array_equal(back[key], old[key]) for key in old)
    bad = dict(config, format_version=2)  # the same file claiming version 2 without a draw: refused by name
    G.save_golden(G.Golden(arrays, bad), tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="draw None is not one of"):
        G.load_golden(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="format_version 5 is not supported"):
        G.check_golden(G.Golden(arrays, dict(config, format_version=5)))


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


def test_the_work_bound_counts_the_blocks_in_closed_form():
    """attention_work's closed form (minicp.analysis.counts) equals the blocks' rows x columns, summed."""
    from minicp.testing.cases import EDGES

    for arch, edges in EDGES.items():
        for _, n, d, pa in edges:
            for h in (1, 4):
                config = {"arch": arch, "seq_len": n, "heads": h, "head_dim": d, "batch": 2, "pattern_args": pa}
                entries = sum(len(b["rows"]) * len(b["cols"]) for b in kp.blocks(arch, n, h, **pa))
                assert G.attention_work(config) == 6.0 * entries * d * 2, (arch, n, h, pa)


def test_files_of_format_version_2_are_checked_against_their_own_tolerance_block(tmp_path):
    g = small_golden("ecp")
    v2 = dict(g.config, format_version=2, tolerance=G.tolerance_config("float32", version=2))
    assert "grad_atol_factor" in v2["tolerance"] and "grad_atol_factor" not in g.config["tolerance"]
    G.load_golden(G.save_golden(G.Golden(g.arrays, v2), tmp_path / "v2.npz"))
    mixed = dict(v2, tolerance=g.config["tolerance"])  # a version-2 file with the version-3 block: edited
    with pytest.raises(ValueError, match="config field 'tolerance'"):
        G.load_golden(G.save_golden(G.Golden(g.arrays, mixed), tmp_path / "mixed.npz"))
