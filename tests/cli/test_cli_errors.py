"""Every ``minicp`` command answers a bad argument or file with one line on stderr and exit status 2."""

import os
import subprocess
import sys

import numpy as np
import pytest

from minicp import ModelConfig
from minicp.cli import main
from minicp.lm.train import TrainConfig, train

CFG = ModelConfig(arch="ecp", vocab=256, dim=8, heads=2, layers=1, seq_len=8, half_segment=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "c.npz")
    train(CFG, np.arange(300) % 256, TrainConfig(steps=1, batch=2, grad_accum=1), checkpoint=path, progress=False)
    return path


def _status(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize(
    "argv,message",
    [
        (
            [
                "steps",
                "--arch",
                "ecp",
                "--seq-len",
                "64",
                "--layers",
                "1000000000",
                "--count",
                "computed",
                "--per-layer",
            ],
            "1,000,000,000",
        ),
        (["generate", "CKPT", "--tokens", "-1", "--no-progress"], "max_new_tokens"),
        (["generate", "CKPT", "--temperature", "nan", "--no-progress"], "temperature"),
        (["generate", "CKPT", "--top-k", "0", "--no-progress"], "top_k"),
        (["generate", "CKPT", "--filter-thres", "1.5", "--no-progress"], "filter_thres"),
        (["generate", "CKPT", "--eos", "300", "--no-progress"], "eos"),
        (["eval", "CKPT", "--batch", "-1", "--corpus", "TEXT", "--no-progress"], "batch"),
        (["eval", "DIR"], "is a directory"),
        (["eval", "MISSING"], "does not exist"),
        (["train", "--lr", "inf", "--steps", "1", "--corpus", "TEXT", "--no-progress"], "lr must be a finite number"),
        (["train", "--clip", "nan", "--steps", "1", "--corpus", "TEXT", "--no-progress"], "clip"),
        (
            [
                "train",
                "--checkpoint",
                "DIR",
                "--steps",
                "1",
                "--corpus",
                "TEXT",
                "--dim",
                "8",
                "--heads",
                "2",
                "--layers",
                "1",
                "--seq-len",
                "8",
                "--half-segment",
                "2",
                "--no-progress",
            ],
            "is a directory",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, checkpoint, capsys, argv, message):
    text = tmp_path / "corpus.txt"
    text.write_text("hello world, " * 200)
    names = {"CKPT": checkpoint, "DIR": str(tmp_path), "MISSING": str(tmp_path / "none.npz"), "TEXT": str(text)}
    code, err = _status([names.get(a, a) for a in argv], capsys)
    assert code == 2 and message in err, err


def test_eval_and_generate_show_progress_on_stderr(tmp_path, checkpoint, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("hello world, " * 200)
    assert main(["eval", checkpoint, "--corpus", str(text), "--batch", "64"]) == 0
    assert "perplexity" in capsys.readouterr().err
    assert main(["generate", checkpoint, "--tokens", "3", "--prompt", "ab"]) == 0
    assert "generate" in capsys.readouterr().err
    assert main(["generate", checkpoint, "--tokens", "3", "--prompt", "ab", "--no-progress"]) == 0
    assert capsys.readouterr().err.startswith("engine: fast; attention:")  # one line: which engine runs
    assert (
        main(["generate", checkpoint, "--tokens", "3", "--prompt", "ab", "--no-progress", "--engine", "reference"]) == 0
    )
    assert (
        capsys.readouterr().err
        == "engine: reference; attention: the readable code of minicp/nn (autograd's gradients)\n"
    )


def test_a_real_process_exits_2_without_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-m", "minicp", "eval", str(tmp_path / "none.npz")], capture_output=True, text=True, env=env
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and "does not exist" in out.stderr
