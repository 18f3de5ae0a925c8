"""`minicp golden` on the command line, and the kernel-author examples in examples/."""

import importlib.util
import pathlib
import re
import zipfile

import pytest
from strategies import HEAD_CASES

from minicp import golden as G
from minicp.cli import golden as cli_golden

ROOT = pathlib.Path(__file__).resolve().parents[2]

CASES = HEAD_CASES


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
