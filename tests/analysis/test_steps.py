"""Tests for minicp.analysis.steps: closed-form attention step counts against what the code really builds.

(a) "computed" = score entries the explicit implementation materialises (ops.record_scores during
    minicp.nn.model.forward), for random small configs of every architecture;
(b) "unmasked" = True entries of the dense masks of minicp.nn.attention.patterns, every head and layer;
(c) the Table 8 numbers of docs/attention-steps.md#table-8 (an independent derivation) for the presets and readings;
(d) the Table 2-style identity ECP(m) = S2-varlen(g = 2m) in computed entries;
(e) constant time and exact Python ints at n = 10^9;
(f) ValueError for bad combinations, naming the parameter; plus Table 7 formulas and the CLI.
"""

import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minicp.analysis.steps import (
    count_attention_steps,
    evaluate_formula,
    format_steps,
    format_table7,
    format_table8,
    table7,
    table8,
)
from minicp.cli.steps import main
from minicp.config import ARCHITECTURES, PERCEIVER_FAMILY, ModelConfig
from minicp.nn import ops
from minicp.nn.attention import module as arch_module
from minicp.nn.attention import patterns
from minicp.nn.model import forward, init_params

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------- random small configs


def _divisors(k):
    return [d for d in range(1, k + 1) if k % d == 0]


@st.composite
def configs(draw, arch):
    """A small valid ModelConfig of ``arch`` (every architecture-specific size drawn, defaults too)."""
    heads = 2 if arch == "longlora" else draw(st.sampled_from([1, 2]))
    kw = dict(arch=arch, vocab=13, dim=4 * heads, heads=heads, layers=draw(st.integers(1, 3)))
    if arch == "transformer":
        kw["seq_len"] = draw(st.integers(1, 20))
    elif arch in PERCEIVER_FAMILY:
        n = kw["seq_len"] = draw(st.integers(2, 20))
        if draw(st.booleans()):
            kw["latent"] = draw(st.integers(1, n - 1))
        H = n - kw.get("latent", n // 2)
        if arch == "compressed" and draw(st.booleans()):
            kw["compressed"] = draw(st.integers(1, H))
        if arch == "s_split":
            kw["split"] = draw(st.sampled_from(_divisors(H)))
    elif arch == "ecp":
        if draw(st.booleans()):  # partial last half segment (or n < m)
            kw.update(seq_len=draw(st.integers(1, 24)), half_segment=draw(st.integers(1, 10)), partial_segments=True)
        else:
            m = draw(st.integers(1, 6))
            kw["seq_len"] = m * draw(st.integers(2, 5))
            if draw(st.booleans()):
                kw["segment"] = 2 * m  # paper units
            else:
                kw["half_segment"] = m  # the official block
    elif arch == "longlora":
        g = 2 * draw(st.integers(1, 5))
        kw.update(seq_len=g * draw(st.integers(1, 4)), group=g, shift=draw(st.sampled_from(["varlen", "roll"])))
    return ModelConfig(**kw)


def _keywords(cfg):
    """count_attention_steps keywords equivalent to a config."""
    kw = dict(seq_len=cfg.seq_len, layers=cfg.layers, heads=cfg.heads)
    if cfg.arch in PERCEIVER_FAMILY:
        kw["latent"] = cfg.latent
    if cfg.arch == "compressed":
        kw["compressed"] = cfg.compressed
    if cfg.arch == "s_split":
        kw["split"] = cfg.split
    if cfg.arch == "ecp":
        kw.update(half_segment=cfg.half_segment, partial=cfg.partial_segments)
    if cfg.arch == "longlora":
        kw.update(group=cfg.group, shift=cfg.shift)
    return kw


def _recorded_entries(cfg, batch):
    """Sum of prod(shape) over every score tensor attend() builds during one forward pass."""
    params = init_params(cfg, seed=1, dtype="float64")
    tokens = np.random.default_rng(0).integers(0, cfg.vocab, (batch, cfg.seq_len))
    with ops.record_scores() as shapes:
        logits = forward(params, tokens, cfg)
    assert np.all(np.isfinite(logits))
    return sum(math.prod(s) for s in shapes), shapes


# ---------------------------------------------------------------------------- (a) computed = materialised


@pytest.mark.parametrize("arch", ARCHITECTURES)
@SETTINGS
@given(data=st.data())
def test_computed_equals_materialised_score_entries(arch, data):
    cfg = data.draw(configs(arch))
    batch = data.draw(st.integers(1, 2))
    recorded, shapes = _recorded_entries(cfg, batch)
    expected = count_attention_steps(cfg)
    assert recorded == batch * expected, (cfg, shapes)
    assert count_attention_steps(cfg.arch, **_keywords(cfg)) == expected
    per_layer = count_attention_steps(cfg, per_layer=True)
    assert len(per_layer) == cfg.layers and sum(per_layer) == expected
    assert all(type(v) is int for v in per_layer)


# ---------------------------------------------------------------------------- (b) unmasked = dense masks


@pytest.mark.parametrize("arch", ARCHITECTURES)
@SETTINGS
@given(data=st.data())
def test_unmasked_equals_dense_mask_entries(arch, data):
    cfg = data.draw(configs(arch))
    mod = arch_module(arch)
    masked, declared = [], []
    for layer in range(cfg.layers):
        pats = patterns(arch, cfg.stream_len(layer), cfg.heads, **mod.pattern_kwargs(cfg, layer))
        assert len(pats) == cfg.heads
        masked.append(sum(int(p.mask().sum()) for p in pats))
        declared.append(sum(p.computed() for p in pats))
    assert count_attention_steps(cfg, count="unmasked", per_layer=True) == masked
    assert count_attention_steps(cfg, count="unmasked") == sum(masked)
    assert count_attention_steps(cfg, per_layer=True) == declared  # the patterns' own block areas


# ---------------------------------------------------------------------------- (c) Table 8 numbers

# (preset, computed, unmasked) exactly as printed in docs/attention-steps.md#table-8 (independent derivation)
DOC_TABLE8 = [
    ("table8-perceiver_ar", 4_932_501_504, 2_517_762_048),
    ("table8-double", 14_495_514_624, 12_080_775_168),
    ("table8-compressed", 5_698_486_272, 3_283_746_816),
    ("table8-s_split", 10_267_656_192, 7_852_916_736),
    ("table8-ecp", 1_189_085_184, 889_454_592),
    ("table8-transformer", 19_327_352_832, None),
]


@pytest.mark.parametrize("preset,computed,unmasked", DOC_TABLE8)
def test_table8_values_on_table8_presets(preset, computed, unmasked):
    cfg = ModelConfig.preset(preset)
    assert count_attention_steps(cfg) == computed
    if unmasked is not None:
        assert count_attention_steps(cfg, count="unmasked") == unmasked
    row = next(r for r in table8() if r["arch"] == cfg.arch)
    assert row["computed"] == computed
    assert row["unmasked"] == count_attention_steps(cfg, count="unmasked")


def test_table8_percentages_and_verdicts():
    rows = {r["arch"]: r for r in table8() if r["paper_millions"] is not None}
    assert [r["arch"] for r in table8()][:6] == [
        "perceiver_ar",
        "double",
        "compressed",
        "s_split",
        "ecp",
        "transformer",
    ]
    pct = {a: round(r["percent_of_full"], 2) for a, r in rows.items()}
    assert pct == {
        "perceiver_ar": 25.52,
        "double": 75.00,
        "compressed": 29.48,
        "s_split": 53.12,
        "ecp": 6.15,
        "transformer": 100.00,
    }
    assert {a: r["verdict"] for a, r in rows.items()} == {
        "perceiver_ar": "exact",
        "double": "exact",
        "transformer": "exact",
        "compressed": "not reproduced",
        "s_split": "not reproduced",
        "ecp": "not reproduced",
    }
    paper = {a: (r["paper_millions"], r["paper_percent"]) for a, r in rows.items()}
    assert paper == {
        "perceiver_ar": (4932, 25),
        "double": (14495, 75),
        "compressed": (9682, 50),
        "s_split": (14858, 77),
        "ecp": (2452, 12),
        "transformer": (19327, 100),
    }
    for a in ("perceiver_ar", "double", "transformer"):  # the paper truncates millions and percent
        assert rows[a]["computed"] // 10**6 == rows[a]["paper_millions"]
        assert math.floor(rows[a]["percent_of_full"]) == rows[a]["paper_percent"]
    for r in table8():
        assert r["explanation"] and isinstance(r["explanation"], str)


def _alts(arch):
    row = next(r for r in table8() if r["arch"] == arch)
    return {a["name"]: a for a in row["alternatives"]}, row


def test_table8_alternative_readings():
    alts, row = _alts("compressed")
    assert alts["non-code p/2"]["value"] == 9_682_550_784  # reproduces 9682M
    assert alts["non-code p=128"]["value"] == 9_682_550_784
    assert alts["non-code H²/s"]["value"] == 9_682_550_784
    assert alts["non-code p/2"]["millions"] == row["paper_millions"]
    assert round(alts["non-code p/2"]["percent"], 2) == 50.10
    assert alts["compress first (prose)"]["millions"] == 5511
    assert "9,682,550,784" in row["explanation"] and "p = 128" in row["explanation"]

    alts, row = _alts("s_split")
    assert round(alts["code c=128"]["value"] / 1e6, 1) == 9965.7
    assert round(alts["code c=512"]["value"] / 1e6, 1) == 10871.6
    assert alts["nearest: Double-like + H s/2"]["value"] == 14_797_504_512
    assert round(alts["nearest: Double-like + H s/2"]["percent"], 2) == 76.56
    assert alts["Double plus the split"]["value"] == 15_099_494_400
    assert round(alts["Double plus the split"]["percent"], 1) == 78.1
    # the code-faithful c readings agree with count_attention_steps
    for c in (128, 512):
        assert alts[f"code c={c}"]["value"] == count_attention_steps(ModelConfig.preset("table8-s_split", split=c))

    alts, row = _alts("ecp")
    assert alts["code, reading m = s"]["value"] == 2_340_421_632
    assert alts["code, reading m = s"]["value"] == count_attention_steps(ModelConfig.preset("table8-ecp", segment=512))
    assert round(alts["code, reading m = s"]["percent"], 2) == 12.11
    assert alts["exact fit (contrived)"]["value"] == 2_452_881_408
    assert alts["exact fit (contrived)"]["millions"] == row["paper_millions"]
    assert alts["nearest simple"]["value"] == 2_453_667_840
    assert round(alts["LongLoRA-like n x 2s"]["value"] / 1e6, 1) == 2415.9
    assert "1,189,085,184" in row["explanation"] and "6.15%" in row["explanation"]

    alts, row = _alts("transformer")
    assert alts["causal half (unmasked)"]["millions"] == 9666

    s2 = [r for r in table8() if r["arch"] == "longlora"]
    assert [r["verdict"] for r in s2] == ["comparison", "comparison"]
    assert [round(r["computed"] / 1e6, 2) for r in s2] == [1207.96, 2415.92]
    assert [round(r["percent_of_full"], 2) for r in s2] == [6.25, 12.50]


# ---------------------------------------------------------------------------- (d) ECP(m) = S2 varlen(g = 2m)


@settings(max_examples=200, deadline=None)
@given(m=st.integers(1, 10**6), blocks=st.integers(2, 10**4), layers=st.integers(1, 100), pairs=st.integers(1, 64))
def test_ecp_equals_longlora_varlen_with_group_2m(m, blocks, layers, pairs):
    n, heads = m * blocks * 2, 2 * pairs  # n a multiple of g = 2m (ECP needs only m | n)
    common = dict(seq_len=n, layers=layers, heads=heads)
    ecp = count_attention_steps("ecp", half_segment=m, **common)
    assert ecp == count_attention_steps("ecp", segment=2 * m, **common) == layers * heads * m * (2 * n - m)
    assert ecp == count_attention_steps("longlora", group=2 * m, shift="varlen", **common)
    assert ecp + layers * heads * m * m == count_attention_steps("longlora", group=2 * m, shift="roll", **common)


def test_table8_longlora_varlen_equals_ecp():
    assert (
        count_attention_steps(ModelConfig.preset("table8-longlora"))
        == count_attention_steps(ModelConfig.preset("table8-ecp"))
        == 1_189_085_184
    )
    assert count_attention_steps(ModelConfig.preset("table8-longlora", shift="roll")) == 1_207_959_552


# ---------------------------------------------------------------------------- Table 7 formulas


@pytest.mark.parametrize("arch", ARCHITECTURES)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_table7_formulas_evaluate_to_the_counts(arch, data):
    cfg = data.draw(configs(arch))
    if cfg.arch == "ecp" and cfg.seq_len % cfg.half_segment:
        return  # Table 7 covers n a multiple of m
    values = dict(n=cfg.seq_len, l=cfg.layers, h=cfg.heads, L=cfg.latent, H=cfg.history)
    values.update(p=cfg.compressed, c=cfg.split, m=cfg.half_segment, g=cfg.group)
    if cfg.group:
        values["u"] = cfg.group // 2
    values = {k: v for k, v in values.items() if v is not None}
    label = f"longlora {cfg.shift}" if arch == "longlora" else arch
    rows = {r[0]: r for r in table7()}
    _, computed, unmasked = rows[label]
    assert evaluate_formula(computed, **values) == count_attention_steps(cfg)
    assert evaluate_formula(unmasked, **values) == count_attention_steps(cfg, count="unmasked")


def test_table7_covers_every_architecture_and_formats():
    labels = [r[0] for r in table7()]
    for arch in ARCHITECTURES:
        assert any(label.split()[0] == arch for label in labels)
    assert all(len(r) == 3 for r in table7())
    text = format_table7()
    assert "l·h·m·(2·n - m)" in text and "Notation" in text
    text = format_table8()
    for printed in (
        "4,932,501,504",
        "14,495,514,624",
        "5,698,486,272",
        "10,267,656,192",
        "1,189,085,184",
        "19,327,352,832",
        "not reproduced",
    ):
        assert printed in text


def test_evaluate_formula_is_exact_and_safe():
    assert evaluate_formula("l·h·(L·n + (p/2)²)", l=48, h=24, L=2048, n=4096, p=256) == 9_682_550_784
    assert evaluate_formula("n/3", n=4) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="x"):
        evaluate_formula("x + 1")
    with pytest.raises(ValueError):
        evaluate_formula("__import__('os')")


# ---------------------------------------------------------------------------- (e) constant time, exact ints

BIG = {
    "transformer": dict(seq_len=999_999_937),  # prime: n^2 not representable as a float
    "perceiver_ar": dict(seq_len=10**9, latent=123_456_789),
    "double": dict(seq_len=10**9),
    "compressed": dict(seq_len=10**9, compressed=77_777),
    "s_split": dict(seq_len=10**9, latent=10**9 - 3**18, split=3**10),
    "ecp": dict(seq_len=10**9, segment=2**10),
    "longlora": dict(seq_len=10**9, group=2**9, shift="roll"),
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_billion_token_call_is_fast_and_exact(arch):
    kw = dict(BIG[arch], layers=96, heads=128)
    count_attention_steps(arch, **kw)  # warm the imports
    t0 = time.perf_counter()
    computed = count_attention_steps(arch, **kw)
    unmasked = count_attention_steps(arch, count="unmasked", **kw)
    elapsed = time.perf_counter() - t0
    assert elapsed < 0.05
    assert type(computed) is int and type(unmasked) is int and 0 < unmasked <= computed
    if arch == "transformer":
        n = kw["seq_len"]
        assert computed == 96 * 128 * n * n and computed != int(float(96 * 128) * float(n) ** 2)
        assert unmasked == 96 * 128 * (n * (n + 1) // 2)
    if arch == "ecp":
        n, m = kw["seq_len"], 2**9
        assert computed == 96 * 128 * m * (2 * n - m)


def test_numpy_integers_are_accepted():
    assert (
        count_attention_steps("ecp", seq_len=np.int64(4096), layers=np.int32(48), heads=24, segment=np.int64(256))
        == 1_189_085_184
    )


# ---------------------------------------------------------------------------- (f) errors name the parameter

ERRORS = [
    (("ecp",), dict(), "seq_len"),  # seq_len missing
    (("ecp",), dict(seq_len=100, half_segment=16), "seq_len 100 is not divisible by half_segment 16"),
    (("ecp",), dict(seq_len=4096, segment=255), "segment"),  # odd segment
    (("ecp",), dict(seq_len=4096, segment=256, half_segment=64), "segment"),  # inconsistent
    (("ecp",), dict(seq_len=96, half_segment=64, partial=False), "partial"),  # n < 2m without partial
    (("perceiver_ar",), dict(seq_len=64, latent=65), "latent"),  # latent > seq_len
    (("double",), dict(seq_len=64, latent=65), "latent"),
    (("compressed",), dict(seq_len=64, latent=32, compressed=33), "compressed"),  # p > history
    (("s_split",), dict(seq_len=64, latent=32, split=5), "split"),  # c does not divide H
    (("longlora",), dict(seq_len=64, group=24), "group"),  # g does not divide n
    (("longlora",), dict(seq_len=64, group=7), "group"),  # odd g
    (("longlora",), dict(seq_len=64, shift="wrap"), "shift"),
    (("ecp",), dict(seq_len=64, shift="roll"), "shift"),  # shift is longlora's
    (("ecp",), dict(seq_len=64, count="masked"), "count"),
    (("ecp",), dict(seq_len=64, layers=0), "layers"),
    (("ecp",), dict(seq_len=64, heads=-2), "heads"),
    (("ecp",), dict(seq_len=0), "seq_len"),
    (("ecp",), dict(seq_len=64.0), "seq_len"),
    (("ecp",), dict(seq_len=True), "seq_len"),
    (("mamba",), dict(seq_len=64), "arch"),
    (("ecp",), dict(seq_len=64, compressed=8), "compressed"),  # size for another arch
    (("double",), dict(seq_len=64, split=8), "split"),
    (("double",), dict(seq_len=64, segment=8), "segment"),
    (("transformer",), dict(seq_len=64, group=8), "group"),
    (("ecp",), dict(seq_len=64, latent=32), "latent"),  # ECP attends with all n
    (("double",), dict(seq_len=64, partial=True), "partial"),
    (("ecp",), dict(seq_len=64, per_layer="yes"), "per_layer"),
    ((ModelConfig(arch="ecp"),), dict(seq_len=64), "seq_len"),  # config plus sizes
    ((ModelConfig(arch="ecp"),), dict(layers=3), "layers"),
]


@pytest.mark.parametrize("args,kwargs,match", ERRORS)
def test_bad_combinations_raise_value_error_naming_the_parameter(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        count_attention_steps(*args, **kwargs)


def test_partial_ecp_needs_partial_true():
    assert count_attention_steps("ecp", seq_len=100, half_segment=16, partial=True) == 16 * 16 + 5 * 2 * 16 * 16 + 4 * (
        16 + 4
    )
    assert count_attention_steps("ecp", seq_len=10, half_segment=16, partial=True) == 100


# ---------------------------------------------------------------------------- defaults and formatting


def test_defaults_match_model_config():
    for arch in ARCHITECTURES:
        heads = 2 if arch == "longlora" else 1
        cfg = ModelConfig(arch=arch, seq_len=512, layers=3, heads=heads, dim=8 * heads)
        assert count_attention_steps(arch, seq_len=512, layers=3, heads=heads) == count_attention_steps(cfg)
        assert count_attention_steps(
            arch, seq_len=512, layers=3, heads=heads, count="unmasked"
        ) == count_attention_steps(cfg, count="unmasked")


def test_format_steps():
    text = format_steps(ModelConfig.preset("table8-perceiver_ar"))
    assert "4,932,501,504" in text and "25.52%" in text and "1-47" in text
    text = format_steps("ecp", seq_len=4096, layers=48, heads=24, segment=256)
    assert "0-47" in text and "1,189,085,184" in text and "6.15%" in text
    with pytest.raises(ValueError, match="count"):
        format_steps("ecp", seq_len=64, count="computed")


# ---------------------------------------------------------------------------- CLI


def test_cli(capsys):
    assert (
        main(
            [
                "--arch",
                "ecp",
                "--seq-len",
                "4096",
                "--layers",
                "48",
                "--heads",
                "24",
                "--segment",
                "256",
                "--count",
                "unmasked",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "889454592"
    assert main(["--arch", "ecp", "--seq-len", "4096", "--layers", "48", "--heads", "24", "--segment", "256"]) == 0
    assert "1,189,085,184" in capsys.readouterr().out
    assert main(["--preset", "table8-compressed"]) == 0
    assert "5,698,486,272" in capsys.readouterr().out
    assert main(["--preset", "table8-ecp", "--layers", "2", "--count", "computed", "--per-layer"]) == 0
    assert capsys.readouterr().out.split() == ["24772608", "24772608"]
    assert main(["--table8"]) == 0
    assert "not reproduced" in capsys.readouterr().out
    assert main(["--table7"]) == 0
    assert "Table 7" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["--arch", "ecp", "--seq-len", "100", "--half-segment", "16"],  # needs --partial
        ["--arch", "ecp"],  # no seq-len
        ["--preset", "no-such-preset"],
        ["--table8", "--seq-len", "8"],
        [],
        ["--arch", "ecp", "--preset", "table8-ecp"],
    ],
)
def test_cli_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--table8" in out and "--segment" in out and "half segment" in out
