"""Golden files are checked before they are read, and never verified against a cache: zip bombs, members the
config does not list, names given twice, overlapping members, lying sizes, edited config fields, edited inputs
judged without verification, cases beyond the work bound, a poisoned reference cache."""

import json
import re
import time
import tracemalloc

import numpy as np
import pytest
import zipcraft as Z

import minicp.testing as mt
from minicp import golden as G
from minicp.cli import golden as cli_golden
from minicp.golden.io import CONFIG_LIMIT, read_golden_config
from minicp.testing import cache, guards

CASE = dict(seq_len=16, heads=1, head_dim=4, half_segment=4)
BIG = (1, 1, 1 << 26, 4)  # float32: 1 GiB


@pytest.fixture(scope="module")
def bomb():
    """A deflate stream of a .npy header declaring BIG and a gigabyte of zeros: about 1 MB."""
    return Z.zero_bomb(Z.npy_header(BIG), 1 << 30)


@pytest.fixture
def small(tmp_path):
    g = G.make_golden("ecp", **CASE)
    return g, G.save_golden(g, tmp_path / "g.npz")


def write(tmp_path, members, **kwargs):
    path = tmp_path / "crafted.npz"
    path.write_bytes(Z.zip_bytes(members, **kwargs))
    return path


def with_config(members, config):
    return [
        (n, Z.deflated(Z.npy_bytes(np.asarray(json.dumps(config))))) if n == "config.npy" else (n, m)
        for n, m in members
    ]


def refused_fast(call, match):
    """``call`` raises ValueError matching ``match`` in under a second, allocating under 32 MiB (tracemalloc
    sees NumPy's buffers and zlib's)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match):
            call()
        seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1.0 and peak < 32 * 2**20, (seconds, peak)
    return seconds, peak


def test_a_5_mb_file_of_1_gib_members_is_refused_from_its_headers(small, tmp_path, bomb):
    g, path = small
    parts = [(n, bomb if n[:-4] in ("q", "k", "v", "dq", "dk") else m) for n, m in Z.members_of(path)]
    crafted = write(tmp_path, parts)
    assert crafted.stat().st_size < 6 * 2**20
    refused_fast(lambda: G.load_golden(crafted), r"array 'q' has shape \(1, 1, 67108864, 4\), the config implies")
    refused_fast(lambda: G.load_golden(crafted, check=False), "has shape")
    refused_fast(lambda: G.read_golden(crafted, max_bytes=None), "has shape")


def test_a_listing_edited_to_match_the_bomb_is_refused_before_reading(small, tmp_path, bomb):
    g, path = small
    config = dict(g.config, arrays=dict(g.config["arrays"], dv=[list(BIG), "float32"]))
    parts = with_config([(n, bomb if n == "dv.npy" else m) for n, m in Z.members_of(path)], config)
    crafted = write(tmp_path, parts)
    refused_fast(lambda: G.load_golden(crafted), r"array 'dv' is listed as \[\[1, 1, 67108864, 4\], 'float32'\]")


def test_a_case_edited_to_match_the_bomb_is_refused_by_the_bounds(small, tmp_path, bomb):
    g, path = small
    n = BIG[2]
    config = dict(g.config, seq_len=n, out_rows=n)
    config["arrays"] = {k: [list(BIG), "float32"] for k in ("q", "k", "v", "dout", "out", "dq", "dk", "dv")}
    parts = with_config([(f"{k}.npy", bomb) for k in config["arrays"]] + [("config.npy", None)], config)
    crafted = write(tmp_path, parts)
    refused_fast(lambda: G.load_golden(crafted), r"takes 8,589,934,592 bytes of arrays and 536,870,896 of the")
    refused_fast(lambda: G.load_golden(crafted, max_bytes=None), "more than the limit of 1,048,576")  # positions
    assert cli_golden.main(["--check", str(crafted)]) == 2


def test_a_long_causal_case_is_refused_before_its_pattern_is_built(small, tmp_path):
    """A consistent transformer file of n = 65536, d = 1024: 2 GiB of arrays (256 MiB members of zeros, 260 kB
    each on disk), and a dense causal pattern of 4 GiB to rebuild."""
    g, _ = small
    shape = (1, 1, 1 << 16, 1024)
    member = Z.zero_bomb(Z.npy_header(shape), 1 << 28)
    config = dict(g.config, arch="transformer", pattern_args={}, resolved_pattern_args={}, seq_len=shape[2])
    config.update(head_dim=shape[3], out_rows=shape[2], mask="omitted")
    config["arrays"] = {k: [list(shape), "float32"] for k in ("q", "k", "v", "dout", "out", "dq", "dk", "dv")}
    parts = with_config([(f"{k}.npy", member) for k in config["arrays"]] + [("config.npy", None)], config)
    crafted = write(tmp_path, parts)
    refused_fast(lambda: G.load_golden(crafted, check=False), "4,294,967,296 of the pattern's masks")
    refused_fast(lambda: G.load_golden(crafted, max_bytes=None), r"recomputing this case takes 2.6e\+13 multiply-adds")
    seven = lambda q, k, v: q
    refused_fast(lambda: G.assert_matches_golden(seven, crafted), "more than max_bytes")


def test_unlisted_duplicate_overlapping_and_lying_members_are_refused(small, tmp_path, bomb):
    _, path = small
    parts = Z.members_of(path)
    refused_fast(lambda: G.load_golden(write(tmp_path, parts + [("extra.npy", bomb)])), r"not listed .*\['extra'\]")
    q = next(m for n, m in parts if n == "q.npy")
    other = Z.deflated(Z.npy_bytes(np.zeros((1, 1, 16, 4), np.float32)))
    twice = [(n, m) for n, m in parts if n != "q.npy"] + [("q.npy", q), ("q.npy", other)]
    refused_fast(lambda: G.load_golden(write(tmp_path, twice)), "'q.npy' appears twice")
    refused_fast(lambda: G.load_golden(write(tmp_path, parts, offsets={"k.npy": "q.npy"})), "overlap")
    lying = write(tmp_path, parts, sizes={"v.npy": 10**6})  # the directory says 1 MB, the header 384 bytes
    refused_fast(
        lambda: G.load_golden(lying), r"'v': the zip directory says 1,000,000 bytes, its .npy header implies 384"
    )
    bomb_v = [(n, bomb if n == "v.npy" else m) for n, m in parts]  # the directory says 100 bytes, the data 1 GiB
    refused_fast(lambda: G.load_golden(write(tmp_path, bomb_v, sizes={"v.npy": 100})), "'v' has no readable .npy")
    with np.load(path) as z:  # NumPy's reader would have taken the second q of the file given twice
        assert np.load(path)["q"].shape == z["q"].shape


def config_member(chars):
    """A config.npy member of ``chars`` unicode characters (4 bytes each), all NUL, deflated."""
    return Z.deflated(Z.npy_header((), f"<U{chars}") + bytes(4 * chars))


@pytest.mark.parametrize("chars", [CONFIG_LIMIT // 4 + 1, 1 << 24])  # 4 bytes over the limit; 64 MiB
def test_a_config_over_the_limit_is_refused_from_its_header(small, tmp_path, chars):
    """The JSON config is bounded by CONFIG_LIMIT (16 MiB): a config member declaring more is refused from its .npy
    header, naming its size and the limit, before its text is decompressed (reading even the smaller one allocates
    about 48 MiB, over the 32 MiB that refused_fast allows)."""
    _, path = small
    parts = [(n, config_member(chars) if n == "config.npy" else m) for n, m in Z.members_of(path)]
    crafted = write(tmp_path, parts)
    words = re.escape(f"array 'config' declares {4 * chars:,} bytes, more than {CONFIG_LIMIT:,}; refused")
    assert CONFIG_LIMIT == 16 * 2**20
    refused_fast(lambda: read_golden_config(crafted), words)
    refused_fast(lambda: G.read_golden(crafted), words)
    refused_fast(lambda: G.load_golden(crafted), words)


def test_a_config_of_exactly_the_limit_is_read(small, tmp_path):
    """The bound is strict: a config member of exactly CONFIG_LIMIT bytes passes the size check and is read (its
    text, all NUL, is then refused as JSON)."""
    _, path = small
    parts = [(n, config_member(CONFIG_LIMIT // 4) if n == "config.npy" else m) for n, m in Z.members_of(path)]
    crafted = write(tmp_path, parts)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="'config' is not valid JSON"):
        read_golden_config(crafted)
    assert time.perf_counter() - start < 1


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("scale", 0.2, "config field 'scale' is 0.2, the recomputation gives 0.5"),
        ("tolerance", "rtol", "config field 'tolerance' is"),
        ("block_names", ["h0 B 0"], "config field 'block_names'"),
        ("segment", 16, "config field 'segment' is 16, the recomputation gives 8"),
        ("input_sha256", "0" * 64, "config field 'input_sha256' is '000"),
        ("note", "hi", "config field 'note' is not a field of a minicp golden file"),
        ("pattern_args", {"segment": 8}, "pattern_args .* are not in their normal form"),
        ("seq_len", 16.0, "seq_len must be a positive integer"),
    ],
)
def test_every_config_field_is_checked_against_the_recomputation(small, tmp_path, capsys, field, value, words):
    g, path = small
    config = dict(g.config, **{field: value})
    if field == "tolerance":
        config["tolerance"] = dict(g.config["tolerance"], rtol=1.0, C_MAX=1e30)
    edited = G.save_golden(G.Golden(g.arrays, config), tmp_path / "edited.npz")
    with pytest.raises(ValueError, match=words):
        G.load_golden(edited)
    assert cli_golden.main(["--check", str(edited)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_judging_without_verification_still_digests_the_stored_inputs(small, tmp_path):
    g, path = small
    q = np.array(g["q"])
    q[0, 0, [2, 5]] = q[0, 0, [5, 2]]  # rows swapped: the same numbers
    correct = lambda *x: np.asarray(__import__("minicp").attention("ecp", *x, half_segment=4))
    for sha in (g.config["input_sha256"], G.make.input_digest(dict(g.arrays, q=q))):  # as it was, or updated
        edited = G.save_golden(G.Golden(dict(g.arrays, q=q), dict(g.config, input_sha256=sha)), tmp_path / "e.npz")
        with pytest.raises(ValueError, match="stored inputs .* are not the draw of seed 0"):
            G.assert_matches_golden(correct, edited, check=False)
        with pytest.raises(ValueError, match="stored input 'q' is not the draw|config field 'input_sha256'"):
            G.assert_matches_golden(correct, edited, check=True)
    assert G.assert_matches_golden(correct, path, check=False).ok


def test_make_golden_and_the_cli_refuse_work_beyond_the_bound(tmp_path, capsys):
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"takes 4.1e\+11 multiply-adds, more than max_work = 5e\+10"):
        G.make_golden("transformer", seq_len=2**15, heads=1, head_dim=64)
    out = tmp_path / "big.npz"
    assert cli_golden.main(["--arch", "transformer", "--seq-len", str(2**15), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--allow-large" in err and err.count("\n") == 1 and not out.exists()
    assert time.perf_counter() - start < 1.0
    assert G.make_golden("transformer", seq_len=8, heads=1, head_dim=4, max_work=None)["out"].shape == (1, 1, 8, 4)


def test_a_poisoned_cache_never_verifies_a_tampered_file(small, tmp_path, monkeypatch, capsys):
    """out replaced by 7.0 in the file and in a disk cache entry forged to match (digest and floor statistics
    made consistent): a kernel check would believe the entry (the trust model), the verification does not."""
    g, path = small
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.CACHE_ENV, str(folder))
    mt.clear_cache()
    mt.reference_case("ecp", grads=True, **CASE)  # fills the disk cache
    (entry,) = folder.glob("minicp-ref-*.npz")
    with np.load(entry) as z:
        arrays = {key: z[key] for key in z.files}
    arrays["out"] = np.full_like(arrays["out"], 7.0)
    floor = arrays["floor_out"].copy()  # the reference's own rows of the statistics follow the forged values
    floor[3], floor[4] = 49.0 * arrays["out"].shape[0] * arrays["out"].shape[3], 7.0
    arrays["floor_out"] = floor
    assert cache.floors_consistent(arrays["out"], floor, "float32")
    values = {k: v for k, v in arrays.items() if k not in cache.STRINGS}
    arrays["digest"] = np.asarray(cache._entry_digest(str(arrays["key"]), str(arrays["inputs_sha256"]), values))
    np.savez(entry, **arrays)
    mt.clear_cache()
    assert (mt.reference_case("ecp", grads=True, **CASE)["out"] == 7.0).all()  # believed by a plain lookup
    tampered = G.save_golden(G.Golden(dict(g.arrays, out=np.full_like(g["out"], 7.0)), g.config), tmp_path / "t.npz")
    assert cli_golden.main(["--check", str(tampered)]) == 2
    assert "stored 'out' does not match its float64 recomputation" in capsys.readouterr().err
    with pytest.raises(ValueError, match="stored 'out' does not match"):
        G.load_golden(tampered)
    seven = lambda q, k, v: np.full(q.shape, 7.0, np.float32)
    with pytest.raises(ValueError, match="stored 'out' does not match"):
        G.assert_matches_golden(seven, tampered)
    with pytest.raises(mt.MismatchError):  # the verification replaced the forged values in memory
        G.assert_matches_golden(seven, path)
    assert guards.digest(mt.reference_case("ecp", grads=True, **CASE), ["out"]) != guards.digest(arrays, ["out"])
