"""The README as written: every code block runs (the CPU ones here, the GPU ones under ``pytest -m gpu``),
its first Python example gives what it says, and its sample failure message is what the check prints."""

import importlib.util
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import minicp.testing as mt
from minicp.analysis import kernel_pattern

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_usage_example_runs():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["out"].shape == (1, 8, 4096, 64)
    assert namespace["logits"].shape == (2, 512, 256)
    assert set(namespace["grads"]) == set(namespace["params"])


def off_by_one_ecp(q, k, v, m=64):
    """ECP by a dense mask whose previous half segment starts one key late (float32 out)."""
    n, d = q.shape[2], q.shape[3]
    mask = kernel_pattern.dense_mask("ecp", n, 1, half_segment=m)[0].copy()
    for t in range(1, n // m):
        mask[t * m : (t + 1) * m, (t - 1) * m] = False
    s = np.where(mask, (q * d**-0.5) @ np.swapaxes(k, -1, -2), -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return ((p / p.sum(-1, keepdims=True)) @ v).astype(np.float32)


def test_readme_failure_message_is_what_the_check_prints():
    text = README.read_text()
    shown = re.search(r"```text\n(out: out of tolerance.*?)\n```", text, re.S).group(1)
    with pytest.raises(mt.MismatchError) as info:
        mt.assert_matches_reference(
            off_by_one_ecp, "ecp", seq_len=512, heads=4, head_dim=32, half_segment=64, dtype="float32"
        )
    number = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
    got = str(info.value)
    assert number.split(got) == number.split(shown)  # the words, positions and layout exactly
    for a, b in zip(number.finditer(got), number.finditer(shown)):
        # errors, values and indices to 1e-3; what the float32 floor sets (budgets, floors and shares of
        # budget) moves with the BLAS's summation order: 7% between an AMD EPYC and an Intel Xeon
        of_floor = got[a.end() : a.end() + 1] == "%" or re.search(
            r"(budget|float32 max|production rms) $", got[: a.start()]
        )
        rel = 0.2 if of_floor else 1e-3
        assert float(a.group()) == pytest.approx(float(b.group()), rel=rel), (a.group(), b.group())


# ----------------------------------------------------------------------------------------------------
# Every code block of the README runs as written
# ----------------------------------------------------------------------------------------------------
#
# Python blocks run in a fresh interpreter, after the Python blocks before them in the same section (a block may
# go on from the one before it, as a reader reads them), bash blocks line by line with the installed minicp on PATH, each in
# a folder of its own (blocks that set up the repository itself run in it: make, .venv). A line that starts a
# server (Jupyter Lab) counts as run once the server answers with its address; `make test` is the command that
# runs this very test, so it is the one line left out. Blocks whose first line says "GPU only" run under
# `pytest -m gpu` (tests on a machine with an NVIDIA GPU), the others everywhere. Text blocks are listings.

ROOT = README.parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
LANGUAGES = ("python", "bash", "text")
SERVER = re.compile(r"^(make lab|\S*jupyter lab)\b")
IN_REPOSITORY = re.compile(r"(^|\s)(make |\.venv/|python3 -m venv)")


def readme_blocks():
    """(line, language, text) of every fenced block of the README; a Python block's text starts with the Python
    blocks before it in its section (## heading) that run where it runs."""
    text = README.read_text()
    blocks, before, section = [], [], None
    for m in FENCE.finditer(text):
        heading = text.rfind("\n## ", 0, m.start())
        if heading != section:
            section, before = heading, []
        code = m.group(2)
        if m.group(1) == "python":
            if before and _gpu_only(before[0]) == _gpu_only(code):
                code = "\n".join(before + [code])
            before.append(m.group(2))
        blocks.append((text[: m.start()].count("\n") + 1, m.group(1), code))
    return blocks


def _name(block):
    """A test id that survives edits elsewhere in the README: the block's language and its line."""
    return f"{block[1]} block at line {block[0]}"


def _gpu_only(block):
    return block.lstrip().startswith("# GPU only")


RUNNABLE = [b for b in readme_blocks() if b[1] in ("python", "bash")]
NEEDS_TORCH = re.compile(r"^\s*(import torch|from torch[ .])", re.M)  # the kernel examples


def _env():
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("MPLBACKEND", None)
    return env


def _serve(command, cwd, timeout=600):
    """Start a server command, wait until it prints its http address, then stop it (and its children). Jupyter
    is told, through a configuration folder of the test's own, to open no browser and to run as root where the
    test does (CI's containers)."""
    config = pathlib.Path(tempfile.mkdtemp(prefix="minicp-jupyter-"))
    (config / "jupyter_server_config.json").write_text('{"ServerApp": {"allow_root": true, "open_browser": false}}')
    proc = subprocess.Popen(
        command, shell=True, cwd=cwd, env=dict(_env(), JUPYTER_CONFIG_DIR=str(config)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    seen, start = [], time.monotonic()
    try:
        for line in proc.stdout:
            seen.append(line)
            if "http://" in line and ("localhost" in line or "127.0.0.1" in line):
                return
            assert time.monotonic() - start < timeout, f"{command!r} served nothing within {timeout} s"
        raise AssertionError(f"{command!r} ended without serving:\n{''.join(seen[-20:])}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _run_block(language, block, cwd):
    if language == "python":
        out = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=_env(), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        return
    for line in block.splitlines():
        command = line.split("  #")[0].strip()
        if not command or command.startswith("#") or command.split()[:2] == ["make", "test"]:
            continue  # a comment, or the command that runs this test
        if SERVER.match(command):
            _serve(command, cwd)
            continue
        out = subprocess.run(["bash", "-c", command], cwd=cwd, env=_env(), capture_output=True, text=True)
        assert out.returncode == 0, f"{command!r} failed:\n{out.stdout[-1500:]}\n{out.stderr[-3000:]}"


def test_the_example_files_are_the_readme_blocks():
    text = README.read_text()
    for name in ("test_my_kernel.py", "test_my_ecp_kernel.py"):
        assert (ROOT / "examples" / name).read_text().strip() in text, f"examples/{name} differs from its README block"


def test_every_block_names_its_language():
    unnamed = [line for line, language, _ in readme_blocks() if language not in LANGUAGES]
    assert not unnamed, f"README blocks at lines {unnamed} need a language ({', '.join(LANGUAGES)})"


@pytest.mark.parametrize(
    "line, language, block",
    [b for b in RUNNABLE if not _gpu_only(b[2])],
    ids=[_name(b) for b in RUNNABLE if not _gpu_only(b[2])],
)
def test_readme_block_runs_as_written(line, language, block, tmp_path):
    if NEEDS_TORCH.search(block) and importlib.util.find_spec("torch") is None:
        pytest.skip("the block imports torch, which is not installed")  # make test on a fresh machine: no torch
    _run_block(language, block, ROOT if IN_REPOSITORY.search(block) else tmp_path)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "line, language, block",
    [b for b in RUNNABLE if _gpu_only(b[2])],
    ids=[_name(b) for b in RUNNABLE if _gpu_only(b[2])],
)
def test_readme_gpu_block_runs_as_written(line, language, block, tmp_path):
    from minicp import backend as B

    if not B.gpu_available():
        pytest.skip("needs CuPy and a usable NVIDIA GPU")
    _run_block(language, block, tmp_path)
