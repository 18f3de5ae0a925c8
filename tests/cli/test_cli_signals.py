"""The ``minicp`` command as a real process: Ctrl-C at any moment (start-up, corpus, training, checkpoint
writes, final evaluation, shutdown) is one line on stderr and exit status 130; a second ``minicp train`` on
a checkpoint that a running one holds is one line naming that process, and the running one is unharmed.

CI sends SIGINT at ``TRIALS`` moments spread over a whole run (6); ``MINICP_SIGNAL_TRIALS=20`` runs more, on
longer runs.
The first tens of milliseconds of a process belong to Python itself (interpreter and ``site`` start-up,
before any minicp code runs) and are not tested: a Ctrl-C there behaves as for every Python program.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minicp.lm.checkpoint import load_checkpoint

TRIALS = int(os.environ.get("MINICP_SIGNAL_TRIALS", "6"))
STEPS = "6" if TRIALS <= 6 else "40"  # the full count also gives the training phase a longer share
MINICP = shutil.which("minicp", path=os.path.dirname(sys.executable))
MODEL = ["--dim", "16", "--heads", "2", "--layers", "1", "--seq-len", "32", "--half-segment", "8", "--no-progress"]

pytestmark = pytest.mark.skipif(MINICP is None, reason="the minicp console script is not installed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    rng = np.random.default_rng(0)
    path.write_text("".join(rng.choice(list("abcdefgh \n"), 8_000)))
    return str(path)


STARTED = []  # every process a test started: killed at its end, whatever happened


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _as_from_a_terminal():
    """In the child before exec: SIGINT at its default action, as a shell gives a foreground command. A
    parent that ignores SIGINT (a background job of a non-interactive shell) would hand that on, and minicp
    then leaves SIGINT ignored, as it should."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _train(corpus, checkpoint, *extra):
    argv = [MINICP, "train", "--corpus", corpus, "--checkpoint", checkpoint, "--checkpoint-every", "2", *MODEL]
    proc = subprocess.Popen(
        [*argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_terminal
    )
    STARTED.append(proc)
    return proc


def _interrupted(proc, path, out, err):
    """The kind of moment a SIGINT hit, after checking the command's answer to it."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    if proc.returncode == 0:  # it had finished before the signal arrived
        assert "checkpoint:" in out
        return "finished"
    assert proc.returncode == 130, (proc.returncode, err)
    last = [line for line in lines if "interrupted" in line]
    assert len(last) == 1 and last == lines[-1:], err  # one line, the last one
    assert all(line.startswith(("model: ", "engine: ")) for line in lines[:-1]), err  # nothing else but the header
    if os.path.exists(path):  # whatever was saved is complete and loads
        load_checkpoint(path)
    if "saved step" in last[0]:
        assert load_checkpoint(path)["step"] == int(last[0].split("saved step ")[1].split()[0])
        return "saved"
    return "start-up" if last[0] == "minicp: interrupted" else "command"


def test_ctrl_c_at_any_moment_exits_130_with_one_line(tmp_path, corpus):
    start = time.perf_counter()
    out, err = _train(corpus, str(tmp_path / "ref.npz"), "--steps", STEPS).communicate()
    duration = time.perf_counter() - start
    assert "Traceback" not in err
    moments = np.linspace(0.15, 1.1 * duration, TRIALS)
    outcomes = {}
    for trial, delay in enumerate(moments):
        path = str(tmp_path / f"c{trial}.npz")
        proc = _train(corpus, path, "--steps", STEPS)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        kind = _interrupted(proc, path, *proc.communicate(timeout=120))
        outcomes[kind] = outcomes.get(kind, 0) + 1
    print(f"{TRIALS} interrupts over {duration:.1f} s: {outcomes}")
    # and one moment that is surely inside training: right after the first checkpoint appeared
    path = str(tmp_path / "during.npz")
    proc = _train(corpus, path, "--steps", "100000")
    while not os.path.exists(path):
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    assert _interrupted(proc, path, *proc.communicate(timeout=120)) == "saved"


def test_a_second_train_on_a_running_checkpoint_is_refused_in_one_line(tmp_path, corpus):
    path = str(tmp_path / "c.npz")
    first = _train(corpus, path, "--steps", "100000")
    deadline = time.monotonic() + 60
    while not os.path.exists(os.path.join(tmp_path, ".c.npz.lock")):  # it holds the lock
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    seconds = [_train(corpus, path, "--steps", "3", *extra) for extra in (["--overwrite"], ["--resume"], [])]
    for second in seconds:
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert err.strip().splitlines()[-1].startswith(f"error: {path} is in use by process {first.pid}"), err
        assert "Traceback" not in err
    assert first.poll() is None  # still running, unharmed
    first.send_signal(signal.SIGINT)
    assert _interrupted(first, path, *first.communicate(timeout=120)) == "saved"
    assert os.listdir(tmp_path) == ["c.npz"]
